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

/// Who may call which method of a service, what each call is about, and which calls are writes (audited).
///
/// Operators may call everything; services the methods other services need; agents only what concerns
/// their own node; business instances (by their token) only reads of their own app. A method a policy does
/// not name is for operators only.
public struct AccessPolicy: Sendable {
    public typealias Role = Principal.Role

    /// How a call's subject limits agents and instances.
    enum Scope: Sendable {
        /// The roles decide alone.
        case none
        /// The subject is a node: an agent only for its own.
        case node
        /// The subject is an app: an instance only for its own.
        case app
        /// The subject is an app and the call names an instance: an agent only for instances on its node, an
        /// instance only for its own app and itself.
        case instance
    }

    struct Rule: Sendable {
        var roles: Set<Role>
        var write: Bool
        var scope: Scope
        /// The subject (a node, app, key...) and the instance a call names, read from its request.
        var subject: (@Sendable ([UInt8]) -> (subject: String, instance: String))?
    }

    var rules: [String: Rule] = [:]

    static let staff: Set<Role> = [.operator, .service]
    static let everyone: Set<Role> = Set(Role.allCases)

    mutating func allow<Request, Response>(
        _ method: RPCMethod<Request, Response>, _ roles: Set<Role>, write: Bool = false, scope: Scope = .none,
        subject: (@Sendable (Request) -> String)? = nil, instance: (@Sendable (Request) -> String)? = nil
    ) {
        var read: (@Sendable ([UInt8]) -> (subject: String, instance: String))?
        if subject != nil || instance != nil {
            read = { bytes in
                guard let request = try? Request(serializedBytes: bytes) else { return ("", "") }
                return (subject?(request) ?? "", instance?(request) ?? "")
            }
        }
        rules[method.name] = Rule(roles: roles.union([.operator]), write: write, scope: scope, subject: read)
    }

