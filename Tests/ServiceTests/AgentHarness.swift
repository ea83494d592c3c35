import Foundation
import NodeRuntime
import Protocol
import RPC
import Testing
import TestSupport

/// A real sigma-agent process of a test's own: its own node name, state folder, bridge and cgroup parent.
/// `RealAgent.with` stops it and removes every instance, cgroup, namespace and link it made, also when the
/// test fails (the agent by design leaves its instances running when it stops).
final class RealAgent: @unchecked Sendable {
    let name: String
    let state: String
    let bridge: String
    let cgroupParent: String
    let arguments: [String]
    private(set) var process: ServiceProcess
    private(set) var endpoint: String = ""

    init(name: String, scheduler: String, extra: [String]) throws {
        let id = String(UUID().uuidString.prefix(8)).lowercased()
        self.name = name
        state = NSTemporaryDirectory() + "sigma-agent-\(id)"
        bridge = "sga\(id.prefix(6))"
        cgroupParent = "sigma-test/agent-\(id)"
        arguments = [
            "--listen", "tcp://127.0.0.1:*", "--scheduler", scheduler, "--name", name, "--host-ip", "127.0.0.1",
            "--idc", "idc-a", "--state-dir", state, "--bridge", bridge, "--cgroup-parent", cgroupParent,
            "--stop-grace", "2", "--restart-backoff", "0.2", "--log-level", "info",
        ] + extra
        process = try ServiceProcess("sigma-agent", arguments)
    }

    static func with<T>(
        _ cluster: SchedulerCluster, name: String = "n-\(UUID().uuidString.prefix(6).lowercased())", extra: [String] = [],
        _ body: (RealAgent) async throws -> T
    ) async throws -> T {
        let agent = try RealAgent(name: name, scheduler: cluster.endpoints.joined(separator: ","), extra: extra)
        do {
            try await agent.started()
            let result = try await body(agent)
            await agent.removeEverything()
            return result
        } catch {
            print("---- sigma-agent log\n\(agent.process.log.suffix(8000))")
            await agent.removeEverything()
            throw error
        }
    }

    private func started() async throws {
        endpoint = try await process.endpoint()
    }

    /// A client of the agent's own RPC endpoint.
    func client() throws -> RPCClient { try SchedulerCluster.rpcClient([endpoint]) }

    /// Kills the agent at once (no graceful stop), as a crash would.
    func crash() async {
        process.crash()
        _ = await process.terminate()
    }

    /// Starts the agent again with the same flags (after `crash`).
    func restart() async throws {
        process = try ServiceProcess("sigma-agent", arguments)
        try await started()
    }

    func localInstances() async throws -> [Sigma_V1_LocalInstance] {
        try await client().call(AgentMethods.listLocalInstances, .init()).instances
    }

    func log(of instance: String) -> String {
        String(decoding: FileManager.default.contents(atPath: "\(state)/instances/\(instance)/console.log") ?? Data(), as: UTF8.self)
    }

    func cgroupFile(_ instance: String, _ controller: String, _ file: String) -> String {
        let data = FileManager.default.contents(atPath: "/sys/fs/cgroup/\(controller)/\(cgroupParent)/\(instance)/\(file)") ?? Data()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func removeEverything() async {
        _ = await process.terminate()
        await NodeDecommission.removeEverything(
            stateDirectory: state, bridge: bridge, node: name, cgroupParent: cgroupParent, runtime: Subprocess.find("runc") ?? "runc",
            monitor: ServiceProcess.binDirectory + "/sigma-monitor", logger: quietLogger)
    }
}

extension SchedulerCluster {
    /// A control plane for agent tests: heartbeats every 200 ms, a subnet no other test uses.
    static func forAgents(
        discoveries: Int = 0, configs: Int = 0, brokenAfter: Double = 9, extra: [String] = [],
        _ body: (SchedulerCluster) async throws -> Void
    ) async throws {
        try await with(discoveries: discoveries, configs: configs, brokenAfter: brokenAfter, pool: TestSubnets.next() + ".0/24",
                       extra: ["--heartbeat-interval", "0.2"] + extra, body)
    }

    func instance(_ app: String, ordinal: Int32 = 0) async throws -> Sigma_V1_Instance? {
        try await instances(app).first { $0.ordinal == ordinal }
    }
}
