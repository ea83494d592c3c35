import ArgumentParser
import Foundation
import Logging
import Protocol
import RPC
import Store

/// `sigma-bench bind`: placements per second end to end — decision and persisted binding (IP from the
/// Allocator, instance row, event, assignment notification) — by a real sigma-scheduler over 1,000, 5,000 and
/// 10,000 nodes, each size in a scratch database of its own.
/// Baseline: one plain INSERT per transaction from 16 callers, same PostgreSQL, same run.
struct BindBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bind", abstract: "Placements/s with persisted binding (1,000-10,000 nodes) vs plain INSERTs.")

    @Option(help: "PostgreSQL to use (a scratch database is made and dropped). [SIGMA_DATABASE_URL]") var databaseURL: String?
    @Option(help: "Cluster sizes (simulated nodes).") var nodes: [Int] = [1_000, 5_000, 10_000]
    @Option(help: "Apps applied.") var apps = 40
    @Option(help: "Replicas per app.") var replicas = 1_000
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try output.emit(try await measure())
    }

    func measure() async throws -> Report {
        var report = Report(title: "sigma-bench bind (\(apps) apps × \(replicas) at \(nodes.map(String.init).joined(separator: ", ")) nodes)")
        for size in nodes {
            let one = try await measure(nodes: size)
            report.figures += one.figures
            report.notes += one.notes
        }
        report.notes.append("baseline: one INSERT per transaction from 16 callers on the same PostgreSQL")
        return report
    }

    func measure(nodes: Int) async throws -> Report {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        return try await withScratchDatabase(databaseURL, logger: logger) { benchURL in
            try await measure(nodes: nodes, benchURL: benchURL, logger: logger)
        }
    }

    func measure(nodes: Int, benchURL: String, logger: Logger) async throws -> Report {
        var configuration = StoreConfiguration(url: benchURL)
        configuration.poolSize = 16
        let store = Store(configuration: configuration, logger: logger)
        defer { store.shutdown() }
        try await store.migrate()

        // Baseline first, on a quiet machine.
        try await store.execute("CREATE TABLE bench_baseline (id bigserial PRIMARY KEY, instance uuid NOT NULL, at timestamptz DEFAULT now())")
        let baseline = try await AllocBench.parse([]).timed(callers: 16, perCaller: 250) { _, _ in
            try await store.execute("INSERT INTO bench_baseline (instance) VALUES (gen_random_uuid())")
        }

        let allocator = try BenchProcess("sigma-allocator", ["--listen", "tcp://127.0.0.1:*", "--database-url", benchURL, "--log-level", "error"])
        defer { allocator.stop() }
        let allocatorEndpoint = try await allocator.endpoint()
        var clientConfiguration = RPCClientConfiguration(endpoints: [allocatorEndpoint])
        clientConfiguration.defaultTimeout = .seconds(120)
        let allocatorClient = try RPCClient(configuration: clientConfiguration, logger: logger)
        try await waitHealthy(allocatorClient)
        defer { allocatorClient.close() }
        var pool = Sigma_V1_CreateIPPoolRequest()
        (pool.pool.name, pool.pool.cidr) = ("bench", "100.64.0.0/16")
        _ = try await allocatorClient.call(AllocatorMethods.createIPPool, pool)

        // Nodes as registration leaves them, written directly (registering 5,000 agents is not what is measured).
        try await store.execute(
            """
            INSERT INTO nodes (name, host_ip, region, idc, isp, labels, cpu_millis, memory_bytes, disk_bytes, last_heartbeat)
            SELECT 'node-' || g, ('198.18.' || (g / 250) || '.' || (g % 250 + 1))::inet, 'r' || (g % 3), 'r' || (g % 3) || '-idc' || (g % 12 / 3),
                   CASE WHEN g % 2 = 0 THEN 'ct' ELSE 'cu' END,
                   jsonb_build_object('disk', CASE WHEN g % 3 = 0 THEN 'ssd' ELSE 'hdd' END),
                   (32 + 32 * (g % 3)) * 1000, (128::bigint << 30) * (1 + g % 3), 1::bigint << 40, now()
            FROM generate_series(0, $1::int - 1) AS g
            """, nodes)

        // Heartbeats are not simulated: thresholds far away keep the nodes Ready.
        let scheduler = try BenchProcess("sigma-scheduler", [
            "--listen", "tcp://127.0.0.1:*", "--events-listen", "tcp://127.0.0.1:*", "--database-url", benchURL,
            "--allocator", allocatorEndpoint, "--suspect-after", "3600", "--broken-after", "3600", "--log-level",
            ProcessInfo.processInfo.environment["SIGMA_BENCH_LOG_LEVEL"] ?? "error",
        ])
        defer { scheduler.stop() }
        clientConfiguration.endpoints = [try await scheduler.endpoint()]
        let client = try RPCClient(configuration: clientConfiguration, logger: logger)
        defer { client.close() }

        // Apps are applied while every node is cordoned, so the clock measures placement and binding alone.
        try await store.execute("UPDATE nodes SET schedulable = false")
        let total = apps * replicas
        for app in 0..<apps {
            var request = Sigma_V1_ApplyAppRequest()
            request.spec.name = "app-\(app)"
            request.spec.image = "host"
            request.spec.replicas = Int32(replicas)
            request.spec.resources.request.cpuMillis = Int64(50 * (1 + app % 5))
            request.spec.resources.request.memoryBytes = Int64(128 << 20) * Int64(1 + app % 4)
            if app % 3 == 0 {
                var requirement = Sigma_V1_LabelRequirement()
                requirement.key = "disk"
                requirement.operator = "In"
                requirement.values = ["ssd"]
                request.spec.nodeSelector = [requirement]
            }
            _ = try await client.call(SchedulerMethods.applyApp, request)
        }
        try await waitFor("every instance Pending with its reason") {
            try await store.query("SELECT count(*)::bigint AS n FROM instances WHERE pending_reason <> ''")[0].decode(Int.self, "n") == total
        }
        let started = ContinuousClock.now
        try await store.execute("UPDATE nodes SET schedulable = true")
        try await store.execute("SELECT pg_notify('sigma_pending', 'bench')")
        var scheduled = 0
        while scheduled < total {
            try await Task.sleep(for: .milliseconds(50))
            scheduled = try await store.query("SELECT count(*)::bigint AS n FROM instances WHERE state = 'Scheduled'")[0].decode(Int.self, "n")
            guard ContinuousClock.now - started < .seconds(600) else { throw ValidationError("only \(scheduled) of \(total) bound after 600 s") }
        }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18

        let check = try await store.query(
            """
            SELECT (SELECT count(DISTINCT ip) FROM instances WHERE ip <> '')::bigint AS ips,
                   (SELECT count(*) FROM instances WHERE node IS NULL)::bigint AS unbound,
                   (SELECT coalesce(max(skew), 0) FROM (
                       SELECT app, idc, max(n) - min(n) AS skew FROM (
                           SELECT a.app, n.idc, n.name, count(i.id) AS n FROM nodes n
                           CROSS JOIN (SELECT DISTINCT app FROM instances) a
                           LEFT JOIN instances i ON i.node = n.name AND i.app = a.app
                           WHERE a.app IN (SELECT name FROM apps WHERE spec -> 'nodeSelector' -> 'requirements' = '[]'::jsonb)
                           GROUP BY a.app, n.idc, n.name) per_node
                       GROUP BY app, idc) s)::bigint AS skew
            """)[0]
        guard try check.decode(Int.self, "ips") == total, try check.decode(Int.self, "unbound") == 0 else {
            throw ValidationError("binding check failed: \(try check.decode(Int.self, "ips")) distinct IPs for \(total) instances")
        }
        var report = Report(title: "")
        report.figures = [
            Figure(name: "schedule_persisted_\(nodes)_nodes", value: Double(total) / seconds, unit: "placements/s",
                   baseline: baseline.rate, target: nodes == 5_000 ? .minValue(5_000) : .none),
        ]
        report.notes = [
            "\(nodes) nodes: \(total) instances applied through ApplyApp onto cordoned nodes, then (clock starts) the nodes uncordoned and every instance bound by one sigma-scheduler (decision, IP from sigma-allocator, row, event, notification) in \(String(format: "%.2f", seconds)) s; every IP distinct; max node skew within an IDC for unconstrained apps: \(try check.decode(Int.self, "skew"))",
        ]
        return report
    }

    func waitFor(_ what: String, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(600)
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw ValidationError("timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
