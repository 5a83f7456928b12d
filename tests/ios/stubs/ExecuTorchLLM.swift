// Signature-only stand-in for ExecuTorch's LLM runner as Swift sees it (module `ExecuTorchLLM`:
// ExecuTorchLLMTextRunner.h and ExecuTorchLLMConfig.h bridged with their NS_SWIFT_NAMEs), so the generated
// decoder packages' ExecuTorch code is type-checked on Linux (DESIGN §9, §11). Nothing here runs.
import Foundation

public final class Config: NSObject {
    public var echoEnabled = true
    public var maximumNewTokens = -1
    public var warming = false
    public var sequenceLength = -1
    public var temperature = 0.8
    public var bosCount = 1
    public var eosCount = 0
    public init(_ block: (Config) -> Void) { fatalError("stub") }
}

public final class TextRunner: NSObject {
    public convenience init(modelPath: String, tokenizerPath: String) {
        self.init(modelPath: modelPath, tokenizerPath: tokenizerPath, specialTokens: [])
    }
    public init(modelPath: String, tokenizerPath: String, specialTokens: [String]) { fatalError("stub") }
    public func isLoaded() -> Bool { fatalError("stub") }
    public func load() throws { fatalError("stub") }
    public func generate(_ prompt: String, _ config: Config, tokenCallback: ((String) -> Void)?) throws {
        fatalError("stub")
    }
    public func stop() { fatalError("stub") }
    public func reset() { fatalError("stub") }
}
