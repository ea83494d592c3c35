import Foundation
import Logging
import Protocol
import RPC
import ServiceLifecycle
import Store
import Synchronization

/// The version every Sigma executable reports.
public let sigmaVersion = "0.1.0"

/// One thing a service needs to work (the database, the scheduler), checked on every `Health` call.
public struct HealthCheck: Sendable {
    public let name: String
    public let check: @Sendable () async -> (reachable: Bool, detail: String)

    public init(name: String, check: @escaping @Sendable () async -> (reachable: Bool, detail: String)) {
        self.name = name
        self.check = check
    }
}

/// What every Sigma executable is made of: logging, the RPC server with `Health` and `Metrics`, the
/// store and its migrations (control plane only), and graceful shutdown on SIGTERM/SIGINT.
public final class ServiceHost: Sendable {
    public let kind: ServiceKind
    public let options: ServiceOptions
    public let logger: Logger
    /// The database; nil for the agent, which never connects to PostgreSQL.
    public let store: Store?
    public let metrics = MethodMetricsRegistry()
    /// The endpoint this service serves on, once it does.
    public let bound = BoundEndpoint()
    let startedAt = ContinuousClock.now
    let schema = SchemaState()
    /// CURVE of this service's sockets, when on.
    let curve: CurveServerConfiguration?
    /// Who may call what (control-plane services), and the audit log of write calls.
    public let access: AccessControl?
    public let audit: AuditLog?

    public init(kind: ServiceKind, options: ServiceOptions) throws {
        self.kind = kind
        self.options = options
        StructuredLogHandler.bootstrap(level: try options.resolvedLogLevel(), format: try options.resolvedLogFormat())
        var logger = Logger(label: "sigma.\(kind.rawValue)")
        logger[metadataKey: "service"] = "\(kind.rawValue)"
        self.logger = logger
        if kind.usesDatabase {
            var configuration = StoreConfiguration(url: try options.resolvedDatabaseURL())
            configuration.poolSize = options.resolvedPoolSize
            configuration.applicationName = "sigma-\(kind.rawValue)"
            store = Store(configuration: configuration, logger: logger)
        } else {
            store = nil
        }
        let curve = try options.resolvedCurve(kind)
        self.curve = curve?.configuration
        if let store {
            let audit = AuditLog(store: store, logger: logger)
            self.audit = audit
            access = AccessControl(kind: kind, store: store, curve: curve?.configuration, bootstrap: curve?.bootstrap ?? [:],
                                   audit: audit, logger: logger)
        } else {
            audit = nil
            access = nil
        }
    }

    /// With access control on, who may follow which topic of the feed.
    var subscriptionCheck: (@Sendable (String, String?) -> Bool)? {
        guard let access, access.enforcing else { return nil }
        return { topic, key in access.admitsSubscription(topic: topic, key: key) }
    }

    /// CURVE of the push feed: the service's key pair; known principals only (no token-bearing strangers).
    var feedCurve: CurveServerConfiguration? {
        guard let curve else { return nil }
        guard let list = access?.feedAllowList else { return curve }
        return CurveServerConfiguration(keyPair: curve.keyPair, allowList: list)
    }

    /// This service's push feed: a PUB socket on `--events-listen`, else on the endpoint in
    /// `SIGMA_<SERVICE>_EVENTS`, else on the default; CURVE as the service's own sockets. The endpoint clients
    /// are told to subscribe at is `--events-advertise` when given, else the one bound.
    public func publisher(_ feed: FeedOptions) throws -> (publisher: Publisher, advertised: String) {
        let publisher = try Publisher(
            endpoint: feed.eventsListen ?? ServiceOptions.environment(kind.eventsVariable) ?? kind.defaultEventsEndpoint,
            curve: feedCurve, admits: subscriptionCheck, logger: logger)
        let advertised = feed.eventsAdvertise ?? ServiceOptions.environment(kind.eventsVariable + "_ADVERTISE") ?? publisher.endpoint
        logger.info("feed", metadata: ["endpoint": "\(publisher.endpoint)", "advertised": "\(advertised)"])
        return (publisher, advertised)
    }

