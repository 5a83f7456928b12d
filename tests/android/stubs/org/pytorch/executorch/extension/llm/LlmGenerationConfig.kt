// Signature-only stub of ExecuTorch v1.4.1's Android API
// (extension/android/executorch_android/src/main/java/org/pytorch/executorch/extension/llm/LlmGenerationConfig.kt at tag v1.4.1).
// Used only to type-check generated code: public declarations match the source, every body throws.

package org.pytorch.executorch.extension.llm

class LlmGenerationConfig private constructor(
    @get:JvmName("isEcho") val echo: Boolean,
    val maxNewTokens: Int,
    @get:JvmName("isWarming") val warming: Boolean,
    val seqLen: Int,
    val temperature: Float,
    val numBos: Int,
    val numEos: Int,
) {
    companion object {
        @JvmStatic
        fun create(): Builder = throw NotImplementedError("signature-only stub")
    }

    class Builder internal constructor() {
        fun echo(echo: Boolean): Builder = throw NotImplementedError("signature-only stub")

        fun maxNewTokens(maxNewTokens: Int): Builder = throw NotImplementedError("signature-only stub")

        fun warming(warming: Boolean): Builder = throw NotImplementedError("signature-only stub")

        fun seqLen(seqLen: Int): Builder = throw NotImplementedError("signature-only stub")

        fun temperature(temperature: Float): Builder = throw NotImplementedError("signature-only stub")

        fun numBos(numBos: Int): Builder = throw NotImplementedError("signature-only stub")

        fun numEos(numEos: Int): Builder = throw NotImplementedError("signature-only stub")

        fun build(): LlmGenerationConfig = throw NotImplementedError("signature-only stub")
    }
}
