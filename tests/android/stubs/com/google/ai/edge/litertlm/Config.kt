// Signature-only stub of LiteRT-LM 0.18's Kotlin API (kotlin/java/com/google/ai/edge/litertlm/Config.kt).
// No source tag of 0.18.x was reachable: these are the declarations that main's sources of 2026-08 (0.17.0 in
// development) and of a later main both have, so the release between them has them too. Used only to
// type-check generated code: public declarations match the source, every body throws.

package com.google.ai.edge.litertlm

/** Backend for the LiteRT-LM engine. */
sealed class Backend(
    val name: String,
) {
    data class CPU(
        val threadCount: Int? = null,
        @Deprecated("Use threadCount instead", ReplaceWith("threadCount")) val numOfThreads: Int? = null,
    ) : Backend("CPU")

    class GPU : Backend("GPU")

    data class NPU(
        val nativeLibraryDir: String = "",
    ) : Backend("NPU")

    @Suppress("ClassName")
    class GOOGLE_TENSOR : Backend("GOOGLE_TENSOR_ARTISAN")
}

/** Configuration for the LiteRT-LM engine. */
data class EngineConfig(
    val modelPath: String,
    val backend: Backend = Backend.CPU(),
    val visionBackend: Backend? = null,
    val audioBackend: Backend? = null,
    val maxNumTokens: Int? = null,
    val maxNumImages: Int? = null,
    val cacheDir: String? = null,
)

/** Configuration for the sampling process. */
data class SamplerConfig(
    val topK: Int,
    val topP: Double,
    val temperature: Double,
    val seed: Int = 0,
)

/** Configuration for LoRA (Low-Rank Adaptation) weights. */
data class LoraConfig(
    val loraPath: String? = null,
    val audioLoraPath: String? = null,
)

/** Configuration for a LiteRT-LM [Session]. */
data class SessionConfig(
    val samplerConfig: SamplerConfig? = null,
    val loraConfig: LoraConfig? = null,
)
