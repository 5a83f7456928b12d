// Signature-only stub of ExecuTorch v1.4.1's Android API
// (extension/android/executorch_android/src/main/java/org/pytorch/executorch/Tensor.kt at tag v1.4.1).
// Used only to type-check generated code: public declarations match the source, every body throws.

package org.pytorch.executorch

import org.pytorch.executorch.annotations.Experimental
import java.nio.Buffer
import java.nio.ByteBuffer
import java.nio.DoubleBuffer
import java.nio.FloatBuffer
import java.nio.IntBuffer
import java.nio.LongBuffer
import java.nio.ShortBuffer

@Experimental
abstract class Tensor internal constructor(
    shape: LongArray,
) {
    @JvmField protected val shape: LongArray = shape

    fun numel(): Long = throw NotImplementedError("signature-only stub")

    fun shape(): LongArray = throw NotImplementedError("signature-only stub")

    abstract fun dtype(): DType

    fun dtypeJniCode(): Int = throw NotImplementedError("signature-only stub")

    open val dataAsByteArray: ByteArray
        get() = throw NotImplementedError("signature-only stub")

    open val dataAsShortArray: ShortArray
        get() = throw NotImplementedError("signature-only stub")

    open val dataAsUnsignedByteArray: ByteArray
        get() = throw NotImplementedError("signature-only stub")

    open val dataAsIntArray: IntArray
        get() = throw NotImplementedError("signature-only stub")

    open val dataAsFloatArray: FloatArray
        get() = throw NotImplementedError("signature-only stub")

    open fun copyDataInto(dst: FloatBuffer): Unit = throw NotImplementedError("signature-only stub")

    open fun copyDataInto(dst: ByteBuffer): Unit = throw NotImplementedError("signature-only stub")

    open fun copyDataIntoUnsigned(dst: ByteBuffer): Unit = throw NotImplementedError("signature-only stub")

    open fun copyDataInto(dst: IntBuffer): Unit = throw NotImplementedError("signature-only stub")

    open fun copyDataInto(dst: LongBuffer): Unit = throw NotImplementedError("signature-only stub")

    open fun copyDataInto(dst: DoubleBuffer): Unit = throw NotImplementedError("signature-only stub")

    open fun copyDataInto(dst: ShortBuffer): Unit = throw NotImplementedError("signature-only stub")

    open val dataAsLongArray: LongArray
        get() = throw NotImplementedError("signature-only stub")

    open val dataAsDoubleArray: DoubleArray
        get() = throw NotImplementedError("signature-only stub")

    open fun getRawDataBuffer(): Buffer = throw NotImplementedError("signature-only stub")

    fun toByteArray(): ByteArray = throw NotImplementedError("signature-only stub")

    companion object {
        @JvmStatic
        fun allocateByteBuffer(numElements: Int): ByteBuffer = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun allocateIntBuffer(numElements: Int): IntBuffer = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun allocateFloatBuffer(numElements: Int): FloatBuffer = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun allocateLongBuffer(numElements: Int): LongBuffer = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun allocateHalfBuffer(numElements: Int): ShortBuffer = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun allocateDoubleBuffer(numElements: Int): DoubleBuffer = throw NotImplementedError("signature-only stub")

        // fromBlob (array)

        @JvmStatic
        fun fromBlobUnsigned(
            data: ByteArray,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: ByteArray,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: IntArray,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: FloatArray,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: ShortArray,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: LongArray,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: DoubleArray,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        // fromBlob (buffer)

        @JvmStatic
        fun fromBlobUnsigned(
            data: ByteBuffer,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: ByteBuffer,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: IntBuffer,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: FloatBuffer,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: ShortBuffer,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: LongBuffer,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromBlob(
            data: DoubleBuffer,
            shape: LongArray,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun ones(
            shape: LongArray,
            dtype: DType,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun zeros(
            shape: LongArray,
            dtype: DType,
        ): Tensor = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun numel(shape: LongArray): Long = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromByteArray(bytes: ByteArray): Tensor = throw NotImplementedError("signature-only stub")
    }
}
