import ArgumentParser
import Foundation
import Logging
import Protocol
import RPC
import Synchronization

/// `sigma-bench hollow`: N simulated agents (HollowNode) in this process over the real protocol against one
/// sigma-scheduler, one sigma-allocator and PostgreSQL, with the scheduler's default timeouts (heartbeat 1 s,
/// Suspect after 2 s, Broken after 5 s). Phases: the empty nodes at rest (heartbeat p50/p99, flaps, CPU);
/// with --instances, an apply of nodes × instances (apply → all Running, each instance's time to Running),
/// then at rest again, then 10 % of the nodes silenced (their instances Running elsewhere with the same IPs,
/// healthy nodes that flapped), then the apps deleted (→ every node empty). CPU is each process's own
/// (/proc/PID/stat), the simulator's included, so that a limit of the simulator is not read as the scheduler's.
struct HollowBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hollow", abstract: "Simulated agents at scale: heartbeat latency, flaps, CPU, deploys and failover.")

    @Option(help: "PostgreSQL to use (a scratch database is made and dropped). [SIGMA_DATABASE_URL]") var databaseURL: String?
    @Option(help: "Simulated nodes.") var nodes = 200
    @Option(help: "Instances per node deployed (0: only the empty nodes' phase).") var instances = 0
    @Option(help: "Seconds each phase at rest is measured.") var seconds = 20.0
    @Option(help: "Percent of the nodes silenced in the failover phase.") var silence = 10
    @Option(help: ArgumentHelp("A flag for sigma-scheduler (repeatable), e.g. --scheduler-flag=--usage-flush-interval=1.", valueName: "flag"))
    var schedulerFlag: [String] = []
    @OptionGroup var output: OutputOptions

    func run() async throws { try output.emit(try await measure()) }

    func measure() async throws -> Report {
        guard nodes >= 10, instances >= 0, seconds >= 1, (1...50).contains(silence) else {
            throw ValidationError("need --nodes ≥ 10, --seconds ≥ 1, --silence 1…50")
        }
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        return try await withScratchDatabase(databaseURL, logger: logger) { url in
            let allocator = try BenchProcess("sigma-allocator", ["--listen", "tcp://127.0.0.1:*", "--database-url", url, "--log-level", "error"])
            defer { allocator.stop() }
            let allocatorEndpoint = try await allocator.endpoint()
            let scheduler = try BenchProcess("sigma-scheduler", [
                "--listen", "tcp://127.0.0.1:*", "--events-listen", "tcp://127.0.0.1:*", "--database-url", url,
                "--allocator", allocatorEndpoint, "--log-level", ProcessInfo.processInfo.environment["SIGMA_BENCH_LOG_LEVEL"] ?? "error",
            ] + schedulerFlag)
            defer { scheduler.stop() }
            var configuration = RPCClientConfiguration(endpoints: [try await scheduler.endpoint()])
            configuration.defaultTimeout = .seconds(60)
            let client = try RPCClient(configuration: configuration, logger: logger)
            defer { client.close() }
            var pools = RPCClientConfiguration(endpoints: [allocatorEndpoint])
            pools.defaultTimeout = .seconds(60)
            let allocatorClient = try RPCClient(configuration: pools, logger: logger)
            defer { allocatorClient.close() }
            // Both serve only once they have seen the schema migrated (Health says when).
            for service in [allocatorClient, client] { try await waitHealthy(service) }
            for index in 0..<max(1, (nodes * instances + 65_000) / 65_000) {
                var pool = Sigma_V1_CreateIPPoolRequest()
                (pool.pool.name, pool.pool.cidr) = ("hollow-\(index)", "100.\(64 + index).0.0/16")
                _ = try await allocatorClient.call(AllocatorMethods.createIPPool, pool)
            }
            let run = HollowRun(client: client, nodes: (0..<nodes).map(HollowNode.init(index:)), logger: logger,
                                watched: ["scheduler": scheduler.pid, "allocator": allocator.pid])
            return try await run.measure(instances: instances, seconds: seconds, silencePercent: silence)
        }
    }
}

/// What happens in one `sigma-bench hollow` run.
final class HollowRun: Sendable {
    let client: RPCClient
    let nodes: [HollowNode]
    let logger: Logger
    let watched: [String: pid_t]
    let interval = Duration.seconds(1)
    /// Heartbeat latencies (ms) recorded while `recording`.
    let latencies = Mutex<(recording: Bool, values: [Double])>((false, []))

