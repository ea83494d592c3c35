import ArgumentParser
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC

/// `sigma-bench failover`: on three test hosts with the default heartbeat settings (1 s, Broken after 5 s, the
/// node lease as long), a host running an instance is killed; how long until its replacement runs elsewhere
/// and until it serves on its IP, in safe mode and in fast mode, over several runs; and what the copy checkers
/// (runc sampled every 100 ms, the monitors' journals) saw. Fast mode is the baseline safe mode pays against.
struct FailoverBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover", abstract: "Host killed → replacement running and serving, safe vs fast mode; copy overlap.")

    @Option(help: "PostgreSQL to use (a scratch database is made and dropped). [SIGMA_DATABASE_URL]") var databaseURL: String?
    @Option(help: "Runs per mode.") var runs = 5
    @Option(help: "The testbed script.") var testbed = "scripts/testbed"
    @OptionGroup var output: OutputOptions

    func run() async throws { try output.emit(try await measure()) }

    struct Run {
        var running: Double
        var serving: Double
        var sampledOverlaps: Int
        var journalOverlapMillis: Int64
    }

    func measure() async throws -> Report {
        guard getuid() == 0 else { throw ValidationError("sigma-bench failover needs root (namespaces, runc)") }
        return try await BenchTestbed.with(prefix: "bf", script: testbed, databaseURL: databaseURL) { bed in
            var results: [String: [Run]] = [:]
            for round in 0..<runs {
                for mode in ["safe", "fast"] {
                    // Every host up (the one killed last time comes back) and Ready.
                    _ = try await bed.up()
                    try await waitReady(bed.client, nodes: (1...3).map(bed.node))
                    results[mode, default: []].append(try await once(bed, mode: mode, app: "\(mode)-\(round)"))
                }
            }
            return report(results)
        }
    }

    /// One app instance placed; its host killed; timed until its replacement is Running and until it answers
    /// on its IP from another host.
    func once(_ testbed: BenchTestbed, mode: String, app: String) async throws -> Run {
        let client = testbed.client, bed = testbed.name
        var apply = Sigma_V1_ApplyAppRequest()
        apply.spec.name = app
        apply.spec.image = "host"
        apply.spec.command = ["/usr/bin/python3", "-c", NetBench.server, "0.0.0.0", "7000"]
        apply.spec.replicas = 1
        apply.spec.failover = mode
        apply.spec.resources.request.cpuMillis = 10
        apply.spec.resources.request.memoryBytes = 16 << 20
        _ = try await client.call(SchedulerMethods.applyApp, apply)
        let first = try await until(client, app, within: 120) { $0.state == "Running" }
        let struck = Int(first.node.split(separator: "h").last ?? "") ?? 0
        let witness = struck == 1 ? 2 : 1
        let roots = (1...3).map { "/run/sigma-testbed/\(bed)/h\($0)/state/runc" }
        let sampler = CopyChecker.Sampler(runcRoots: roots, instance: first.id)
        let sampling = Task { await sampler.run() }
        defer { sampling.cancel() }
        try await Task.sleep(for: .milliseconds(300))

        let killedAt = NodeLeaseFile.bootMillis()
        let killed = ContinuousClock.now
        _ = try await Subprocess.check(testbed.script, ["kill", "\(struck)"] + testbed.common)
        let moved = try await until(client, app, within: 120) { $0.state == "Running" && $0.node != first.node }
        let running = milliseconds(ContinuousClock.now - killed) / 1000
        let answering = try await Subprocess.run("/usr/bin/nsenter", [
            "--net=/run/netns/\(bed)-h\(witness)", "/usr/bin/python3", "-c", NetBench.poller, first.ip, "7000", moved.node, "120",
        ])
        guard answering.succeeded else { throw ValidationError("\(app) did not answer on \(first.ip) after the move") }
        let serving = milliseconds(ContinuousClock.now - killed) / 1000
        try await Task.sleep(for: .milliseconds(500))
        sampling.cancel()
        _ = await sampling.value
        var lives: [CopyChecker.Life] = []
        for host in 1...3 {
            let text = (try? String(contentsOfFile: "/run/sigma-testbed/\(bed)/h\(host)/state/copies.log", encoding: .utf8)) ?? ""
            lives += CopyChecker.lives(node: host, journal: text, instance: first.id,
                                       openUntil: host == struck ? killedAt : NodeLeaseFile.bootMillis())
        }
        var delete = Sigma_V1_AppRequest()
        delete.name = app
        _ = try await client.call(SchedulerMethods.deleteApp, delete)
        return Run(running: running, serving: serving, sampledOverlaps: sampler.overlaps, journalOverlapMillis: CopyChecker.longestOverlap(lives))
    }

    func until(_ client: RPCClient, _ app: String, within seconds: Int, _ done: (Sigma_V1_Instance) -> Bool) async throws -> Sigma_V1_Instance {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            var list = Sigma_V1_ListInstancesRequest()
            list.app = app
            if let instance = try await client.call(SchedulerMethods.listInstances, list).instances.first, done(instance) { return instance }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ValidationError("\(app): timed out")
    }

    func waitReady(_ client: RPCClient, nodes: [String]) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            let ready = try await client.call(SchedulerMethods.listNodes, .init()).nodes.filter { $0.health == "Ready" }.map(\.name)
            if Set(nodes).isSubset(of: Set(ready)) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ValidationError("the test hosts did not all turn Ready")
    }

    func report(_ results: [String: [Run]]) -> Report {
        let safe = results["safe"] ?? [], fast = results["fast"] ?? []
        func median(_ values: [Double]) -> Double { values.isEmpty ? 0 : values.sorted()[values.count / 2] }
        func range(_ values: [Double]) -> String {
            String(format: "%.1f–%.1f s", values.min() ?? 0, values.max() ?? 0)
        }
        var report = Report(title: "sigma-bench failover (3 test hosts, host killed, \(safe.count) runs per mode)")
        report.figures = [
            Figure(name: "safe: host killed → replacement Running (median)", value: median(safe.map(\.running)), unit: "s",
                   baseline: median(fast.map(\.running)), target: .maxValue(10)),
            Figure(name: "safe: host killed → replacement serving (median)", value: median(safe.map(\.serving)), unit: "s",
                   baseline: median(fast.map(\.serving)), target: .none),
            Figure(name: "safe: samples with two copies running", value: Double(safe.map(\.sampledOverlaps).reduce(0, +)), unit: "",
                   baseline: 0, target: .maxValue(0)),
            Figure(name: "safe: longest overlap in the monitors' journals", value: Double(safe.map(\.journalOverlapMillis).max() ?? 0),
                   unit: "ms", baseline: 0, target: .maxValue(0)),
            Figure(name: "fast: longest overlap in the monitors' journals", value: Double(fast.map(\.journalOverlapMillis).max() ?? 0),
                   unit: "ms", baseline: 0, target: .none),
        ]
        report.notes = [
            "baseline: fast mode, measured in the same run (the replacement starts as soon as it is placed)",
            "safe Running: \(range(safe.map(\.running))), serving: \(range(safe.map(\.serving))); fast Running: \(range(fast.map(\.running))), serving: \(range(fast.map(\.serving)))",
            "defaults: heartbeat 1 s, Broken after 5 s, node lease 5 s, margin 1 s: safe mode waits for TTL × 1.01 + 1 s after the last heartbeat",
            "a killed host takes its copy with it, so fast mode shows no overlap here either (a frozen agent's does: InstanceFailoverTests)",
        ]
        return report
    }
}
