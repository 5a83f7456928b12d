// Signature-only stub of ExecuTorch v1.4.1's Android API
// (extension/android/executorch_android/src/main/java/org/pytorch/executorch/ExecuTorchRuntime.kt at tag v1.4.1).
// Used only to type-check generated code: public declarations match the source, every body throws.

package org.pytorch.executorch

class ExecuTorchRuntime private constructor() {
    companion object {
        @JvmStatic
        fun getRuntime(): ExecuTorchRuntime = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun validateFilePath(
            path: String?,
            description: String,
        ): Unit = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun getRegisteredOps(): Array<String> = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun getRegisteredBackends(): Array<String> = throw NotImplementedError("signature-only stub")
    }
}
