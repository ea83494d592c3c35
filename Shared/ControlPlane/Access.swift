import Core
import ClientKit
import Foundation
import Hosting
import Logging
import Protocol
import RPC
import ServiceLifecycle
import Store
import Synchronization

/// The principals a service knows (from the database, refreshed every second, and the bootstrap keys of
/// `--curve-allow`), the tokens of business instances, and the check in front of every call.
public final class AccessControl: Service, Sendable {
    let kind: ServiceKind
    let store: Store
    let policy: AccessPolicy
    /// Admitted at the RPC handshake (for Discovery and the config center also unknown keys, which then need
    /// a token) and at the feeds' handshake (known keys only).
    public let rpcAllowList: CurveAllowList?
    public let feedAllowList: CurveAllowList?
    /// Keys from `--curve-allow`: operators, so that the first operator can add the others.
    let bootstrap: [String: String]
    let audit: AuditLog
    let logger: Logger
    let refreshInterval: Duration
    let tokenLifetime: Duration

    private struct Known {
        var principals: [String: Principal] = [:]
        var loaded = false
        var tokens: [String: (principal: Principal, until: ContinuousClock.Instant)] = [:]
        /// Tokens found invalid, until when that answer stands without a lookup (a token never becomes valid
        /// later: each is issued before its instance can use it).
        var refusedTokens: [String: ContinuousClock.Instant] = [:]
        /// Refused calls per caller key in the current second.
        var refusals: [String: (second: ContinuousClock.Instant, count: Int)] = [:]
    }

    /// How long an invalid token is refused from memory.
    static let refusedTokenLifetime: Duration = .seconds(5)
    /// Refused calls a key may make in a second; beyond, its calls are refused without a lookup until the
    /// second is over.
    static let refusalsPerSecond = 10
    private let known = Mutex(Known())

    init(kind: ServiceKind, store: Store, curve: CurveServerConfiguration?, bootstrap: [String: String],
         audit: AuditLog, logger: Logger, refreshInterval: Duration = .seconds(1), tokenLifetime: Duration = .seconds(2)) {
        self.kind = kind
        self.store = store
        policy = .of(kind)
        rpcAllowList = curve?.allowList
        feedAllowList = curve == nil ? nil : CurveAllowList(Set(bootstrap.keys))
        self.bootstrap = bootstrap
        self.audit = audit
        self.logger = logger
        self.refreshInterval = refreshInterval
        self.tokenLifetime = tokenLifetime
        // The RPC allow-list already holds these keys (ServiceOptions.resolvedCurve made it from them).
        known.withLock { $0.principals = Self.operators(bootstrap) }
    }

    /// The bootstrap keys as operators.
    static func operators(_ bootstrap: [String: String]) -> [String: Principal] {
        Dictionary(uniqueKeysWithValues: bootstrap.map { ($0.key, Principal(name: $0.value, role: .operator, key: $0.key)) })
    }

    /// Whether calls are checked at all: only with CURVE, which names the caller.
    var enforcing: Bool { rpcAllowList != nil }

