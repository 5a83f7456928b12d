// Signature-only stub of LiteRT-LM 0.18's Kotlin API (kotlin/java/com/google/ai/edge/litertlm/Engine.kt), the
// declarations the 2026-08 and later main sources share (see Config.kt). Used only to type-check generated
// code: public declarations match the source, every body throws.

package com.google.ai.edge.litertlm

/** Manages the lifecycle of a LiteRT-LM engine. */
class Engine(
    val engineConfig: EngineConfig,
) : AutoCloseable {
    fun isInitialized(): Boolean = throw NotImplementedError("signature-only stub")

    fun initialize(): Unit = throw NotImplementedError("signature-only stub")

    override fun close(): Unit = throw NotImplementedError("signature-only stub")

    fun createSession(sessionConfig: SessionConfig = SessionConfig()): Session =
        throw NotImplementedError("signature-only stub")
}
