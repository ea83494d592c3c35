import Foundation
import Logging
import ClientKit
import Protocol
import RPC
import ServiceLifecycle
import Synchronization

/// One thing a service needs to work (the database, the scheduler), checked on every `Health` call.
public struct HealthCheck: Sendable {
    public let name: String
    public let check: @Sendable () async -> (reachable: Bool, detail: String)

    public init(name: String, check: @escaping @Sendable () async -> (reachable: Bool, detail: String)) {
        self.name = name
        self.check = check
    }
}

/// What every Sigma executable that serves is made of: logging, the RPC server with `Health` and `Metrics`,
/// and graceful shutdown on SIGTERM/SIGINT. The agent runs on this alone; the control-plane services wrap it in
/// `ControlPlaneHost`, which adds the store, its migrations, access control and the audit log.
public final class ServiceHost: Sendable {
    public let kind: ServiceKind
    public let options: ServiceOptions
    public let logger: Logger
    public let metrics = MethodMetricsRegistry()
    /// The endpoint this service serves on, once it does.
    public let bound = BoundEndpoint()
    let startedAt = ContinuousClock.now
    /// CURVE of this service's sockets, when on, and the named keys of `--curve-allow`.
    package let curve: CurveServerConfiguration?
    package let curveBootstrap: [String: String]

    public init(kind: ServiceKind, options: ServiceOptions) throws {
        self.kind = kind
        self.options = options
        StructuredLogHandler.bootstrap(level: try options.resolvedLogLevel(), format: try options.resolvedLogFormat())
        var logger = Logger(label: "sigma.\(kind.rawValue)")
        logger[metadataKey: "service"] = "\(kind.rawValue)"
        self.logger = logger
        let curve = try options.resolvedCurve(kind)
        self.curve = curve?.configuration
        curveBootstrap = curve?.bootstrap ?? [:]
    }

    /// Serves `handlers` plus `Health` and `Metrics` next to `services` until SIGTERM/SIGINT.
    public func run(
        handlers: RPCHandlers = RPCHandlers(), checks: [HealthCheck] = [], role: @autoclosure @escaping @Sendable () -> String = "active",
        services: [any Service] = []
    ) async throws {
        try await serve(handlers: handlers, checks: checks, role: role, services: services.map { .init(service: $0) })
    }

    /// `run`, with `gate` in front of every method (Health and Metrics too) and `services` configured as given.
    package func serve(
        handlers: RPCHandlers, checks: [HealthCheck], role: @escaping @Sendable () -> String,
        services: [ServiceGroupConfiguration.ServiceConfiguration], eventsEndpoint: String = "",
        gate: (@Sendable (String, [UInt8], RequestContext, RPCHandlers.Next) async throws -> [UInt8])? = nil
    ) async throws {
        var handlers = handlers
        handlers.register(CommonMethods.health) { [self] _, _ in await health(checks: checks, role: role(), eventsEndpoint: eventsEndpoint) }
        handlers.register(CommonMethods.metrics) { [self] _, _ in metrics.snapshot(service: kind.rawValue) }
        if let gate { handlers.guardAll(with: gate) }
        let server = RPCServer(configuration: try options.serverConfiguration(kind, curve: curve), handlers: handlers,
                               logger: logger, observer: metrics.observer)
        let configured: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: RPCServerService(server: server, readyFile: options.readyFile, logger: logger, bound: bound))
        ] + services
        let group = ServiceGroup(configuration: .init(services: configured, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        logger.info("starting", metadata: ["version": "\(sigmaVersion)", "pid": "\(getpid())"])
        try await group.run()
        logger.info("stopped cleanly")
    }

    func health(checks: [HealthCheck], role: String, eventsEndpoint: String = "") async -> Sigma_V1_HealthResponse {
        var response = Sigma_V1_HealthResponse()
        response.service = kind.rawValue
        response.eventsEndpoint = eventsEndpoint
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

/// Sleeps, but wakes early when the process is asked to shut down.
public func gracefulSleep(for duration: Duration) async throws {
    try await cancelWhenGracefulShutdown {
        try await Task.sleep(for: duration)
    }
}
