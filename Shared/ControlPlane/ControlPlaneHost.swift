import ArgumentParser
import ClientKit
import Foundation
import Hosting
import Logging
import Protocol
import RPC
import ServiceLifecycle
import Store
import Synchronization

/// The database flags of the control-plane services (the agent has none: it never connects to PostgreSQL).
public struct DatabaseOptions: ParsableArguments, Sendable {
    @Option(help: "PostgreSQL URL or conninfo; several hosts allowed. [SIGMA_DATABASE_URL]")
    public var databaseURL: String?

    @Option(help: "PostgreSQL connections kept open. [SIGMA_DB_POOL_SIZE]")
    public var dbPoolSize: Int?

    public init() {}

    public func resolvedDatabaseURL() throws -> String {
        guard let url = databaseURL ?? environmentValue("SIGMA_DATABASE_URL") else {
            throw ValidationError("no database: pass --database-url or set SIGMA_DATABASE_URL")
        }
        return url
    }

    public var resolvedPoolSize: Int {
        dbPoolSize ?? environmentValue("SIGMA_DB_POOL_SIZE").flatMap(Int.init) ?? 8
    }
}

/// The push feed of the services that have one (scheduler, config center, discovery).
public struct FeedOptions: ParsableArguments, Sendable {
    @Option(help: "ZeroMQ endpoint of this service's push feed (PUB); port * picks a free one. [SIGMA_<SERVICE>_EVENTS]")
    public var eventsListen: String?

    @Option(help: "The feed's endpoint as clients are told it, when they cannot use the bound one (bound to 0.0.0.0, behind NAT). [SIGMA_<SERVICE>_EVENTS_ADVERTISE]")
    public var eventsAdvertise: String?

    public init() {}
}


/// A control-plane service (scheduler, allocator, config center, Discovery): a `ServiceHost` with the store
/// (required), its migrations at start, access control in front of every method, and the audit log of writes.
public final class ControlPlaneHost: Sendable {
    public let host: ServiceHost
    public let store: Store
    /// Who may call what, and the audit log of write calls.
    public let access: AccessControl
    public let audit: AuditLog
    let schema = SchemaState()

    public init(kind: ServiceKind, options: ServiceOptions, database: DatabaseOptions) throws {
        precondition(kind.usesDatabase, "\(kind) is not a control-plane service")
        host = try ServiceHost(kind: kind, options: options)
        var configuration = StoreConfiguration(url: try database.resolvedDatabaseURL())
        configuration.poolSize = database.resolvedPoolSize
        configuration.applicationName = "sigma-\(kind.rawValue)"
        store = Store(configuration: configuration, logger: host.logger)
        audit = AuditLog(store: store, logger: host.logger)
        access = AccessControl(kind: kind, store: store, curve: host.curve, bootstrap: host.curveBootstrap,
                               audit: audit, logger: host.logger)
    }

    public var logger: Logger { host.logger }
    public var kind: ServiceKind { host.kind }
    public var bound: BoundEndpoint { host.bound }

    /// This service's push feed: a PUB socket on `--events-listen`, else on the endpoint in
    /// `SIGMA_<SERVICE>_EVENTS`, else on the default; CURVE as the service's own sockets but known principals
    /// only (no token-bearing strangers). The endpoint clients are told to subscribe at is `--events-advertise`
    /// when given, else the one bound.
    /// `keepsRecent` as `Publisher` takes it (how many of a topic's latest events it keeps for catch-ups).
    public func publisher(_ feed: FeedOptions, keepsRecent: @escaping @Sendable (String) -> Int = { _ in 0 }) throws -> (publisher: Publisher, advertised: String) {
        let access = access
        let curve = host.curve.map { curve in
            access.feedAllowList.map { CurveServerConfiguration(keyPair: curve.keyPair, allowList: $0) } ?? curve
        }
        let admits: (@Sendable (String, String?) -> Bool)? = access.enforcing
            ? { @Sendable topic, key in access.admitsSubscription(topic: topic, key: key) } : nil
        let publisher = try Publisher(
            endpoint: feed.eventsListen ?? environmentValue(kind.eventsVariable) ?? kind.defaultEventsEndpoint,
            curve: curve, admits: admits, keepsRecent: keepsRecent, logger: logger)
        let advertised = feed.eventsAdvertise ?? environmentValue(kind.eventsVariable + "_ADVERTISE") ?? publisher.endpoint
        logger.info("feed", metadata: ["endpoint": "\(publisher.endpoint)", "advertised": "\(advertised)"])
        return (publisher, advertised)
    }

    /// Serves `handlers` plus `Health` (with the database among its checks) and `Metrics`, every method behind
    /// access control, next to the migrations, the access list's reloads, the audit log and `services`, until
    /// SIGTERM/SIGINT. `Health` names `eventsEndpoint`, the feed's endpoint as `publisher` advertises it (empty:
    /// no feed).
    public func run(
        handlers: RPCHandlers = RPCHandlers(), checks: [HealthCheck] = [], role: @autoclosure @escaping @Sendable () -> String = "active",
        services: [any Service] = [], eventsEndpoint: String = ""
    ) async throws {
        let access = access
        let configured: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: MigrationService(store: store, schema: schema, logger: logger), successTerminationBehavior: .ignore),
            // Without CURVE the access list has nothing to reload and returns at once; that ends nothing else.
            .init(service: access, successTerminationBehavior: .ignore),
            .init(service: audit),
        ] + services.map { .init(service: $0) }
        defer { store.shutdown() }
        try await host.serve(
            handlers: handlers, checks: [databaseCheck(store)] + checks, role: role, services: configured,
            eventsEndpoint: eventsEndpoint,
            gate: { [schema] method, body, context, next in
                // Until this process has seen the schema migrated, every method but Health and Metrics is
                // UNAVAILABLE (a retry's answer), never a query on tables that are not there yet.
                guard schema.version >= Schema.latestVersion || CommonMethods.all.contains(method) else {
                    throw RPCError.unavailable("the database schema is not migrated yet (\(schema.version) of \(Schema.latestVersion)); retry")
                }
                return try await access.gate(method: method, body: body, context: context, next: next)
            })
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