    /// The policy of one kind of service.
    public static func of(_ kind: ServiceKind) -> AccessPolicy {
        var policy = AccessPolicy()
        policy.allow(CommonMethods.health, everyone)
        policy.allow(CommonMethods.metrics, staff)
        switch kind {
        case .scheduler:
            let agents: Set<Role> = [.service, .agent]
            policy.allow(SchedulerMethods.registerNode, agents, write: true, scope: .node, subject: { $0.name })
            // Heartbeats are state reports several times a second per node, not changes anyone asked for:
            // not audited (a node's changes of health are events).
            policy.allow(SchedulerMethods.heartbeat, agents, scope: .node, subject: { $0.node })
            policy.allow(SchedulerMethods.getAssignments, agents, scope: .node, subject: { $0.node })
            policy.allow(SchedulerMethods.issueToken, agents, scope: .node, subject: { $0.node })
            policy.allow(SchedulerMethods.getRoutes, agents)
            for method in [SchedulerMethods.cordonNode, SchedulerMethods.uncordonNode, SchedulerMethods.drainNode,
                           SchedulerMethods.removeNode] {
                policy.allow(method, [], write: true, subject: { $0.name })
            }
            policy.allow(SchedulerMethods.listNodes, staff)
            policy.allow(SchedulerMethods.getPool, staff)
            policy.allow(SchedulerMethods.applyApp, [], write: true, subject: { $0.spec.name })
            policy.allow(SchedulerMethods.getApp, staff)
            policy.allow(SchedulerMethods.listApps, staff)
            policy.allow(SchedulerMethods.deleteApp, [], write: true, subject: { $0.name })
            policy.allow(SchedulerMethods.scaleApp, [], write: true, subject: { $0.name })
            policy.allow(SchedulerMethods.rolloutHistory, staff)
            policy.allow(SchedulerMethods.rolloutUndo, [], write: true, subject: { $0.name })
            policy.allow(SchedulerMethods.setQuota, [], write: true, subject: { $0.quota.team })
            policy.allow(SchedulerMethods.listQuotas, staff)
            policy.allow(SchedulerMethods.setTeamPolicy, [], write: true, subject: { $0.policy.team })
            policy.allow(SchedulerMethods.listTeamPolicies, staff)
            policy.allow(SchedulerMethods.listInstances, staff)
            policy.allow(SchedulerMethods.getInstance, staff)
            policy.allow(SchedulerMethods.updateResources, [], write: true, subject: { $0.app }, instance: { $0.instanceID })
            policy.allow(SchedulerMethods.migrateInstance, [], write: true, instance: { $0.instanceID })
            policy.allow(SchedulerMethods.listEvents, staff)
            policy.allow(AccessMethods.addPrincipal, [], write: true, subject: { $0.principal.name })
            policy.allow(AccessMethods.removePrincipal, [], write: true, subject: { $0.nameOrKey })
            policy.allow(AccessMethods.listPrincipals, [])
            policy.allow(AccessMethods.listAudit, [])
        case .allocator:
            policy.allow(AllocatorMethods.createIPPool, staff, write: true, subject: { $0.pool.name })
            policy.allow(AllocatorMethods.listIPPools, staff)
            policy.allow(AllocatorMethods.allocateIPs, staff, write: true)
            policy.allow(AllocatorMethods.releaseIPs, staff, write: true)
            policy.allow(AllocatorMethods.reclaim, staff, write: true)
            policy.allow(AllocatorMethods.setNodePortRange, staff, write: true, subject: { $0.range.node })
            policy.allow(AllocatorMethods.allocateHostPorts, staff, write: true)
            policy.allow(AllocatorMethods.releaseHostPorts, staff, write: true)
            policy.allow(AllocatorMethods.listHostPorts, staff)
            policy.allow(AllocatorMethods.reportSSDs, staff, write: true, subject: { $0.node })
            policy.allow(AllocatorMethods.allocateSSDs, staff, write: true)
            policy.allow(AllocatorMethods.releaseSSDs, staff, write: true)
            policy.allow(AllocatorMethods.listSSDs, staff)
            policy.allow(AllocatorMethods.listIPAllocations, staff)
        case .config:
            let readers = staff.union([.instance])
            policy.allow(ConfigMethods.publish, [], write: true, subject: { $0.app })
            policy.allow(ConfigMethods.rollback, [], write: true, subject: { $0.app })
            policy.allow(ConfigMethods.gray, [], write: true, subject: { $0.app })
            policy.allow(ConfigMethods.promote, [], write: true, subject: { $0.app })
            policy.allow(ConfigMethods.abandon, [], write: true, subject: { $0.app })
            policy.allow(ConfigMethods.get, readers, scope: .app, subject: { $0.app })
            policy.allow(ConfigMethods.history, readers, scope: .app, subject: { $0.app })
            policy.allow(ConfigMethods.diff, readers, scope: .app, subject: { $0.app })
            policy.allow(ConfigMethods.fetch, readers.union([.agent]), scope: .instance, subject: { $0.app },
                         instance: { $0.instanceID })
        case .discovery:
            policy.allow(DiscoveryMethods.resolve, staff.union([.instance]), scope: .app, subject: { $0.app })
        case .agent:
            break
        }
        return policy
    }

    func rule(_ method: String) -> Rule? { rules[method] }

