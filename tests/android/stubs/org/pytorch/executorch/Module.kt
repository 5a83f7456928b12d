// Signature-only stub of ExecuTorch v1.4.1's Android API
// (extension/android/executorch_android/src/main/java/org/pytorch/executorch/Module.kt at tag v1.4.1).
// Used only to type-check generated code: public declarations match the source, every body throws.

package org.pytorch.executorch

import org.pytorch.executorch.annotations.Experimental
import java.io.Closeable

@Experimental
open class Module private constructor(
    moduleAbsolutePath: String,
    loadMode: Int,
    numThreads: Int,
) : Closeable {
    open fun forward(vararg inputs: EValue): Array<EValue> = throw NotImplementedError("signature-only stub")

    open fun execute(
        methodName: String,
        vararg inputs: EValue,
    ): Array<EValue> = throw NotImplementedError("signature-only stub")

    open fun loadMethod(methodName: String): Unit = throw NotImplementedError("signature-only stub")

    open fun getMethods(): Array<String> = throw NotImplementedError("signature-only stub")

    open fun getMethodMetadata(name: String): MethodMetadata = throw NotImplementedError("signature-only stub")

    open fun readLogBuffer(): Array<String>? = throw NotImplementedError("signature-only stub")

    @Experimental
    open fun etdump(): Boolean = throw NotImplementedError("signature-only stub")

    @Experimental
    open fun etdump(outputPath: String): Boolean = throw NotImplementedError("signature-only stub")

    open fun destroy(): Unit = throw NotImplementedError("signature-only stub")

    override fun close(): Unit = throw NotImplementedError("signature-only stub")

    companion object {
        const val LOAD_MODE_FILE = 0
        const val LOAD_MODE_MMAP = 1
        const val LOAD_MODE_MMAP_USE_MLOCK = 2
        const val LOAD_MODE_MMAP_USE_MLOCK_IGNORE_ERRORS = 3

        @JvmStatic
        @JvmOverloads
        fun load(
            modelPath: String?,
            loadMode: Int = LOAD_MODE_FILE,
            numThreads: Int = 0,
        ): Module = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun readLogBufferStatic(): Array<String>? = throw NotImplementedError("signature-only stub")
    }
}
