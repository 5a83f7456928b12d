// Signature-only stand-in for the part of SwiftUI the generated sample apps use, so their sources are
// type-checked on Linux (DESIGN §9). Layout, rendering and state tracking are Apple's; nothing here runs.
@_exported import Foundation

public protocol View {
    associatedtype Body: View
    @ViewBuilder var body: Body { get }
}

public protocol Scene {
    associatedtype Body: Scene
    @SceneBuilder var body: Body { get }
}

public protocol App {
    associatedtype Body: Scene
    @SceneBuilder var body: Body { get }
    init()
}

extension App {
    public static func main() { fatalError("stub") }
}

extension Never: View {
    public var body: Never { fatalError("stub") }
}

public struct EmptyScene: Scene {
    public init() {}
    public var body: EmptyScene { self }
}

public struct TupleView<T>: View {
    public var body: Never { fatalError("stub") }
}

public struct EmptyView: View {
    public init() {}
    public var body: Never { fatalError("stub") }
}

@resultBuilder
public enum ViewBuilder {
    public static func buildBlock() -> EmptyView { EmptyView() }
    public static func buildBlock<Content: View>(_ content: Content) -> Content { content }
    public static func buildBlock<each Content: View>(_ content: repeat each Content) -> TupleView<(repeat each Content)> {
        fatalError("stub")
    }
}

@resultBuilder
public enum SceneBuilder {
    public static func buildBlock<Content: Scene>(_ content: Content) -> Content { content }
}

@propertyWrapper
public struct State<Value> {
    public init(wrappedValue: Value) { fatalError("stub") }
    public var wrappedValue: Value {
        get { fatalError("stub") }
        nonmutating set { fatalError("stub") }
    }
    public var projectedValue: Binding<Value> { fatalError("stub") }
}

public struct Binding<Value> {
    public var wrappedValue: Value {
        get { fatalError("stub") }
        nonmutating set { fatalError("stub") }
    }
}

public enum HorizontalAlignment { case leading, center, trailing }
public enum Alignment { case leading, center, trailing }
public enum Axis { case horizontal, vertical }

public struct Text: View {
    public init(_ content: String) { fatalError("stub") }
    public var body: Never { fatalError("stub") }
}

public struct TextField: View {
    public init(_ title: String, text: Binding<String>) { fatalError("stub") }
    public init(_ title: String, text: Binding<String>, axis: Axis) { fatalError("stub") }
    public var body: Never { fatalError("stub") }
}

public struct Button: View {
    public init(_ title: String, action: @escaping () -> Void) { fatalError("stub") }
    public var body: Never { fatalError("stub") }
}

public struct VStack<Content: View>: View {
    public init(alignment: HorizontalAlignment = .center, spacing: Double? = nil,
                @ViewBuilder content: () -> Content) { fatalError("stub") }
    public var body: Never { fatalError("stub") }
}

public struct HStack<Content: View>: View {
    public init(spacing: Double? = nil, @ViewBuilder content: () -> Content) { fatalError("stub") }
    public var body: Never { fatalError("stub") }
}

public struct ScrollView<Content: View>: View {
    public init(@ViewBuilder content: () -> Content) { fatalError("stub") }
    public var body: Never { fatalError("stub") }
}

public struct WindowGroup<Content: View>: Scene {
    public init(@ViewBuilder content: () -> Content) { fatalError("stub") }
    public var body: EmptyScene { EmptyScene() }
}

public struct ModifiedContent: View {
    public var body: Never { fatalError("stub") }
}

public protocol TextFieldStyle {}
public struct RoundedBorderTextFieldStyle: TextFieldStyle {}
extension TextFieldStyle where Self == RoundedBorderTextFieldStyle {
    public static var roundedBorder: RoundedBorderTextFieldStyle { fatalError("stub") }
}

extension View {
    public func padding() -> ModifiedContent { fatalError("stub") }
    public func disabled(_ disabled: Bool) -> ModifiedContent { fatalError("stub") }
    public func frame(maxWidth: Double? = nil, alignment: Alignment = .center) -> ModifiedContent {
        fatalError("stub")
    }
    public func textFieldStyle<S: TextFieldStyle>(_ style: S) -> ModifiedContent { fatalError("stub") }
}
