import Foundation
import NodeRuntime
import Protocol
import RPC
import Testing
import TestSupport

/// Test hosts from `scripts/testbed`: network namespaces joined by a bridge, each running its own sigma-agent,
/// with the control plane listening on the testbed's .254. `Testbed.with` brings the testbed down (agents,
/// instances, namespaces, links, cgroups) also when the test fails.
struct Testbed {
    let name: String
    let subnet: String
    let control: String
    /// Each host's underlay address and agent endpoint, host 1 first.
    var hosts: [(ip: String, agent: String)] = []

    var nodes: [String] { (1...hosts.count).map { "\(name)-h\($0)" } }

    static let script = packageRoot.path + "/scripts/testbed"

    static func with(
        hosts count: Int, schedulers: Int = 1, configs: Int = 0, discoveries: Int = 0, brokenAfter: Double = 12, idcs: [String] = ["idc-a"],
        schedulerFlags: [String] = [], _ body: (Testbed, SchedulerCluster) async throws -> Void
    ) async throws {
        let name = "t" + String(UUID().uuidString.prefix(6)).lowercased().filter { $0.isLetter || $0.isNumber }
        let common = ["--name", name, "--bin", ServiceProcess.binDirectory]
        defer { _ = try? spawnAndWait(script, ["down"] + common) }
        let network = try parse(try await runProgram(script, ["up", "\(count)"] + common))
        var bed = Testbed(name: name, subnet: network["subnet"] ?? "", control: network["control"] ?? "")
        try await SchedulerCluster.with(
            schedulers: schedulers, discoveries: discoveries, configs: configs, brokenAfter: brokenAfter, pool: TestSubnets.next() + ".0/24",
            extra: ["--heartbeat-interval", "0.2"] + schedulerFlags, host: bed.control
        ) { cluster in
            var arguments = ["up", "\(count)", "--scheduler", cluster.endpoints.joined(separator: ","),
                             "--idcs", idcs.joined(separator: ",")] + common
            if !cluster.configEndpoints.isEmpty { arguments += ["--config", cluster.configEndpoints.joined(separator: ",")] }
            if !cluster.discoveryEndpoints.isEmpty { arguments += ["--discovery", cluster.discoveryEndpoints.joined(separator: ",")] }
            arguments += ["--", "--stop-grace", "2", "--restart-backoff", "0.2"]
            let started = try parse(try await runProgram(script, arguments))
            bed.hosts = (1...count).map { (started["host\($0)"] ?? "", started["agent\($0)"] ?? "") }
            // An agent serves before it has registered: placement must see every host, so wait for all of them.
            let nodes = bed.nodes
            try await cluster.eventually("every test host registered and Ready", within: .seconds(60)) {
                let registered = try await cluster.client.call(SchedulerMethods.listNodes, .init()).nodes
                return Set(registered.filter { $0.health == "Ready" }.map(\.name)) == Set(nodes)
            }
            do {
                try await body(bed, cluster)
            } catch {
                for index in 1...count {
                    let log = (try? String(contentsOfFile: "/run/sigma-testbed/\(name)/h\(index)/agent.log", encoding: .utf8)) ?? ""
                    print("---- \(name)-h\(index) agent log\n\(log.suffix(6000))")
                }
                throw error
            }
        }
    }

    /// `key=value` words of the script's output.
    static func parse(_ output: String) throws -> [String: String] {
        var values: [String: String] = [:]
        for word in output.split(whereSeparator: { $0 == "\n" || $0 == " " }) {
            let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { values[parts[0]] = parts[1] }
        }
        return values
    }

    /// Kills host `index`: its agent (SIGKILL) and its network namespace, as a dead server.
    func kill(host index: Int) async throws {
        try await runProgram(Self.script, ["kill", "\(index)", "--name", name, "--bin", ServiceProcess.binDirectory])
    }

    /// Kills host `index`'s agent (SIGKILL) and starts it again in its host with the same flags; it re-adopts
    /// the instances that kept running meanwhile.
    func restartAgent(host index: Int) throws {
        try startAgent(host: index, try killAgent(host: index))
    }

    /// Host `index`'s agent process id.
    func agentPID(host index: Int) throws -> Int32 {
        let pidFile = "/run/sigma-testbed/\(name)/h\(index)/agent.pid"
        guard let pid = Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw TestSetupError("no agent pid in \(pidFile)")
        }
        return pid
    }

    /// Kills host `index`'s agent (SIGKILL) and returns its command line, for `startAgent`.
    func killAgent(host index: Int) throws -> [String] {
        let pid = try agentPID(host: index)
        let commandLine = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))
            .split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        Foundation.kill(pid, SIGKILL)
        return commandLine
    }

    /// Starts an agent on host `index` with `commandLine` (the one `killAgent` returned).
    func startAgent(host index: Int, _ commandLine: [String]) throws {
        let pidFile = "/run/sigma-testbed/\(name)/h\(index)/agent.pid"
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        agent.arguments = ["--net=/run/netns/\(name)-h\(index)"] + commandLine
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: "/run/sigma-testbed/\(name)/h\(index)/agent.log"))
        log.seekToEndOfFile()
        agent.standardOutput = log
        agent.standardError = log
        try agent.run()
        try "\(agent.processIdentifier)\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
    }

    /// The network namespace of an instance running on host `index`.
    func namespace(of instance: String, on index: Int) throws -> String {
        try NodeNetwork(bridge: "sigma0", node: "\(name)-h\(index)").namespacePath(for: instance)
    }

    /// Runs a command inside test host `index` (1-based), as a process on that host would.
    func run(on index: Int, _ program: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await runProgramStatus("/usr/bin/nsenter", ["--net=/run/netns/\(name)-h\(index)", program] + arguments)
    }

    /// Runs a command inside an instance's network namespace.
    func run(inNamespace path: String, _ program: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await runProgramStatus("/usr/bin/nsenter", ["--net=\(path)", program] + arguments)
    }

    /// What the TCP server at `host`:`port` says, asked from test host `index` with busybox nc. Under `timeout`:
    /// nc's `-w` bounds only the connect, and a connection that stays open and silent (a port whose rules are
    /// half made) would hang the probe and the retry loop around it.
    func ask(on index: Int, _ host: String, _ port: String) async throws -> String {
        try await run(on: index, "/usr/bin/timeout", try Self.askArguments(host, port)).output
    }

    /// The same, asked from inside an instance's network namespace.
    func ask(inNamespace path: String, _ host: String, _ port: String) async throws -> String {
        try await run(inNamespace: path, "/usr/bin/timeout", try Self.askArguments(host, port)).output
    }

    private static func askArguments(_ host: String, _ port: String) throws -> [String] {
        guard let busybox = ["/bin/busybox", "/usr/bin/busybox"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw TestSetupError("busybox is not installed")
        }
        return ["5", busybox, "nc", "-w", "2", host, port]
    }
}
