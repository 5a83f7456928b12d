// Signature-only stub of ExecuTorch v1.4.1's Android API
// (extension/android/executorch_android/src/main/java/org/pytorch/executorch/extension/llm/LlmModuleConfig.kt at tag v1.4.1).
// Used only to type-check generated code: public declarations match the source, every body throws.

package org.pytorch.executorch.extension.llm

class LlmModuleConfig private constructor(
    val modulePath: String,
    val tokenizerPath: String,
    val temperature: Float,
    val dataPath: String?,
    val modelType: Int,
    val numBos: Int,
    val numEos: Int,
    val loadMode: Int,
) {
    companion object {
        const val LOAD_MODE_FILE = 0
        const val LOAD_MODE_MMAP = 1
        const val LOAD_MODE_MMAP_USE_MLOCK = 2
        const val LOAD_MODE_MMAP_USE_MLOCK_IGNORE_ERRORS = 3
        const val MODEL_TYPE_TEXT = 1
        const val MODEL_TYPE_TEXT_VISION = 2
        const val MODEL_TYPE_MULTIMODAL = 2

        @JvmStatic
        fun create(): Builder = throw NotImplementedError("signature-only stub")
    }

    class Builder internal constructor() {
        fun modulePath(modulePath: String): Builder = throw NotImplementedError("signature-only stub")

        fun tokenizerPath(tokenizerPath: String): Builder = throw NotImplementedError("signature-only stub")

        fun temperature(temperature: Float): Builder = throw NotImplementedError("signature-only stub")

        fun dataPath(dataPath: String?): Builder = throw NotImplementedError("signature-only stub")

        fun modelType(modelType: Int): Builder = throw NotImplementedError("signature-only stub")

        fun numBos(numBos: Int): Builder = throw NotImplementedError("signature-only stub")

        fun numEos(numEos: Int): Builder = throw NotImplementedError("signature-only stub")

        fun loadMode(loadMode: Int): Builder = throw NotImplementedError("signature-only stub")

        fun build(): LlmModuleConfig = throw NotImplementedError("signature-only stub")
    }
}