    public func run() async throws {
        guard enforcing else { return }
        var failures = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await refresh()
                failures = 0
            } catch {
                failures += 1
                // Until the schema is migrated, or while the database is down: the last list stays in force.
                if failures == 5 || failures % 60 == 0 {
                    logger.warning("cannot reload the principals; the last list stays in force", metadata: ["error": "\(error)"])
                }
            }
            try? await gracefulSleep(for: refreshInterval)
        }
    }

    /// Reads the principals table: keys added are admitted, keys removed refused, from now on.
    public func refresh() async throws {
        let rows = try await store.query("SELECT public_key, name, role, node FROM principals")
        var principals = Self.operators(bootstrap)
        for row in rows {
            let key = try row.decode(String.self, "public_key")
            guard let role = Principal.Role(rawValue: try row.decode(String.self, "role")) else { continue }
            principals[key] = Principal(name: try row.decode(String.self, "name"), role: role, key: key,
                                        node: try row.decode(String?.self, "node"))
        }
        let changed = known.withLock { known -> Bool in
            defer {
                known.principals = principals
                known.loaded = true
            }
            return known.principals != principals || !known.loaded
        }
        if changed {
            rpcAllowList?.replace(with: Set(principals.keys))
            feedAllowList?.replace(with: Set(principals.keys))
            logger.info("principals loaded", metadata: ["count": "\(principals.count)"])
        }
    }

    /// Whether the subscriber with `key` may follow `topic` of this service's feed: operators and services
    /// every topic; agents their own node's assignments and the routes (scheduler); nobody else anything.
    /// A subscription is checked once, when made: a key revoked later keeps what it subscribed until it
    /// disconnects (it cannot connect again).
    public func admitsSubscription(topic: String, key: String?) -> Bool {
        guard enforcing else { return true }
        guard let key, let principal = known.withLock({ $0.principals[key] }) else { return false }
        switch principal.role {
        case .operator, .service:
            return true
        case .agent:
            return kind == .scheduler && (topic == FeedTopics.node(principal.node ?? "") || topic == FeedTopics.routes)
        case .instance:
            return false
        }
    }

    /// The caller of a call, by its CURVE key or, for a business instance, by its token.
    func identify(_ context: RequestContext) async throws -> Principal {
        guard let key = context.peerKey else { return Principal(name: "anonymous", role: .operator) }
        if let principal = known.withLock({ $0.principals[key] }) { return principal }
        guard !context.token.isEmpty else {
            throw RPCError.unauthenticated("key \(key) is not a known principal, and the call carries no instance token")
        }
        var principal = try await instance(token: context.token)
        principal.key = key
        return principal
    }

    /// The instance a token belongs to; a token works while its instance is bound (a new binding issues a
    /// new one) and for at most `tokenLifetime` after it ends.
    func instance(token: String) async throws -> Principal {
        let now = ContinuousClock.now
        let invalid = RPCError.unauthenticated("the instance token is not valid (its instance ended, or was bound again)")
        // Issued tokens are 64 lowercase hex digits: anything else is refused without a lookup.
        guard token.utf8.count == 64, token.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else { throw invalid }
        let cached = known.withLock { known -> (Principal?, Bool) in
            if let hit = known.tokens[token], hit.until > now { return (hit.principal, false) }
            if let until = known.refusedTokens[token], until > now { return (nil, true) }
            return (nil, false)
        }
        if let principal = cached.0 { return principal }
        if cached.1 { throw invalid }
        let rows: [Row]
        do {
            rows = try await store.query(
                """
                SELECT id::text AS id, app FROM instance_directory
                WHERE token_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex') AND state = ANY($2::text[])
                """, token, InstanceState.names(InstanceState.tokenValid))
        } catch {
            throw RPCError.unavailable("cannot check the instance token: \(error)")
        }
        guard let row = rows.first else {
            known.withLock { known in
                if known.refusedTokens.count > 100_000 { known.refusedTokens = known.refusedTokens.filter { $0.value > now } }
                if known.refusedTokens.count > 100_000 { known.refusedTokens = [:] }
                known.refusedTokens[token] = now + Self.refusedTokenLifetime
            }
            throw invalid
        }
        let id = try row.decode(String.self, "id")
        let principal = Principal(name: "instance/\(id)", role: .instance, instanceID: id, app: try row.decode(String.self, "app"))
        known.withLock { known in
            if known.tokens.count > 100_000 { known.tokens = known.tokens.filter { $0.value.until > now } }
            known.tokens[token] = (principal, now + tokenLifetime)
        }
        return principal
    }

    /// Whether `principal` may make this call; throws PERMISSION_DENIED when not.
    func authorize(_ principal: Principal, method: String, rule: AccessPolicy.Rule?, subject: String, instance: String) async throws {
        guard enforcing, principal.role != .operator else { return }
        guard let rule, rule.roles.contains(principal.role) else {
            throw RPCError.permissionDenied("\(principal.name) (\(principal.role.rawValue)) may not call \(method)")
        }
        switch (rule.scope, principal.role) {
        case (.node, .agent):
            guard subject == principal.node else {
                throw RPCError.permissionDenied(
                    "\(principal.name) is the agent of node \(principal.node ?? "?") and may not call \(method) for node '\(subject)'")
            }
        case (.app, .instance):
            guard subject == principal.app else {
                throw RPCError.permissionDenied(
                    "\(principal.name) belongs to app \(principal.app ?? "?") and may not call \(method) for app '\(subject)'")
            }
        case (.instance, .instance):
            guard subject == principal.app, instance.isEmpty || instance == principal.instanceID else {
                throw RPCError.permissionDenied(
                    "\(principal.name) may call \(method) only for itself (app \(principal.app ?? "?"))")
            }
        case (.instance, .agent):
            guard UUID(uuidString: instance) != nil else {
                throw RPCError.permissionDenied("\(principal.name) may call \(method) only for an instance on its node")
            }
            let rows = try await store.query("SELECT node FROM instance_directory WHERE id = $1::uuid AND app = $2",
                                             instance, subject)
            guard let node = try rows.first?.decode(String.self, "node"), node == principal.node else {
                throw RPCError.permissionDenied(
                    "\(principal.name) may call \(method) only for instances on node \(principal.node ?? "?")")
            }
        default:
            break
        }
    }

    /// A key refused `refusalsPerSecond` times in this second is refused again at once (RESOURCE_EXHAUSTED),
    /// without a lookup: a flood of made-up tokens costs the database nothing past that.
    func checkRefusalRate(_ key: String?) throws {
        guard let key else { return }
        let now = ContinuousClock.now
        let over = known.withLock { known -> Bool in
            guard let window = known.refusals[key], now - window.second < .seconds(1) else { return false }
            return window.count >= Self.refusalsPerSecond
        }
        if over {
            throw RPCError.resourceExhausted("too many refused calls from key \(key.prefix(12))…; wait a second before calling again")
        }
    }

    func countRefusal(_ key: String?) {
        guard let key else { return }
        let now = ContinuousClock.now
        known.withLock { known in
            if known.refusals.count > 100_000 { known.refusals = known.refusals.filter { now - $0.value.second < .seconds(1) } }
            if known.refusals.count > 100_000 { known.refusals = [:] }
            if let window = known.refusals[key], now - window.second < .seconds(1) {
                known.refusals[key] = (window.second, window.count + 1)
            } else {
                known.refusals[key] = (now, 1)
            }
        }
    }

    /// Stands in front of every method: names the caller, refuses what it may not do, records writes and
    /// refusals in the audit log.
    func gate(method: String, body: [UInt8], context: RequestContext, next: RPCHandlers.Next) async throws -> [UInt8] {
        let rule = policy.rule(method)
        // Without CURVE nobody is checked and only writes are audited: a read goes straight on (the lookups of
        // Discovery are a hot path), without decoding its request a second time.
        guard enforcing || rule?.write == true else { return try await next(body, context) }
        let (subject, instance) = rule?.subject?(body) ?? ("", "")
        var known: Principal?
        do {
            try checkRefusalRate(context.peerKey)
            known = try await identify(context)
            try await authorize(known!, method: method, rule: rule, subject: subject, instance: instance)
        } catch let error as RPCError {
            countRefusal(context.peerKey)
            audit.record(service: kind, method: method, caller: known, key: context.peerKey, status: error.code,
                         subject: subject.isEmpty ? instance : subject, message: error.message)
            throw error
        }
        let principal = known!
        guard rule?.write == true else { return try await next(body, context.with(principal: principal)) }
        let shown = subject.isEmpty ? instance : subject
        do {
            let reply = try await next(body, context.with(principal: principal))
            audit.record(service: kind, method: method, caller: principal, key: context.peerKey, status: .ok, subject: shown, message: "")
            return reply
        } catch {
            let rpc = (error as? RPCStatusConvertible)?.rpcError ?? RPCError(.internal, "\(type(of: error))")
            audit.record(service: kind, method: method, caller: principal, key: context.peerKey, status: rpc.code,
                         subject: shown, message: rpc.message)
            throw error
        }
    }
}
