import ArgumentParser
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC

/// `sigma-bench agent`: instance start latency on a real node — from the assignment reaching sigma-agent to
/// the instance's process running, node-local network (namespace, veth, address, route) included — with a
/// cached image, against a real scheduler and allocator. Baseline: a bare `runc run --detach` of the same root
/// filesystem and command, in the same run. Also the agent's and the monitors' memory with the instances up.
struct AgentBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent", abstract: "Instance start latency (assignment → running) vs a bare runc run; agent memory.")

    @Option(help: "PostgreSQL to use (a scratch database is made and dropped). [SIGMA_DATABASE_URL]") var databaseURL: String?
    @Option(help: "Instances started, one at a time.") var instances = 30
    @Option(help: "The script that builds the demo image.") var demoImageScript = "scripts/demo-image"
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try output.emit(try await measure())
    }

    static let command = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]

    func measure() async throws -> Report {
        guard getuid() == 0 else { throw ValidationError("sigma-bench agent needs root (runc, cgroups, namespaces)") }
        guard let runc = Subprocess.find("runc") else { throw ValidationError("runc is not installed") }
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let work = NSTemporaryDirectory() + "sigma-bench-agent-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let imageText = try await Subprocess.check(demoImageScript, [work + "/image"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let image = try ImageReference(parsing: imageText)

        let baseline = try await bareRuncRuns(runc: runc, image: image, work: work, logger: logger)
        let sigma = try await withScratchDatabase(databaseURL, logger: logger) { url in
            try await agentStarts(url: url, image: imageText, runc: runc, work: work, logger: logger)
        }
        let base50 = percentile(baseline.sorted(), 0.5), base99 = percentile(baseline.sorted(), 0.99)
        let p50 = percentile(sigma.latencies.sorted(), 0.5), p99 = percentile(sigma.latencies.sorted(), 0.99)
        var report = Report(title: "sigma-bench agent (\(instances) instances started one at a time, cached image)")
        report.figures = [
            Figure(name: "start p50 (assignment → running)", value: p50, unit: "ms", baseline: base50, target: .maxValue(100)),
            Figure(name: "start p50 vs bare runc run", value: p50, unit: "ms", baseline: base50, target: .maxRatio(3)),
            Figure(name: "start p99 (assignment → running)", value: p99, unit: "ms", baseline: base99, target: .none),
            Figure(name: "apply → Running seen by the scheduler p50", value: sigma.endToEnd, unit: "ms", baseline: base50, target: .none),
            Figure(name: "agent memory (RSS)", value: sigma.agentRSS, unit: "MiB", baseline: 0, target: .none),
            Figure(name: "monitor memory per instance (RSS)", value: sigma.monitorRSS, unit: "MiB", baseline: 0, target: .none),
        ]
        report.notes = [
            "baseline: `runc run --detach` of the same unpacked image and command (its own cgroup, no network), timed from spawn to exit",
            "start: measured by the agent from the assignment's arrival (push) to the monitor reporting the process running",
            "agent memory with \(instances) instances running; monitor memory averaged over their monitors",
        ]
        return report
    }

    /// Bare runc: a bundle of the unpacked image, `runc run --detach` timed, then killed and deleted.
    func bareRuncRuns(runc: String, image: ImageReference, work: String, logger: Logger) async throws -> [Double] {
        let store = try ImageStore(directory: work + "/baseline-images")
        let unpacked = try await store.unpack(image)
        let root = work + "/baseline-runc"
        var samples: [Double] = []
        for index in 0..<instances {
            let id = "bench-bare-\(index)"
            let bundle = work + "/bundle-\(index)"
            try FileManager.default.createDirectory(atPath: bundle + "/rootfs", withIntermediateDirectories: true)
            let process = InstanceProcess(
                args: Self.command, env: [:], hostname: id, rootfs: unpacked.rootfs, readonlyRoot: true, mounts: [],
                cgroupsPath: "/sigma-bench/\(id)", networkNamespace: nil)
            try OCIConfig(process).encoded().write(to: URL(fileURLWithPath: bundle + "/config.json"))
            let started = ContinuousClock.now
            // The container keeps runc's stdout and stderr: they go to /dev/null, not to pipes read to their end.
            let result = try await Subprocess.run(runc, ["--root", root, "run", "--detach", "--bundle", bundle, id], capture: false)
            let elapsed = ContinuousClock.now - started
            guard result.succeeded else { throw ValidationError("runc run failed with status \(result.status)") }
            samples.append(milliseconds(elapsed))
            _ = try await Subprocess.run(runc, ["--root", root, "kill", id, "KILL"])
            _ = try await Subprocess.run(runc, ["--root", root, "delete", "--force", id])
        }
        Cgroup(version: .detect(), path: "sigma-bench").remove()
        return samples
    }

    struct AgentFigures {
        var latencies: [Double]
        var endToEnd: Double
        var agentRSS: Double
        var monitorRSS: Double
    }

    func agentStarts(url: String, image: String, runc: String, work: String, logger: Logger) async throws -> AgentFigures {
        let allocator = try BenchProcess("sigma-allocator", ["--listen", "tcp://127.0.0.1:*", "--database-url", url, "--log-level", "error"])
        defer { allocator.stop() }
        let allocatorEndpoint = try await allocator.endpoint()
        let scheduler = try BenchProcess("sigma-scheduler", [
            "--listen", "tcp://127.0.0.1:*", "--events-listen", "tcp://127.0.0.1:*", "--database-url", url,
            "--allocator", allocatorEndpoint, "--log-level", "error", "--heartbeat-interval", "0.2", "--pass-interval", "0.05",
        ])
        defer { scheduler.stop() }
        let schedulerEndpoint = try await scheduler.endpoint()
        let allocatorClient = try benchClient([allocatorEndpoint], logger: logger)
        try await waitHealthy(allocatorClient)
        let subnet = "100.\(64 + Int.random(in: 0..<64)).\(Int.random(in: 0..<256))"
        var pool = Sigma_V1_CreateIPPoolRequest()
        pool.pool.name = "bench"
        pool.pool.cidr = subnet + ".0/24"
        pool.pool.gateway = subnet + ".1"
        _ = try await allocatorClient.call(AllocatorMethods.createIPPool, pool)

        let suffix = String(UUID().uuidString.prefix(6)).lowercased()
        let state = work + "/agent"
        let bridge = "sgb\(suffix)"
        let cgroupParent = "sigma-bench/agent-\(suffix)"
        let nodeName = "bench-\(suffix)"
        let agent = try BenchProcess("sigma-agent", [
            "--listen", "tcp://127.0.0.1:*", "--scheduler", schedulerEndpoint, "--name", nodeName,
            "--host-ip", "127.0.0.1", "--state-dir", state, "--bridge", bridge, "--cgroup-parent", cgroupParent,
            "--log-level", "error", "--stop-grace", "1",
        ])
        let agentEndpoint = try await agent.endpoint()
        let agentClient = try benchClient([agentEndpoint], logger: logger)
        let schedulerClient = try benchClient([schedulerEndpoint], logger: logger)
        do {
            // A first instance pulls the image into the cache; it is not measured.
            try await applyAndWait(schedulerClient, agentClient, name: "warm", image: image)
            var latencies: [Double] = []
            var endToEnd: [Double] = []
            for index in 0..<instances {
                let started = ContinuousClock.now
                let latency = try await applyAndWait(schedulerClient, agentClient, name: "app-\(index)", image: image)
                endToEnd.append(milliseconds(ContinuousClock.now - started))
                latencies.append(latency)
            }
            let agentRSS = Self.rssMiB(agent.pid)
            let monitors = Self.monitorPIDs(stateDirectory: state)
            let monitorRSS = monitors.isEmpty ? 0 : monitors.map(Self.rssMiB).reduce(0, +) / Double(monitors.count)
            await cleanUp(state: state, bridge: bridge, node: nodeName, cgroupParent: cgroupParent, runc: runc, agent: agent)
            return AgentFigures(latencies: latencies, endToEnd: percentile(endToEnd.sorted(), 0.5), agentRSS: agentRSS, monitorRSS: monitorRSS)
        } catch {
            await cleanUp(state: state, bridge: bridge, node: nodeName, cgroupParent: cgroupParent, runc: runc, agent: agent)
            throw error
        }
    }

    /// Applies a one-instance app and waits until the agent runs it; returns the agent's start latency (ms).
    func applyAndWait(_ scheduler: RPCClient, _ agent: RPCClient, name: String, image: String) async throws -> Double {
        var apply = Sigma_V1_ApplyAppRequest()
        apply.spec.name = name
        apply.spec.image = image
        apply.spec.command = Self.command
        apply.spec.replicas = 1
        apply.spec.resources.request.cpuMillis = 10
        apply.spec.resources.request.memoryBytes = 8 << 20
        apply.spec.resources.limit.memoryBytes = 64 << 20
        _ = try await scheduler.call(SchedulerMethods.applyApp, apply)
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let local = try await agent.call(AgentMethods.listLocalInstances, .init()).instances
            if let mine = local.first(where: { $0.app == name && $0.state == "Running" && $0.startLatencyUs > 0 }) {
                return Double(mine.startLatencyUs) / 1000
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        throw ValidationError("\(name) did not start within 30 s")
    }

    /// The agent leaves instances running when it stops (by design): the benchmark removes them.
    func cleanUp(state: String, bridge: String, node: String, cgroupParent: String, runc: String, agent: BenchProcess) async {
        agent.stop()
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let monitor = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
            + "/sigma-monitor"
        await NodeDecommission.removeEverything(
            stateDirectory: state, bridge: bridge, node: node, cgroupParent: cgroupParent, runtime: runc, monitor: monitor,
            logger: logger)
    }

    static func rssMiB(_ pid: pid_t) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return 0 }
        return kib / 1024
    }

    /// The monitors of the agent's instances: processes whose command line names the agent's state folder.
    static func monitorPIDs(stateDirectory: String) -> [pid_t] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry),
                  let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return nil }
            let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard arguments.first?.hasSuffix("sigma-monitor") == true, arguments.contains(where: { $0.hasPrefix(stateDirectory) }) else { return nil }
            return pid
        }
    }
}

/// A client of the benchmark's own services, patient enough for a loaded machine.
func benchClient(_ endpoints: [String], logger: Logger) throws -> RPCClient {
    var configuration = RPCClientConfiguration(endpoints: endpoints)
    configuration.defaultTimeout = .seconds(30)
    return try RPCClient(configuration: configuration, logger: logger)
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}
