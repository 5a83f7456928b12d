// Signature-only stand-in for Apple's CoreML framework, so the generated packages' Core ML code is
// type-checked on Linux (DESIGN §9). It declares exactly what the templates call, with the signatures of
// Apple's SDK (iOS 18 / macOS 15); nothing here runs: every body traps.
import Foundation

public enum MLComputeUnits: Int, Sendable {
    case cpuOnly = 0
    case cpuAndGPU = 1
    case all = 2
    case cpuAndNeuralEngine = 3
}

public enum MLMultiArrayDataType: Int, Sendable {
    case double = 65600
    case float32 = 65568
    case float16 = 65552
    case int32 = 131104
    public static let float64 = MLMultiArrayDataType.double
    public static let float = MLMultiArrayDataType.float32
}

open class MLModelConfiguration: NSObject {
    open var computeUnits: MLComputeUnits = .all
    public override init() { super.init() }
}

open class MLPredictionOptions: NSObject {
    public override init() { super.init() }
}

@available(iOS 18.0, macOS 15.0, *)
open class MLState: NSObject {}

open class MLMultiArray: NSObject {
    public init(shape: [NSNumber], dataType: MLMultiArrayDataType) throws { fatalError("stub") }
    open var shape: [NSNumber] { fatalError("stub") }
    open var strides: [NSNumber] { fatalError("stub") }
    open var dataType: MLMultiArrayDataType { fatalError("stub") }
    open var count: Int { fatalError("stub") }
    open subscript(index: Int) -> NSNumber {
        get { fatalError("stub") }
        set { fatalError("stub") }
    }
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { fatalError("stub") }
    public func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer, [Int]) throws -> R) rethrows -> R {
        fatalError("stub")
    }
}

open class MLFeatureValue: NSObject {
    open var multiArrayValue: MLMultiArray? { fatalError("stub") }
}

public protocol MLFeatureProvider {
    var featureNames: Set<String> { get }
    func featureValue(for featureName: String) -> MLFeatureValue?
}

open class MLDictionaryFeatureProvider: NSObject, MLFeatureProvider {
    public init(dictionary: [String: Any]) throws { fatalError("stub") }
    open var featureNames: Set<String> { fatalError("stub") }
    open func featureValue(for featureName: String) -> MLFeatureValue? { fatalError("stub") }
}

open class MLModel: NSObject {
    public class func compileModel(at modelURL: URL) async throws -> URL { fatalError("stub") }
    public class func load(contentsOf url: URL, configuration: MLModelConfiguration) async throws -> MLModel {
        fatalError("stub")
    }
    open func prediction(from input: MLFeatureProvider) throws -> MLFeatureProvider { fatalError("stub") }
    @available(iOS 18.0, macOS 15.0, *)
    open func makeState() -> MLState { fatalError("stub") }
    @available(iOS 18.0, macOS 15.0, *)
    open func prediction(
        from inputFeatures: MLFeatureProvider, using state: MLState, options: MLPredictionOptions = MLPredictionOptions()
    ) throws -> MLFeatureProvider { fatalError("stub") }
}
