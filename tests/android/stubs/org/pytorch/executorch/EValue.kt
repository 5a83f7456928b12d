// Signature-only stub of ExecuTorch v1.4.1's Android API
// (extension/android/executorch_android/src/main/java/org/pytorch/executorch/EValue.kt at tag v1.4.1).
// Used only to type-check generated code: public declarations match the source, every body throws.

package org.pytorch.executorch

import org.pytorch.executorch.annotations.Experimental

@Experimental
class EValue private constructor(
    @JvmField val mTypeCode: Int,
) {
    @JvmField var mData: Any? = null

    val isNone: Boolean
        get() = throw NotImplementedError("signature-only stub")

    val isTensor: Boolean
        get() = throw NotImplementedError("signature-only stub")

    val isBool: Boolean
        get() = throw NotImplementedError("signature-only stub")

    val isInt: Boolean
        get() = throw NotImplementedError("signature-only stub")

    val isDouble: Boolean
        get() = throw NotImplementedError("signature-only stub")

    val isString: Boolean
        get() = throw NotImplementedError("signature-only stub")

    fun toTensor(): Tensor = throw NotImplementedError("signature-only stub")

    fun toBool(): Boolean = throw NotImplementedError("signature-only stub")

    fun toInt(): Long = throw NotImplementedError("signature-only stub")

    fun toDouble(): Double = throw NotImplementedError("signature-only stub")

    fun toStr(): String = throw NotImplementedError("signature-only stub")

    fun toByteArray(): ByteArray = throw NotImplementedError("signature-only stub")

    companion object {
        @JvmStatic
        fun optionalNone(): EValue = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun from(tensor: Tensor): EValue = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun from(value: Boolean): EValue = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun from(value: Long): EValue = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun from(value: Double): EValue = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun from(value: String): EValue = throw NotImplementedError("signature-only stub")

        @JvmStatic
        fun fromByteArray(bytes: ByteArray): EValue = throw NotImplementedError("signature-only stub")
    }
}