    /// Serves `handlers` plus `Health` and `Metrics` next to `services` until SIGTERM/SIGINT.
    public func run(
        handlers: RPCHandlers = RPCHandlers(), checks: [HealthCheck] = [], role: @autoclosure @escaping @Sendable () -> String = "active",
        services: [any Service] = []
    ) async throws {
        var handlers = handlers
        let allChecks = (store.map { [databaseCheck($0)] } ?? []) + checks
        handlers.register(CommonMethods.health) { [self] _, _ in await health(checks: allChecks, role: role()) }
        handlers.register(CommonMethods.metrics) { [self] _, _ in metrics.snapshot(service: kind.rawValue) }
        if let access {
            handlers.guardAll { method, body, context, next in
                try await access.gate(method: method, body: body, context: context, next: next)
            }
        }
        let server = RPCServer(configuration: try options.serverConfiguration(kind, curve: curve), handlers: handlers,
                               logger: logger, observer: metrics.observer)
        var configured: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: RPCServerService(server: server, readyFile: options.readyFile, logger: logger, bound: bound))
        ]
        if let store {
            configured.append(.init(service: MigrationService(store: store, schema: schema, logger: logger),
                                    successTerminationBehavior: .ignore))
        }
        if let access, let audit {
            // Without CURVE the access list has nothing to reload and returns at once; that ends nothing else.
            configured.append(.init(service: access, successTerminationBehavior: .ignore))
            configured.append(.init(service: audit))
        }
        configured += services.map { .init(service: $0) }
        let group = ServiceGroup(configuration: .init(services: configured, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        logger.info("starting", metadata: ["version": "\(sigmaVersion)", "pid": "\(getpid())"])
        defer { store?.shutdown() }
        try await group.run()
        logger.info("stopped cleanly")
    }

    func health(checks: [HealthCheck], role: String) async -> Sigma_V1_HealthResponse {
        var response = Sigma_V1_HealthResponse()
        response.service = kind.rawValue
        response.version = sigmaVersion
        response.role = role
        response.instance = "\(ProcessInfo.processInfo.hostName)/\(getpid())"
        response.uptimeSeconds = (ContinuousClock.now - startedAt).seconds
        response.dependencies = await withTaskGroup(of: Sigma_V1_DependencyHealth.self) { group in
            for check in checks {
                group.addTask {
                    let started = ContinuousClock.now
                    let result = await withDeadline(.seconds(2), fallback: (false, "no answer within 2 s")) { await check.check() }
                    var dependency = Sigma_V1_DependencyHealth()
                    dependency.name = check.name
                    dependency.reachable = result.0
                    dependency.detail = result.1
                    dependency.latencySeconds = (ContinuousClock.now - started).seconds
                    return dependency
                }
            }
            var all: [Sigma_V1_DependencyHealth] = []
            for await dependency in group { all.append(dependency) }
            return all.sorted { $0.name < $1.name }
        }
        response.healthy = response.dependencies.allSatisfy(\.reachable)
        return response
    }

    func databaseCheck(_ store: Store) -> HealthCheck {
        HealthCheck(name: "database") { [schema] in
            do {
                let rows = try await store.query("SELECT current_setting('server_version') AS version")
                let server = try rows.first?.decode(String.self, "version") ?? "?"
                let version = schema.version
                guard version >= Schema.latestVersion else {
                    return (false, "PostgreSQL \(server); schema not migrated yet (\(version)/\(Schema.latestVersion))")
                }
                return (true, "PostgreSQL \(server); schema \(version)")
            } catch {
                return (false, "\(error)")
            }
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// `body`'s result, or `fallback` when it takes longer than `timeout` (body keeps running detached).
public func withDeadline<T: Sendable>(_ timeout: Duration, fallback: T, _ body: @escaping @Sendable () async -> T) async -> T {
    let gate = FirstAnswer<T>()
    return await withCheckedContinuation { continuation in
        gate.set(continuation)
        Task { gate.answer(await body()) }
        Task {
            try? await Task.sleep(for: timeout)
            gate.answer(fallback)
        }
    }
}

/// Resumes a continuation with whichever answer comes first.
final class FirstAnswer<T: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<T, Never>?>(nil)
    func set(_ value: CheckedContinuation<T, Never>) { continuation.withLock { $0 = value } }
    func answer(_ value: T) { continuation.withLock { $0.take() }?.resume(returning: value) }
}

/// Runs the RPC server as a lifecycle service; writes the ready file once it serves.
/// The endpoint the RPC server bound (a port * resolved), for services that advertise it.
public final class BoundEndpoint: Sendable {
    private let state = Mutex<(endpoint: String?, waiting: [CheckedContinuation<String, Never>])>((nil, []))

    func fulfil(_ endpoint: String) {
        let waiting = state.withLock { state in
            state.endpoint = endpoint
            defer { state.waiting = [] }
            return state.waiting
        }
        for continuation in waiting { continuation.resume(returning: endpoint) }
    }

    /// Waits until the server serves.
    public var value: String {
        get async {
            await withCheckedContinuation { continuation in
                let ready: String? = state.withLock { state in
                    if let endpoint = state.endpoint { return endpoint }
                    state.waiting.append(continuation)
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }
}

struct RPCServerService: Service {
    let server: RPCServer
    let readyFile: String?
    let logger: Logger
    let bound: BoundEndpoint

    func run() async throws {
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                let endpoint = try await server.start()
                bound.fulfil(endpoint)
                if let readyFile { try writeAtomically(readyFile, endpoint + "\n") }
                await server.finished()
                if let readyFile { try? FileManager.default.removeItem(atPath: readyFile) }
            } onGracefulShutdown: {
                server.beginShutdown()
            }
        } onCancel: {
            server.beginShutdown()
        }
    }
}

func writeAtomically(_ path: String, _ text: String) throws {
    let temporary = path + ".tmp-\(getpid())"
    try text.write(toFile: temporary, atomically: false, encoding: .utf8)
    guard rename(temporary, path) == 0 else { throw RPCConfigurationError("cannot write \(path)") }
}

/// The schema version this process has seen applied (0 until its migration step is done).
final class SchemaState: Sendable {
    private let value = Atomic<Int>(0)
    var version: Int { value.load(ordering: .acquiring) }
    func set(_ version: Int) { value.store(version, ordering: .releasing) }
}

/// Applies the schema migrations at start, retrying with backoff while PostgreSQL is unreachable, so a
/// service can start before its database and still serve `Health` (reporting the database down).
struct MigrationService: Service {
    let store: Store
    let schema: SchemaState
    let logger: Logger

    func run() async throws {
        var backoff = Duration.milliseconds(200)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let applied = try await store.migrate()
                schema.set(try await store.schemaVersion())
                logger.info("schema ready", metadata: ["version": "\(schema.version)", "applied_now": "\(applied)"])
                return
            } catch {
                logger.warning("cannot migrate yet; retrying", metadata: ["error": "\(error)", "retry_in": "\(backoff)"])
                try? await gracefulSleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }
}

/// Sleeps, but wakes early when the process is asked to shut down.
public func gracefulSleep(for duration: Duration) async throws {
    try await cancelWhenGracefulShutdown {
        try await Task.sleep(for: duration)
    }
}
