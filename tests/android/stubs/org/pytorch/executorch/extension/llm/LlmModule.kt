// Signature-only stub of ExecuTorch v1.4.1's Android API
// (extension/android/executorch_android/src/main/java/org/pytorch/executorch/extension/llm/LlmModule.kt at tag v1.4.1).
// Used only to type-check generated code: public declarations match the source, every body throws.

package org.pytorch.executorch.extension.llm

import org.pytorch.executorch.annotations.Experimental
import java.io.Closeable
import java.nio.ByteBuffer

@Experimental
class LlmModule private constructor(
    modelType: Int,
    modulePath: String,
    tokenizerPath: String,
    temperature: Float,
    dataFiles: List<String>,
    numBos: Int,
    numEos: Int,
    loadMode: Int,
) : Closeable {
    constructor(
        modelType: Int,
        modulePath: String,
        tokenizerPath: String,
        temperature: Float,
        dataFiles: List<String>,
        numBos: Int,
        numEos: Int,
    ) : this(modelType, modulePath, tokenizerPath, temperature, dataFiles, numBos, numEos, 0)

    constructor(
        modelType: Int,
        modulePath: String,
        tokenizerPath: String,
        temperature: Float,
        dataFiles: List<String>,
    ) : this(modelType, modulePath, tokenizerPath, temperature, dataFiles, 0, 0, 0)

    constructor(
        modelType: Int,
        modulePath: String,
        tokenizerPath: String,
        temperature: Float,
        dataPath: String?,
        numBos: Int,
        numEos: Int,
    ) : this(modelType, modulePath, tokenizerPath, temperature, emptyList(), numBos, numEos, 0)

    constructor(
        modelType: Int,
        modulePath: String,
        tokenizerPath: String,
        temperature: Float,
        dataPath: String?,
    ) : this(modelType, modulePath, tokenizerPath, temperature, emptyList(), 0, 0, 0)

    constructor(
        modulePath: String,
        tokenizerPath: String,
        temperature: Float,
    ) : this(MODEL_TYPE_TEXT, modulePath, tokenizerPath, temperature, emptyList(), 0, 0, 0)

    constructor(
        modulePath: String,
        tokenizerPath: String,
        temperature: Float,
        dataPath: String,
    ) : this(MODEL_TYPE_TEXT, modulePath, tokenizerPath, temperature, emptyList(), 0, 0, 0)

    constructor(
        modelType: Int,
        modulePath: String,
        tokenizerPath: String,
        temperature: Float,
    ) : this(modelType, modulePath, tokenizerPath, temperature, emptyList(), 0, 0, 0)

    constructor(
        config: LlmModuleConfig,
    ) : this(0, "", "", 0f, emptyList(), 0, 0, 0)

    override fun close(): Unit = throw NotImplementedError("signature-only stub")

    @Deprecated("Use close() instead", replaceWith = ReplaceWith("close()"))
    fun resetNative(): Unit = throw NotImplementedError("signature-only stub")

    fun generate(
        prompt: String,
        llmCallback: LlmCallback,
    ): Unit = throw NotImplementedError("signature-only stub")

    fun generate(
        prompt: String,
        seqLen: Int,
        llmCallback: LlmCallback,
    ): Unit = throw NotImplementedError("signature-only stub")

    fun generate(
        prompt: String,
        llmCallback: LlmCallback,
        echo: Boolean,
    ): Unit = throw NotImplementedError("signature-only stub")

    fun generate(
        prompt: String,
        seqLen: Int,
        llmCallback: LlmCallback,
        echo: Boolean,
    ): Unit = throw NotImplementedError("signature-only stub")

    fun generate(
        prompt: String,
        seqLen: Int,
        llmCallback: LlmCallback,
        echo: Boolean,
        temperature: Float,
        numBos: Int,
        numEos: Int,
    ): Unit = throw NotImplementedError("signature-only stub")

    fun generate(
        prompt: String,
        config: LlmGenerationConfig,
        llmCallback: LlmCallback,
    ): Unit = throw NotImplementedError("signature-only stub")

    fun generate(
        image: IntArray?,
        width: Int,
        height: Int,
        channels: Int,
        prompt: String,
        seqLen: Int,
        llmCallback: LlmCallback,
        echo: Boolean,
    ): Unit = throw NotImplementedError("signature-only stub")

    fun generate(
        image: IntArray?,
        width: Int,
        height: Int,
        channels: Int,
        prompt: String,
        seqLen: Int,
        llmCallback: LlmCallback,
        echo: Boolean,
        temperature: Float,
    ): Unit = throw NotImplementedError("signature-only stub")

    fun generate(
        image: IntArray?,
        width: Int,
        height: Int,
        channels: Int,
        prompt: String,
        seqLen: Int,
        llmCallback: LlmCallback,
        echo: Boolean,
        temperature: Float,
        numBos: Int,
        numEos: Int,
    ): Unit = throw NotImplementedError("signature-only stub")

    @Experimental
    fun prefillImages(
        image: IntArray,
        width: Int,
        height: Int,
        channels: Int,
    ): Unit = throw NotImplementedError("signature-only stub")

    @Experimental
    fun prefillImages(
        image: ByteBuffer,
        width: Int,
        height: Int,
        channels: Int,
    ): Unit = throw NotImplementedError("signature-only stub")

    @Experimental
    fun prefillNormalizedImage(
        image: ByteBuffer,
        width: Int,
        height: Int,
        channels: Int,
    ): Unit = throw NotImplementedError("signature-only stub")

    @Experimental
    fun prefillImages(
        image: FloatArray,
        width: Int,
        height: Int,
        channels: Int,
    ): Unit = throw NotImplementedError("signature-only stub")

    @Experimental
    fun prefillAudio(
        audio: ByteArray,
        batchSize: Int,
        nBins: Int,
        nFrames: Int,
    ): Unit = throw NotImplementedError("signature-only stub")

    @Experimental
    fun prefillAudio(
        audio: FloatArray,
        batchSize: Int,
        nBins: Int,
        nFrames: Int,
    ): Unit = throw NotImplementedError("signature-only stub")

    @Experimental
    fun prefillRawAudio(
        audio: ByteArray,
        batchSize: Int,
        nChannels: Int,
        nSamples: Int,
    ): Unit = throw NotImplementedError("signature-only stub")

    @Experimental
    fun prefillPrompt(prompt: String): Unit = throw NotImplementedError("signature-only stub")

    fun resetContext(): Unit = throw NotImplementedError("signature-only stub")

    fun stop(): Unit = throw NotImplementedError("signature-only stub")

    fun load(): Unit = throw NotImplementedError("signature-only stub")

    companion object {
        const val MODEL_TYPE_TEXT = 1
        const val MODEL_TYPE_TEXT_VISION = 2
        const val MODEL_TYPE_MULTIMODAL = 2
    }
}