    /// Whether the policy names `method` (every method a service serves should be named, operators-only
    /// ones too, so that its writes are audited).
    public func names(_ method: String) -> Bool { rules[method] != nil }
}

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
                SELECT id::text AS id, app FROM instances
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
            let rows = try await store.query("SELECT coalesce(node, '') AS node FROM instances WHERE id = $1::uuid AND app = $2",
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

/// The audit log: who called which write method, when, about what, and how it ended. Entries are written in
/// batches a few times a second (one INSERT each), so auditing costs the calls no round trip; an entry
/// made in the last fraction of a second before a crash can be lost. Repeats within a batch are folded into
/// one entry with their count (`repeats`): the same call by the same caller with the same outcome, and for
/// callers nobody knows the same refusal from any key (the entry keeps the first key and says how many there
/// were). At most 50,000 distinct entries wait; beyond that new ones are counted and dropped. The scheduler
/// prunes entries past `--audit-retention`.
public final class AuditLog: Service, Sendable {
    struct Entry: Sendable {
        var service: String
        var method: String
        var caller: String
        var role: String
        var key: String
        var status: String
        var subject: String
        var message: String
        var repeats = 1
        var keys: Set<String> = []

        /// What makes two entries one: everything but the key of an unknown caller (who picks keys freely).
        var fold: [String] {
            [service, method, caller, role, caller == "unknown" ? "" : key, status, subject, message]
        }
    }

    struct Pending {
        var entries: [Entry] = []
        var index: [[String]: Int] = [:]
        var dropped = 0

        /// Folds `entry` into the one it repeats, or queues it while there is room (else counts it dropped).
        /// At most 10,000 keys are kept per entry (they are only counted).
        mutating func add(_ entry: Entry, capacity: Int) {
            let fold = entry.fold
            if let at = index[fold] {
                entries[at].repeats += entry.repeats
                if entries[at].keys.count < 10_000 { entries[at].keys.formUnion(entry.keys) }
            } else if entries.count < capacity {
                index[fold] = entries.count
                entries.append(entry)
            } else {
                dropped += entry.repeats
            }
        }
    }

    let store: Store
    let logger: Logger
    let interval: Duration
    private let pending = Mutex(Pending())
    private let capacity = 50_000

    init(store: Store, logger: Logger, interval: Duration = .milliseconds(200)) {
        self.store = store
        self.logger = logger
        self.interval = interval
    }

    func record(service: ServiceKind, method: String, caller: Principal?, key: String?, status: StatusCode,
                subject: String, message: String) {
        var entry = Entry(
            service: service.rawValue, method: String(method.prefix(200)),
            caller: caller?.name ?? (key == nil ? "anonymous" : "unknown"), role: caller?.role.rawValue ?? "",
            key: key ?? "", status: status.name, subject: String(subject.prefix(200)), message: String(message.prefix(500)))
        entry.keys = [entry.key]
        pending.withLock { $0.add(entry, capacity: capacity) }
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await gracefulSleep(for: interval)
            await flush()
        }
        await flush()
    }

    /// Writes what is waiting; kept for the next try when the database does not take it.
    public func flush() async {
        let (entries, dropped) = pending.withLock { pending in
            defer { pending = Pending() }
            return (pending.entries.map { entry -> Entry in
                var entry = entry
                if entry.keys.count > 1 { entry.message = String((entry.message + " (from \(entry.keys.count) keys)").prefix(500)) }
                return entry
            }, pending.dropped)
        }
        if dropped > 0 { logger.error("audit log overflowed; entries dropped", metadata: ["dropped": "\(dropped)"]) }
        guard !entries.isEmpty else { return }
        do {
            _ = try await store.execute(
                """
                INSERT INTO audit_log (service, method, caller, role, caller_key, status, subject, message, repeats)
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                                     $9::int[])
                """, entries.map(\.service), entries.map(\.method), entries.map(\.caller), entries.map(\.role),
                entries.map(\.key), entries.map(\.status), entries.map(\.subject), entries.map(\.message), entries.map(\.repeats))
        } catch {
            pending.withLock { pending in
                // Kept for the next try, before what came since (folded again on the way back in).
                let newer = pending.entries
                pending = Pending(dropped: pending.dropped)
                for entry in entries + newer { pending.add(entry, capacity: capacity) }
            }
            logger.warning("cannot write the audit log yet; kept for the next try", metadata: ["entries": "\(entries.count)", "error": "\(error)"])
        }
    }
}
