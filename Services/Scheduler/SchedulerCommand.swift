import ArgumentParser
import Core
import Protocol
import RPC
import ClientKit
import ControlPlane
import Hosting

/// `sigma-scheduler`: Sigma's scheduler: nodes, apps, instances, placement, failure detection and migration.
/// Every replica serves the API and publishes assignments; the holder of the lease also places and heals.
@main
struct SchedulerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-scheduler",
        abstract: "Sigma's scheduler: nodes, apps, instances, placement, failure detection and migration.")

    @OptionGroup var options: ServiceOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var client: ClientOptions

    @Option(help: "Allocator endpoints, comma-separated. [SIGMA_ALLOCATOR]")
    var allocator: String?

    @OptionGroup var feed: FeedOptions

    @Option(help: "Seconds between an agent's heartbeats.")
    var heartbeatInterval: Double = 1

    @Option(help: "Seconds without a heartbeat before a node is Suspect.")
    var suspectAfter: Double = 2

    @Option(help: "Seconds without a heartbeat before a node is Broken and its instances move.")
    var brokenAfter: Double = 5

    @Option(help: "Seconds a node's lease lasts after each accepted heartbeat: its safe-mode instances are killed when it lapses, and replaced elsewhere only once it certainly has. Default: --broken-after.")
    var nodeLease: Double?

    @Option(help: "Seconds added to a node's lease (stretched by 1 % for clock drift) before the scheduler counts a lapsed node's safe-mode copies as gone: the monitor's poll and kill, and any stall of the node.")
    var nodeLeaseMargin: Double = 1

    @Option(help: "Seconds the active scheduler's lease lasts; a standby takes over within about this long.")
    var leaseDuration: Double = 3

    @Option(help: "Seconds between the active scheduler's passes (placement also starts at once on new work).")
    var passInterval: Double = 0.5

    @Option(help: "Hours events are kept (sigmactl get events, describe); older ones are deleted. 0 keeps them all.")
    var eventsRetention: Double = 168

    @Option(help: "Hours audit log entries are kept (sigmactl audit); older ones are deleted. 0 keeps them all.")
    var auditRetention: Double = 720

    @Option(help: "Hours ended rollouts are kept (sigmactl rollout list); each app's newest \(RolloutsTable.keptPerApp) and its last that succeeded always stay. 0 keeps them all.")
    var rolloutRetention: Double = 2160

    @Option(help: "Hours the volumes of a deleted app, or of an ordinal scaled away, are kept on their nodes (an app applied or scaled up again meanwhile finds them).")
    var volumeRetention: Double = 24

    @Option(help: "Seconds between the usage history's samples of every Running instance and pool group (sigmactl recommend). 0 keeps no history.")
    var usageInterval: Double = 60

    @Option(help: "Hours the usage history's hourly rows are kept.")
    var usageRetention: Double = 168

    @Option(help: "Seconds between this replica's writes of the instance usage heartbeats report (an instance's row is written at once only when its state, readiness, limit or the like changed).")
    var usageFlushInterval: Double = 5

    @Option(help: "Seconds between this replica's writes of when it last heard each steady node (one statement for all of them, renewing their leases); the leader adds it to --suspect-after and --broken-after. Default: 1, or a quarter of --node-lease if that is less.")
    var livenessFlushInterval: Double?

    /// The liveness flush interval in effect.
    var livenessFlush: Double { livenessFlushInterval ?? min(1, (nodeLease ?? brokenAfter) / 4) }

    func validate() throws {
        guard heartbeatInterval > 0, suspectAfter > 0, brokenAfter >= suspectAfter else {
            throw ValidationError("need --heartbeat-interval > 0 and 0 < --suspect-after <= --broken-after")
        }
        guard leaseDuration >= 0.3, passInterval > 0, passInterval < leaseDuration else {
            throw ValidationError("need --lease-duration >= 0.3 and 0 < --pass-interval < --lease-duration")
        }
        if let nodeLease { guard nodeLease >= 0.5 else { throw ValidationError("--node-lease: seconds, at least 0.5") } }
        guard nodeLeaseMargin >= 0.2 else { throw ValidationError("--node-lease-margin: seconds, at least 0.2") }
        guard nodeLease ?? brokenAfter > heartbeatInterval else {
            throw ValidationError("--node-lease (default --broken-after) must be longer than --heartbeat-interval: a shorter lease lapses between heartbeats")
        }
        guard eventsRetention >= 0 else { throw ValidationError("--events-retention: hours, 0 or more") }
        guard auditRetention >= 0 else { throw ValidationError("--audit-retention: hours, 0 or more") }
        guard rolloutRetention >= 0 else { throw ValidationError("--rollout-retention: hours, 0 or more") }
        guard volumeRetention >= 0 else { throw ValidationError("--volume-retention: hours, 0 or more") }
        guard usageInterval >= 0 else { throw ValidationError("--usage-interval: seconds, 0 or more") }
        guard usageRetention > 0 else { throw ValidationError("--usage-retention: hours, more than 0") }
        guard usageFlushInterval >= 0.05 else { throw ValidationError("--usage-flush-interval: seconds, at least 0.05") }
        guard livenessFlush >= 0.05, livenessFlush < (nodeLease ?? brokenAfter) / 2 else {
            throw ValidationError("--liveness-flush-interval: seconds, at least 0.05 and less than half of --node-lease (default --broken-after)")
        }
    }

    func run() async throws {
        let host = try ControlPlaneHost(kind: .scheduler, options: options, database: database)
        let store = host.store
        let logger = host.logger
        let allocatorEndpoints = allocator ?? environmentValue(ServiceKind.allocator.endpointVariable)
            ?? ServiceKind.allocator.defaultEndpoint
        let allocatorClient = try client.client(endpoints: allocatorEndpoints, timeout: .seconds(10), logger: logger)
        // The routes feed keeps its latest 4,096 events: an agent that missed a few fetches just those.
        let (publisher, advertised) = try host.publisher(feed, keepsRecent: { $0 == FeedTopics.routes ? 4096 : 0 })
        let lease = Lease(store: store, duration: .seconds(leaseDuration), logger: logger)
        let usageBuffer = InstanceUsageBuffer()
        let grants = NodeLease(ttlMillis: Upkeep.millis(nodeLease ?? brokenAfter), marginMillis: Upkeep.millis(nodeLeaseMargin))
        let liveness = NodeLiveness(ttlMillis: grants.ttlMillis, flushInterval: .seconds(livenessFlush))
        let nodes = Nodes(store: store, allocator: allocatorClient, eventsEndpoint: advertised,
                          heartbeatInterval: .seconds(heartbeatInterval), brokenAfter: .seconds(brokenAfter),
                          lease: grants, reports: StatusReports(usage: usageBuffer), liveness: liveness, logger: logger)
        let apps = Apps(store: store, logger: logger)
        let instances = Instances(store: store, logger: logger)
        // What the leader reads was persisted up to one liveness flush ago.
        let thresholds = NodeHealth.Thresholds(suspectAfter: suspectAfter + livenessFlush, brokenAfter: brokenAfter + livenessFlush)

        let usage = UsageHistory(store: store, lease: lease, interval: .seconds(usageInterval), retention: usageRetention * 3600, logger: logger)
        var handlers = RPCHandlers()
        handlers.register(SchedulerMethods.recommendResources) { request, _ in try await usage.recommend(request, apps: apps) }
        Self.register(&handlers, nodes: nodes)
        Self.register(&handlers, apps: apps)
        Self.register(&handlers, instances: instances, apps: apps, store: store, publisher: publisher)
        AccessAdmin.register(&handlers, store: store)

        let leader = Leader(
            store: store, lease: lease,
            upkeep: Upkeep(store: store, allocator: allocatorClient, lease: lease, thresholds: thresholds,
                           eventsRetention: eventsRetention * 3600, auditRetention: auditRetention * 3600,
                           rolloutRetention: rolloutRetention * 3600,
                           nodeLeaseMarginMillis: Upkeep.millis(nodeLeaseMargin), volumeRetention: volumeRetention * 3600, logger: logger),
            rollouts: Rollouts(store: store, lease: lease, apps: apps, logger: logger),
            placement: Placement(store: store, allocator: allocatorClient, lease: lease, logger: logger),
            usage: usage,
            interval: .seconds(passInterval), logger: logger)
        let feed = AssignmentFeed(store: store, publisher: publisher, logger: logger)
        let usageWriter = InstanceUsageWriter(buffer: usageBuffer, store: store, interval: .seconds(usageFlushInterval), logger: logger)
        let livenessWriter = NodeLivenessWriter(liveness: liveness, store: store, interval: .seconds(livenessFlush), logger: logger)
        try await host.run(handlers: handlers, role: lease.role, services: [feed, leader, usageWriter, livenessWriter], eventsEndpoint: advertised)
    }

    static func node(_ node: Sigma_V1_Node) throws -> Sigma_V1_NodeResponse {
        var response = Sigma_V1_NodeResponse()
        response.node = node
        return response
    }
}
