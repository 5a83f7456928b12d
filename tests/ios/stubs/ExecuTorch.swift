// Signature-only stand-in for ExecuTorch's Swift API (module `ExecuTorch` of the swiftpm-1.x package:
// extension/apple/ExecuTorch/Exported), so the generated packages' ExecuTorch code is type-checked on Linux,
// where the real package's binary xcframeworks cannot link (DESIGN §9, §11). Nothing here runs.
import Foundation

public protocol Scalar {}
extension Int64: Scalar {}
extension Int32: Scalar {}
extension Float: Scalar {}

public protocol ValueConvertible {}

public final class Tensor<T: Scalar>: ValueConvertible {
    public init(_ scalars: [T], shape: [Int] = []) { fatalError("stub") }
    public func scalars() -> [T] { fatalError("stub") }
}

public final class Value: NSObject, ValueConvertible {
    public func tensor<T: Scalar>() -> Tensor<T>? { fatalError("stub") }
}

public final class Module: NSObject {
    public init(filePath: String) { fatalError("stub") }
    public func load(_ method: String) throws { fatalError("stub") }
    public func forward(_ inputs: [ValueConvertible]) throws -> [Value] { fatalError("stub") }
}