    init(client: RPCClient, nodes: [HollowNode], logger: Logger, watched: [String: pid_t]) {
        (self.client, self.nodes, self.logger, self.watched) = (client, nodes, logger, watched)
    }

    final class HeartbeatTasks: Sendable {
        private let tasks = Mutex<[Task<Void, Never>]>([])
        func add(_ task: Task<Void, Never>) { tasks.withLock { $0.append(task) } }
        func cancelAll() { tasks.withLock { $0.forEach { $0.cancel() } } }
    }

    /// The node's heartbeats, from now on until cancelled.
    func beat(_ node: HollowNode) -> Task<Void, Never> {
        Task { await node.heartbeats(client, every: interval, offset: .zero) { self.record($0) } }
    }

    func measure(instances: Int, seconds: Double, silencePercent: Int) async throws -> Report {
        // Each node heartbeats from its registration on, as sigma-agent does: had they all waited for the last
        // (6.5 s for 5,000), the first would have been Broken before their first heartbeat.
        let registering = ContinuousClock.now
        let beating = HeartbeatTasks()
        defer { beating.cancelAll() }
        let endpoints = try await withThrowingTaskGroup(of: String.self) { group in
            for slice in 0..<16 {
                group.addTask {
                    var endpoint = ""
                    for node in self.nodes where node.index % 16 == slice {
                        endpoint = try await node.register(self.client)
                        beating.add(self.beat(node))
                    }
                    return endpoint
                }
            }
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        let registered = ContinuousClock.now - registering
        guard let endpoint = endpoints.first(where: { !$0.isEmpty }) else { throw ValidationError("no events endpoint from RegisterNode") }
        let feed = try follow(endpoint)
        defer { feed.close() }
        var report = Report(title: "sigma-bench hollow (\(nodes.count) simulated nodes, heartbeat 1 s, \(instances) instances per node)")
        report.notes = ["\(nodes.count) nodes registered in \(format(milliseconds(registered) / 1000)) s (16 at a time)"]
        try await Task.sleep(for: .seconds(5))  // every node has beaten a few times
        report.figures += try await atRest("empty nodes", seconds: seconds)
        if instances > 0 {
            let placed = try await deploy(instances: instances, report: &report)
            report.figures += try await atRest("\(nodes.count * instances) instances", seconds: seconds)
            report.figures += try await silenceSome(percent: silencePercent, placed: placed, report: &report)
            report.figures += try await teardown()
        }
        report.notes.append("CPU: percent of one core over the phase, from /proc/PID/stat; PostgreSQL: every postgres process")
        report.notes.append("baseline column: for heartbeats, the scheduler's Health round trip every 50 ms in the same phase; for CPU, the simulator's own")
        return report
    }

    func record(_ took: Duration) {
        latencies.withLock { if $0.recording { $0.values.append(milliseconds(took)) } }
    }

    /// One subscriber for every node's assignment topic, each change handed to its node (the snapshot first).
    func follow(_ endpoint: String) throws -> Subscriber {
        let byTopic = Dictionary(uniqueKeysWithValues: nodes.map { (FeedTopics.node($0.name), $0) })
        let subscriber = try Subscriber(endpoints: [endpoint], topics: Array(byTopic.keys), logger: logger) { [self] topic in
            let snapshot = try await assignments(of: byTopic[topic]?.name ?? "")
            return EventSnapshot(sequence: snapshot.sequence, epoch: snapshot.feedEpoch, payload: try snapshot.serializedBytes())
        }
        Task { [self] in
            for await event in subscriber.events {
                switch event {
                case .snapshot(let topic, _, let payload):
                    if let snapshot = try? Sigma_V1_GetAssignmentsResponse(serializedBytes: payload) { byTopic[topic]?.replace(snapshot.assignments) }
                case .update(let topic, _, let payload):
                    guard let node = byTopic[topic] else { continue }
                    if payload.isEmpty {
                        if let snapshot = try? await assignments(of: node.name) { node.replace(snapshot.assignments) }
                    } else if let change = try? Sigma_V1_AssignmentEvent(serializedBytes: payload) {
                        node.apply(change)
                    }
                }
            }
        }
        return subscriber
    }

    func assignments(of node: String) async throws -> Sigma_V1_GetAssignmentsResponse {
        var get = Sigma_V1_GetAssignmentsRequest()
        get.node = node
        return try await client.call(SchedulerMethods.getAssignments, get)
    }
}
