// Signature-only stub of LiteRT-LM 0.18's Kotlin API (kotlin/java/com/google/ai/edge/litertlm/Session.kt), the
// declarations the 2026-08 and later main sources share (see Config.kt). Used only to type-check generated
// code: public declarations match the source, every body throws.

package com.google.ai.edge.litertlm

/** A LiteRT-LM session: prefill and decode on one KV cache, driven by the native library. */
class Session(
    private val handle: Long,
) : AutoCloseable {
    val isAlive: Boolean
        get() = throw NotImplementedError("signature-only stub")

    override fun close(): Unit = throw NotImplementedError("signature-only stub")

    fun runPrefill(inputData: List<InputData>): Unit = throw NotImplementedError("signature-only stub")

    fun runDecode(): String = throw NotImplementedError("signature-only stub")

    fun generateContent(inputData: List<InputData>): String = throw NotImplementedError("signature-only stub")

    /** Not blocking: the responses stream to [responseCallback] from the runtime's thread. */
    fun generateContentStream(
        inputData: List<InputData>,
        responseCallback: ResponseCallback,
    ): Unit = throw NotImplementedError("signature-only stub")

    fun cancelProcess(): Unit = throw NotImplementedError("signature-only stub")
}

/** The input data that can be given to LiteRT-LM. */
sealed class InputData {
    data class Text(
        val text: String,
    ) : InputData()

    data class Audio(
        val bytes: ByteArray,
    ) : InputData()

    data class Image(
        val bytes: ByteArray,
    ) : InputData()
}

/** A callback for receiving streaming responses. */
interface ResponseCallback {
    fun onNext(response: String) {}

    fun onDone() {}

    /** A [java.util.concurrent.CancellationException] when cancelled, a LiteRtLmJniException otherwise. */
    fun onError(throwable: Throwable) {}
}
