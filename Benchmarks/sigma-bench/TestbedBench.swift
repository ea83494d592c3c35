import ArgumentParser
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC

/// What the testbed figures (`net`, `failover`) run against: three test hosts of a testbed of their own
/// (`scripts/testbed`), a scratch database, and a real allocator (with a /24 pool) and scheduler on the
/// testbed's control address, the hosts' agents registered with it.
struct BenchTestbed {
    let name: String
    let script: String
    let common: [String]
    let client: RPCClient
    let allocatorClient: RPCClient
    let schedulerEndpoint: String
    /// `key=value` words of the script's output once the agents run (host1=IP, agent1=ENDPOINT, ...).
    var hosts: [String: String] = [:]

    /// The testbed and the control plane for `body`; all of it is gone afterwards.
    static func with<T>(prefix: String, script: String, databaseURL: String?, agentFlags: [String] = ["--stop-grace", "1"],
                        _ body: (BenchTestbed) async throws -> T) async throws -> T {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let name = prefix + String(UUID().uuidString.prefix(5)).lowercased().filter { $0.isLetter || $0.isNumber }
        let common = ["--name", name, "--bin", bin]
        let network = Self.parse(try await Subprocess.check(script, ["up", "3"] + common))
        defer { _ = try? Subprocess.runBlocking(script, ["down"] + common) }
        let control = network["control"] ?? ""
        return try await withScratchDatabase(databaseURL, logger: logger) { url in
            let allocator = try BenchProcess("sigma-allocator", ["--listen", "tcp://\(control):*", "--database-url", url, "--log-level", "error"])
            defer { allocator.stop() }
            let allocatorEndpoint = try await allocator.endpoint()
            let scheduler = try BenchProcess("sigma-scheduler", [
                "--listen", "tcp://\(control):*", "--events-listen", "tcp://\(control):*", "--database-url", url,
                "--allocator", allocatorEndpoint, "--log-level", "error",
            ])
            defer { scheduler.stop() }
            let schedulerEndpoint = try await scheduler.endpoint()
            let allocatorClient = try benchClient([allocatorEndpoint], logger: logger)
            try await waitHealthy(allocatorClient)
            var pool = Sigma_V1_CreateIPPoolRequest()
            let subnet = "100.\(64 + Int.random(in: 0..<64)).\(Int.random(in: 0..<256))"
            pool.pool.name = "bench"
            pool.pool.cidr = subnet + ".0/24"
            pool.pool.gateway = subnet + ".1"
            _ = try await allocatorClient.call(AllocatorMethods.createIPPool, pool)
            var bed = BenchTestbed(name: name, script: script, common: common, client: try benchClient([schedulerEndpoint], logger: logger),
                                   allocatorClient: allocatorClient, schedulerEndpoint: schedulerEndpoint)
            bed.hosts = Self.parse(try await bed.up(agentFlags: agentFlags))
            return try await body(bed)
        }
    }

    /// `scripts/testbed up 3` with the scheduler: starts what is missing (a killed host comes back).
    func up(agentFlags: [String] = ["--stop-grace", "1"]) async throws -> String {
        try await Subprocess.check(script, ["up", "3", "--scheduler", schedulerEndpoint, "--idcs", "a,b,c"] + common + ["--"] + agentFlags)
    }

    /// Host `index`'s node name.
    func node(_ index: Int) -> String { "\(name)-h\(index)" }

    /// `key=value` words of the script's output.
    static func parse(_ output: String) -> [String: String] {
        var values: [String: String] = [:]
        for word in output.split(whereSeparator: { $0 == "\n" || $0 == " " }) {
            let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { values[parts[0]] = parts[1] }
        }
        return values
    }
}
