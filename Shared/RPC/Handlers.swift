import Logging
import Protocol
import SwiftProtobuf

/// What a handler knows about the call it serves.
public struct RequestContext: Sendable {
    public let method: String
    public let requestId: UInt64
    /// The caller's CURVE public key (Z85) when the server requires CURVE; nil on plain TCP.
    public let peerKey: String?
    /// A business instance's token from the envelope ("" when none).
    public let token: String
    /// When the caller stops waiting; handlers that wait (long polls) should answer before it.
    public let deadline: ContinuousClock.Instant?
    /// Who is calling, as the service's access control decided before the handler runs (nil without one).
    public private(set) var principal: Principal?
    let serverLogger: Logger

    init(method: String, requestId: UInt64, peerKey: String?, token: String, deadline: ContinuousClock.Instant?,
         serverLogger: Logger) {
        self.method = method
        self.requestId = requestId
        self.peerKey = peerKey
        self.token = token
        self.deadline = deadline
        self.serverLogger = serverLogger
    }

    /// The server's logger with this call's method and request id as metadata (made when asked for:
    /// most calls never log).
    public var logger: Logger {
        var logger = serverLogger
        logger[metadataKey: "method"] = "\(method)"
        logger[metadataKey: "request"] = "\(requestId)"
        return logger
    }

    /// Time left until the deadline, or nil when the call has none.
    public var remaining: Duration? { deadline.map { $0 - .now } }

    /// This context with the caller named.
    public func with(principal: Principal) -> RequestContext {
        var context = self
        context.principal = principal
        return context
    }
}

/// A caller as access control knows it: an operator, service or agent by its CURVE key, or a business
/// instance by its token.
public struct Principal: Sendable, Equatable {
    public enum Role: String, Sendable, CaseIterable {
        case `operator`, service, agent, instance
    }

    /// What the audit log calls it: the key's name, or `instance/<id>`.
    public var name: String
    public var role: Role
    /// The CURVE public key it connected with.
    public var key: String?
    /// The node an agent speaks for.
    public var node: String?
    /// The instance and app a token belongs to.
    public var instanceID: String?
    public var app: String?

    public init(name: String, role: Role, key: String? = nil, node: String? = nil, instanceID: String? = nil,
                app: String? = nil) {
        self.name = name
        self.role = role
        self.key = key
        self.node = node
        self.instanceID = instanceID
        self.app = app
    }
}

/// The methods a server answers, each with a typed handler. Built before the server starts.
public struct RPCHandlers: Sendable {
    typealias RawHandler = @Sendable ([UInt8], RequestContext) async throws -> [UInt8]
    private(set) var handlers: [String: RawHandler] = [:]

    public init() {}

    /// Registers `body` for `method`. Requests whose payload does not decode as `Request` get
    /// INVALID_ARGUMENT without reaching `body`.
    public mutating func register<Request, Response>(
        _ method: RPCMethod<Request, Response>,
        _ body: @escaping @Sendable (Request, RequestContext) async throws -> Response
    ) {
        registerDecoded(method) { request, context in try await body(request, context).serializedBytes() }
    }

    /// Registers a handler that answers with the response already serialized (a cached answer need not be
    /// encoded again for every call). The bytes must be a valid `Response`.
    public mutating func registerEncoded<Request, Response>(
        _ method: RPCMethod<Request, Response>,
        _ body: @escaping @Sendable (Request, RequestContext) async throws -> [UInt8]
    ) {
        registerDecoded(method, body)
    }

    /// What `register` and `registerEncoded` do, under a name no overload shares: overloads that check a
    /// kind of request first (ControlPlane's, for requests that name an app) end here.
    public mutating func registerDecoded<Request, Response>(
        _ method: RPCMethod<Request, Response>,
        _ body: @escaping @Sendable (Request, RequestContext) async throws -> [UInt8]
    ) {
        handlers[method.name] = { bytes, context in
            let request: Request
            do {
                request = try Request(serializedBytes: bytes)
            } catch {
                throw RPCError.invalidArgument("payload of \(method.name) is not a valid \(Request.protoMessageName): \(error)")
            }
            return try await body(request, context)
        }
    }

    public var methods: [String] { handlers.keys.sorted() }

    /// The rest of a call: the method's decoding and handler.
    public typealias Next = @Sendable (_ body: [UInt8], _ context: RequestContext) async throws -> [UInt8]

    /// Puts `gate` in front of every method registered so far: it sees each call first and decides whether
    /// (and as whom) it goes on to `next`. Register every method before.
    public mutating func guardAll(
        with gate: @escaping @Sendable (_ method: String, _ body: [UInt8], _ context: RequestContext, _ next: Next) async throws -> [UInt8]
    ) {
        for (method, handler) in handlers {
            handlers[method] = { body, context in try await gate(method, body, context, handler) }
        }
    }

    func handler(for method: String) -> RawHandler? { handlers[method] }
}

/// Told about each finished call: method (or "<unknown>"), status and seconds taken. Feeds metrics.
public typealias RPCCallObserver = @Sendable (_ method: String, _ status: StatusCode, _ seconds: Double) -> Void
