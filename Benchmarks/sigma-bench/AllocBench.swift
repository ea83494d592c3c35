import ArgumentParser
import Foundation
import Logging
import Protocol
import RPC
import Store

#if canImport(Glibc)
import Glibc
#endif

/// `sigma-bench alloc`: IP allocations per second with 2 allocators and 16 callers, one at a time and in
/// batches, next to one plain INSERT per transaction on the same PostgreSQL in the same run.
struct AllocBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alloc", abstract: "IP allocation rate and p99 (2 allocators, 16 callers) vs plain INSERTs.")

    @Option(help: "PostgreSQL to use (a scratch database is made and dropped). [SIGMA_DATABASE_URL]") var databaseURL: String?
    @Option(help: "Concurrent callers.") var callers = 16
    @Option(help: "Single allocations per caller.") var singles = 250
    @Option(help: "Batches per caller.") var batches = 20
    @Option(help: "Instances per batch.") var batchSize = 100
    @Option(help: "Rounds the baseline and the single allocations take turns in.") var rounds = 4
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard callers >= 1, singles >= 1, batches >= 1, batchSize >= 1, rounds >= 1 else {
            throw ValidationError("callers, singles, batches, batch size and rounds must each be at least 1")
        }
    }

    func run() async throws {
        try output.emit(try await measure())
    }

    func measure() async throws -> Report {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        return try await withScratchDatabase(databaseURL, logger: logger) { benchURL in
            try await measure(benchURL: benchURL, logger: logger)
        }
    }

    func measure(benchURL: String, logger: Logger) async throws -> Report {
        var configuration = StoreConfiguration(url: benchURL)
        configuration.poolSize = callers
        let store = Store(configuration: configuration, logger: logger)
        defer { store.shutdown() }
        try await store.migrate()
        let singleCount = callers * singles
        let batchCount = callers * batches * batchSize
        try await store.execute("INSERT INTO apps (name) VALUES ('bench')")
        let ids = try await store.query(
            "INSERT INTO instances (app, ordinal) SELECT 'bench', g FROM generate_series(0, $1::int - 1) g RETURNING id::text AS id",
            singleCount + batchCount
        ).map { try $0.decode(String.self, "id") }

        try await store.execute("CREATE TABLE bench_baseline (id bigserial PRIMARY KEY, instance uuid NOT NULL, at timestamptz DEFAULT now())")

        let allocators = try (0..<2).map { _ in try BenchProcess("sigma-allocator", ["--listen", "tcp://127.0.0.1:*", "--database-url", benchURL, "--db-pool-size", "\(callers)", "--log-level", "error"]) }
        defer { allocators.forEach { $0.stop() } }
        var endpoints: [String] = []
        for process in allocators { endpoints.append(try await process.endpoint()) }
        var clientConfiguration = RPCClientConfiguration(endpoints: endpoints)
        clientConfiguration.defaultTimeout = .seconds(60)
        let client = try RPCClient(configuration: clientConfiguration, logger: logger)
        try await waitHealthy(client)
        var pool = Sigma_V1_CreateIPPoolRequest()
        (pool.pool.name, pool.pool.cidr) = ("bench", "100.64.0.0/16")
        _ = try await client.call(AllocatorMethods.createIPPool, pool)
        // As pgbench does before it measures: the rows just made vacuumed and analyzed now, so that autovacuum
        // does not wake in the middle of one side of the comparison.
        try await store.execute("VACUUM ANALYZE")

        // The baseline (one plain INSERT per transaction, same callers, same database) and the single
        // allocations take turns, a slice of each per round, so that a slow moment of the machine falls on both.
        var baselineRounds: [Timing] = []
        var singleRounds: [Timing] = []
        for round in 0..<rounds {
            let slice = (singles * round / rounds)..<(singles * (round + 1) / rounds)
            baselineRounds.append(try await timed(callers: callers, indices: slice) { caller, index in
                try await store.execute("INSERT INTO bench_baseline (instance) VALUES ($1::uuid)", ids[caller * singles + index])
            })
            // The callers run on the client's executor: on this 2-core machine every thread wake the bench saves
            // is CPU that PostgreSQL and the allocators get.
            singleRounds.append(try await withTaskExecutorPreference(client.executor) {
                try await timed(callers: callers, indices: slice) { caller, index in
                    var request = Sigma_V1_AllocateIPsRequest()
                    request.instanceIds = [ids[caller * singles + index]]
                    _ = try await client.call(AllocatorMethods.allocateIPs, request)
                }
            })
        }
        let baseline = Timing(combining: baselineRounds)
        let single = Timing(combining: singleRounds)
        let batched = try await timed(callers: callers, indices: 0..<batches) { caller, index in
            let start = singleCount + (caller * batches + index) * batchSize
            var request = Sigma_V1_AllocateIPsRequest()
            request.instanceIds = Array(ids[start..<(start + batchSize)])
            _ = try await client.call(AllocatorMethods.allocateIPs, request)
        }
        let allocated = try await store.query("SELECT count(*) AS n, count(DISTINCT instance) AS d FROM ip_addresses WHERE instance IS NOT NULL")[0]
        let total = try allocated.decode(Int.self, "n")
        guard total == singleCount + batchCount, try allocated.decode(Int.self, "d") == total else {
            throw ValidationError("allocation check failed: \(total) rows for \(singleCount + batchCount) instances")
        }

        var report = Report(title: "sigma-bench alloc (2 allocators, \(callers) callers)")
        report.figures = [
            Figure(name: "alloc_ip_single_rate", value: single.rate, unit: "IPs/s", baseline: baseline.rate, target: .minRatio(0.5)),
            Figure(name: "alloc_ip_single_p99", value: single.p99 * 1000, unit: "ms", baseline: baseline.p99 * 1000, target: .none),
            Figure(name: "alloc_ip_batched_rate", value: batched.rate * Double(batchSize), unit: "IPs/s", baseline: baseline.rate,
                   target: .minValue(10_000)),
            Figure(name: "alloc_ip_batch_p99", value: batched.p99 * 1000, unit: "ms", baseline: baseline.p99 * 1000, target: .none),
        ]
        report.notes = [
            "baseline: one INSERT per transaction (autocommit) from \(callers) callers on the same PostgreSQL, \(singleCount) rows, in \(rounds) rounds taking turns with the single allocations",
            "single: \(singleCount) AllocateIPs calls of 1 instance; batched: \(callers * batches) calls of \(batchSize); all checked unique afterwards",
        ]
        client.close()
        return report
    }

    struct Timing {
        var samples: [Double]
        var seconds: Double

        var rate: Double { Double(samples.count) / seconds }
        var p99: Double { percentile(samples.sorted(), 0.99) }

        init(samples: [Double], seconds: Double) {
            self.samples = samples
            self.seconds = seconds
        }

        /// Several timed rounds as one: all their operations over all their time.
        init(combining rounds: [Timing]) {
            self.init(samples: rounds.flatMap(\.samples), seconds: rounds.reduce(0) { $0 + $1.seconds })
        }
    }

    /// Runs `body` `perCaller` times in each of `callers` tasks; operations per second and p99 seconds.
    func timed(callers: Int, perCaller: Int, _ body: @escaping @Sendable (Int, Int) async throws -> Void) async throws -> Timing {
        try await timed(callers: callers, indices: 0..<perCaller, body)
    }

    /// Runs `body(caller, index)` for every index in each of `callers` tasks.
    func timed(callers: Int, indices: Range<Int>, _ body: @escaping @Sendable (Int, Int) async throws -> Void) async throws -> Timing {
        let started = ContinuousClock.now
        let samples = try await withThrowingTaskGroup(of: [Double].self) { group in
            for caller in 0..<callers {
                group.addTask {
                    var mine: [Double] = []
                    for index in indices {
                        let t = ContinuousClock.now
                        try await body(caller, index)
                        let d = ContinuousClock.now - t
                        mine.append(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [Double]()) { $0 += $1 }
        }
        let elapsed = ContinuousClock.now - started
        return Timing(samples: samples, seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
}

/// A Sigma executable next to sigma-bench, started for a benchmark and stopped after it.
final class BenchProcess: @unchecked Sendable {
    let pid: pid_t
    let readyFile = NSTemporaryDirectory() + "sigma-bench-\(UUID().uuidString).ready"

    init(_ executable: String, _ arguments: [String]) throws {
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let path = directory + "/" + executable
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments + ["--ready-file", readyFile]).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, nil, nil, argv, environ)
        guard rc == 0 else { throw ValidationError("cannot start \(path) (errno \(rc)); build it first") }
        self.pid = pid
    }

    private init(pid: pid_t) { self.pid = pid }

    /// Any program (not a Sigma service: no ready file), stopped with `kill()`.
    static func detached(_ path: String, _ arguments: [String]) throws -> BenchProcess {
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, nil, nil, argv, environ)
        guard rc == 0 else { throw ValidationError("cannot start \(path) (errno \(rc))") }
        return BenchProcess(pid: pid)
    }

    func terminateNow() {
        Foundation.kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }

    func endpoint() async throws -> String {
        for _ in 0..<1500 {
            if let text = try? String(contentsOfFile: readyFile, encoding: .utf8), text.hasSuffix("\n") {
                return text.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ValidationError("allocator did not start within 30 s")
    }

    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        try? FileManager.default.removeItem(atPath: readyFile)
    }
}

/// Runs `body` with the URL of a scratch database made in `url`'s PostgreSQL, and drops it afterwards.
func withScratchDatabase<T>(_ url: String?, logger: Logger, _ body: (String) async throws -> T) async throws -> T {
    guard let url = url ?? ProcessInfo.processInfo.environment["SIGMA_DATABASE_URL"] else {
        throw ValidationError("pass --database-url or set SIGMA_DATABASE_URL")
    }
    let admin = Store(configuration: StoreConfiguration(url: url), logger: logger)
    defer { admin.shutdown() }
    let name = "sigma_bench_\(UInt32.random(in: 0...UInt32.max))"
    try await admin.execute("CREATE DATABASE \(name)")  // a generated identifier, digits only
    var components = URLComponents(string: url)!
    components.path = "/" + name
    do {
        let result = try await body(components.string!)
        try await admin.execute("DROP DATABASE \(name) WITH (FORCE)")
        return result
    } catch {
        _ = try? await admin.execute("DROP DATABASE \(name) WITH (FORCE)")
        throw error
    }
}

/// Waits (60 s at most) until `client`'s service says it is healthy: a control-plane service serves only once it
/// has seen its schema migrated.
func waitHealthy(_ client: RPCClient) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    while (try? await client.call(CommonMethods.health, .init(), timeout: .seconds(2)))?.healthy != true {
        guard ContinuousClock.now < deadline else { throw ValidationError("a service was not healthy within 60 s") }
        try await Task.sleep(for: .milliseconds(50))
    }
}
