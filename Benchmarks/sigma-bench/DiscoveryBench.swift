import ArgumentParser
import DiscoveryClient
import Foundation
import Logging
import Protocol
import RPC
import Store

/// `sigma-bench discovery`: `Resolve` latency (1 client) and throughput (64 clients) through the
/// `DiscoveryClient` library, as service code looks up its peers, against a real sigma-discovery serving an app
/// of 10 instances from memory, next to a raw libzmq REQ/REP round trip with a payload of the same size.
struct DiscoveryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "discovery", abstract: "Discovery lookups: p50/p99 with 1 client, lookups/s with 64 clients, vs raw libzmq.")

    @Option(help: "PostgreSQL to use (a scratch database is made and dropped). [SIGMA_DATABASE_URL]") var databaseURL: String?
    @Option(help: "Lookups timed with one client (after a warm-up of a tenth as many).") var calls = 20_000
    @Option(help: "Concurrent callers for the throughput figure.") var clients = 64
    @Option(help: "Connections they share (each an RPCClient with its own socket thread).") var connections = 1
    @Option(help: "Seconds the throughput run lasts.") var seconds = 3.0
    @Option(help: "Instances of the looked-up app.") var instances = 10
    @Option(help: "Apps deleted one by one for the delete → NOT_FOUND figure.") var deletes = 20
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try output.emit(try await measure())
    }

    func measure() async throws -> Report {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        return try await withScratchDatabase(databaseURL, logger: logger) { url in
            try await measure(url: url, logger: logger)
        }
    }

    func measure(url: String, logger: Logger) async throws -> Report {
        let store = Store(configuration: StoreConfiguration(url: url), logger: logger)
        defer { store.shutdown() }
        try await store.migrate()
        try await seed(store)

        let discovery = try BenchProcess("sigma-discovery", [
            "--listen", "tcp://127.0.0.1:*", "--events-listen", "tcp://127.0.0.1:*", "--database-url", url, "--log-level", "error",
        ])
        defer { discovery.stop() }
        let endpoint = try await discovery.endpoint()
        let client = try DiscoveryClient(endpoints: [endpoint], timeout: .seconds(30), logger: logger)
        defer { client.close() }
        let first = try await client.resolve("bench")
        guard first.endpoints.count == instances else { throw ValidationError("expected \(instances) endpoints, got \(first.endpoints.count)") }
        var answer = Sigma_V1_ResolveResponse()
        answer.app = "bench"
        answer.index = first.index
        answer.endpoints = first.endpoints
        let answerBytes = (try answer.serializedBytes() as [UInt8]).count

        let raw = RawBaseline.roundTrips(count: calls, payloadBytes: answerBytes)
        for _ in 0..<(calls / 10) { _ = try await client.resolve("bench") }
        // As latency-minded service code runs its lookups: on the client's executor (no thread hand-off).
        let samples = try await withTaskExecutorPreference(client.executor) {
            try await sampleMicroseconds(calls) { _ = try await client.resolve("bench") }
        }
        let fromPool = try await sampleMicroseconds(calls) { _ = try await client.resolve("bench") }
        let rawRate = 1e6 / (raw.reduce(0, +) / Double(raw.count))

        // 64 callers over one connection by default, as in `sigma-bench rpc`: 64 connections in one process would
        // mean 128 socket threads on this 2-core machine.
        let pool = try (0..<connections).map { _ in try DiscoveryClient(endpoints: [endpoint], timeout: .seconds(30), logger: logger) }
        defer { pool.forEach { $0.close() } }
        let rate = try await callsPerSecond(callers: clients, seconds: seconds) { caller in
            _ = try await pool[caller % pool.count].resolve("bench")
        }

        let latencies = try await deleteLatencies(store, client)
        let gone = latencies.gone.sorted(), changed = latencies.changed.sorted()

        var report = Report(title: "sigma-bench discovery")
        report.figures = [
            Figure(name: "discovery_lookup_p50_1_client", value: percentile(samples, 0.5), unit: "µs",
                   baseline: percentile(raw, 0.5), target: .maxRatio(2)),
            Figure(name: "discovery_lookup_p50_1_client_from_pool", value: percentile(fromPool, 0.5), unit: "µs",
                   baseline: percentile(raw, 0.5), target: .none),
            Figure(name: "discovery_lookup_p99_1_client", value: percentile(samples, 0.99), unit: "µs",
                   baseline: percentile(raw, 0.99), target: .maxValue(500)),
            Figure(name: "discovery_lookups_\(clients)_clients", value: rate, unit: "lookups/s", baseline: rawRate,
                   target: .minValue(30_000)),
            Figure(name: "discovery_delete_to_not_found_p50", value: percentile(gone, 0.5), unit: "ms",
                   baseline: percentile(changed, 0.5), target: .maxValue(1000)),
            Figure(name: "discovery_delete_to_not_found_max", value: gone.max() ?? 0, unit: "ms",
                   baseline: changed.max() ?? 0, target: .maxValue(1000)),
        ]
        report.notes = [
            "1 client: a loop of lookups on the client's executor (withTaskExecutorPreference(client.executor)); _from_pool: the same loop resumed on Swift's cooperative pool, two thread hand-offs more",
            "lookups through DiscoveryClient (it skips decoding an answer identical to its last one); an app of \(instances) instances (answer \(answerBytes) bytes) served from memory; baseline: raw libzmq REQ/REP over loopback with a \(answerBytes)-byte payload, \(calls) round trips",
            "throughput: \(clients) concurrent callers over \(connections) connections for \(seconds) s; its baseline is the raw loop's rate with one caller",
            "delete: \(deletes) apps of 3 instances, each with a blocking query waiting on it; from the commit of the delete to the query waking with NOT_FOUND; baseline: the same wait woken by a change of one of the app's instances",
        ]
        return report
    }

    /// Milliseconds from an app's delete to its blocking query's NOT_FOUND, and from an instance change to the
    /// same query's answer, `deletes` times each.
    func deleteLatencies(_ store: Store, _ client: DiscoveryClient) async throws -> (gone: [Double], changed: [Double]) {
        var gone: [Double] = [], changed: [Double] = []
        for round in 0..<deletes {
            let name = "gone-\(round)"
            let spec = #"{"name":"\#(name)"}"#
            try await store.execute("INSERT INTO apps (name, spec) VALUES ($1, $2::jsonb)", name, spec)
            try await store.execute("INSERT INTO app_revisions (app, revision, spec) VALUES ($1, 1, $2::jsonb)", name, spec)
            try await store.execute(
                """
                INSERT INTO instances (app, ordinal, node, state, generation, ip, ready)
                SELECT $1, g, 'node-' || g, 'Running', 1, '100.65.' || $2::int || '.' || (g + 2), true FROM generate_series(0, 2) g
                """, name, round)
            let known = try await client.resolve(name)
            // The waiter is asked first; a moment later the change is committed and the clock starts.
            let change = Task { try await client.waitForChange(name, after: known.index, timeout: .seconds(10)) }
            try await Task.sleep(for: .milliseconds(50))
            var started = ContinuousClock.now
            try await store.execute("UPDATE instances SET ready = false WHERE app = $1 AND ordinal = 0", name)
            let after = try await change.value
            changed.append(milliseconds(ContinuousClock.now - started))
            let deleted = Task { () -> Bool in
                do {
                    _ = try await client.waitForChange(name, after: after.index, timeout: .seconds(10))
                    return false
                } catch let error as RPCError where error.code == .notFound {
                    return true
                }
            }
            try await Task.sleep(for: .milliseconds(50))
            started = ContinuousClock.now
            try await store.execute("UPDATE apps SET deleted = true WHERE name = $1", name)
            guard try await deleted.value else { throw ValidationError("\(name): its blocking query did not end NOT_FOUND") }
            gone.append(milliseconds(ContinuousClock.now - started))
        }
        return (gone, changed)
    }

    func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    /// An app with `instances` Running instances on as many nodes, as the scheduler leaves them.
    func seed(_ store: Store) async throws {
        try await store.execute(
            """
            INSERT INTO nodes (name, host_ip, idc, cpu_millis, memory_bytes, disk_bytes)
            SELECT 'node-' || g, ('198.18.0.' || (g + 1))::inet, 'idc-' || (g % 2), 8000, 8589934592, 0 FROM generate_series(0, $1::int - 1) g
            """, instances)
        let spec = #"{"name":"bench","ports":[{"name":"http","containerPort":8080,"protocol":"tcp"}]}"#
        try await store.execute("INSERT INTO apps (name, spec) VALUES ('bench', $1::jsonb)", spec)
        try await store.execute("INSERT INTO app_revisions (app, revision, spec) VALUES ('bench', 1, $1::jsonb)", spec)
        try await store.execute(
            """
            INSERT INTO instances (app, ordinal, node, state, generation, ip, ready)
            SELECT 'bench', g, 'node-' || g, 'Running', 1, '100.64.0.' || (g + 2), true FROM generate_series(0, $1::int - 1) g
            """, instances)
    }
}
