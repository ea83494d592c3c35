import Core
import Protocol
import RPC

extension RPCHandlers {
    /// Registers a method whose request names an app: a name that is not an app name (docs/protocol.md, "App
    /// names") is INVALID_ARGUMENT before `body` runs, on every service alike. Overload resolution picks this
    /// one for every such request where ControlPlane is imported.
    public mutating func register<Request: NamesAnApp, Response>(
        _ method: RPCMethod<Request, Response>,
        _ body: @escaping @Sendable (Request, RequestContext) async throws -> Response
    ) {
        registerDecoded(method) { request, context in
            try AppNames.check(request)
            return try await body(request, context).serializedBytes()
        }
    }

    /// `registerEncoded` with the same check.
    public mutating func registerEncoded<Request: NamesAnApp, Response>(
        _ method: RPCMethod<Request, Response>,
        _ body: @escaping @Sendable (Request, RequestContext) async throws -> [UInt8]
    ) {
        registerDecoded(method) { request, context in
            try AppNames.check(request)
            return try await body(request, context)
        }
    }
}

public enum AppNames {
    /// INVALID_ARGUMENT naming the field unless the request's app is an app name (or empty where that is allowed).
    public static func check<Request: NamesAnApp>(_ request: Request) throws {
        let name = request.namedApp
        if name.isEmpty && Request.appMayBeEmpty { return }
        guard AppSpec.isValidName(name) else {
            throw RPCError.invalidArgument(
                "\(Request.appField): \(name.quotedForError) is not an app name (\(AppSpec.nameRule))")
        }
    }
}
