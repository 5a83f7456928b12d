// Signature-only stub of ExecuTorch v1.4.1's Android API
// (extension/android/executorch_android/src/main/java/org/pytorch/executorch/extension/llm/LlmCallback.kt at tag v1.4.1).
// Used only to type-check generated code: public declarations match the source, every body throws.

package org.pytorch.executorch.extension.llm

import org.pytorch.executorch.annotations.Experimental

@Experimental
interface LlmCallback {
    fun onResult(result: String)

    fun onStats(stats: String) {}

    fun onError(
        errorCode: Int,
        message: String,
    ) {}
}
