import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// Every service killed with SIGKILL in turn while an app deploys over three test hosts (the scheduler: the
/// active one of two, so the standby takes over), each restarted where it was: at the end every instance runs, no IP or host port is held twice, and every acknowledged write (the
/// apply, a scale during the run, a config version) is there. `SIGMA_CHAOS_INSTANCES` sets the size (`make
/// chaos`: 200; the suite: 50).
@Suite(.serialized) struct ChaosTests {
    static var instances: Int {
        ProcessInfo.processInfo.environment["SIGMA_CHAOS_INSTANCES"].flatMap(Int.init) ?? 50
    }

    /// The endpoint a crashed process listened on, and its feed's, so that its restart takes the same ports.
    static func restart(_ process: ServiceProcess, rpc: String) throws -> ServiceProcess {
        var arguments = process.arguments
        if let index = arguments.firstIndex(of: "--listen") { arguments[index + 1] = rpc }
        if let index = arguments.firstIndex(of: "--events-listen") {
            // The feed's bound endpoint, from the process's "feed" log line.
            let line = process.log.split(separator: "\n").first { $0.contains("msg=feed ") }
            if let line, let range = line.range(of: "endpoint=") {
                arguments[index + 1] = String(line[range.upperBound...].prefix { $0 != " " })
            }
        }
        return try ServiceProcess(process.name, arguments)
    }

    @Test func killingEveryServiceInTurnDuringADeployLosesNothing() async throws {
        let busybox = try #require(["/bin/busybox", "/usr/bin/busybox"].first { FileManager.default.isExecutableFile(atPath: $0) })
        let total = Self.instances
        try await Testbed.with(hosts: 3, schedulers: 2, configs: 1, discoveries: 1, idcs: ["idc-a", "idc-b"]) { bed, cluster in
            var restarted: [ServiceProcess] = []
            defer { for process in restarted { process.crash() } }
            func running() async throws -> Int {
                try await cluster.instances("chaos").filter { $0.state == "Running" }.count
            }
            func progress(_ count: Int) async throws {
                try await cluster.eventually("\(count) Running", within: .seconds(240)) { try await running() >= count }
            }
            /// Kills `process` (SIGKILL) and starts it again on its ports; waits until it serves.
            func crashAndRestart(_ process: ServiceProcess) async throws {
                let rpc = try await process.endpoint()
                process.crash()
                let again = try Self.restart(process, rpc: rpc)
                restarted.append(again)
                #expect(try await again.endpoint(within: .seconds(60)) == rpc)
            }

            let first = total - 10
            let applied = try await cluster.apply("chaos", replicas: first, cpu: 10, memory: 4 << 20) { spec in
                spec.image = "host"
                spec.command = [busybox, "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
                spec.network = "host"
                var port = Sigma_V1_ContainerPort()
                port.name = "http"
                port.containerPort = 7000
                spec.ports = [port]
                spec.lifecycle.stopGracePeriodSeconds = 1
            }
            #expect(applied.app.revision == 1)
            var publish = Sigma_V1_PublishConfigRequest()
            publish.app = "chaos"
            var file = Sigma_V1_ConfigFile()
            file.path = "/etc/chaos.conf"
            file.content = Data("acknowledged = yes\n".utf8)
            publish.files = [file]
            let configClient = try SchedulerCluster.rpcClient(cluster.configEndpoints)
            let published = try await configClient.call(ConfigMethods.publish, publish)

            let processes = cluster.everyProcess
            let allocator = try #require(processes.first { $0.name == "sigma-allocator" })
            let schedulers = processes.filter { $0.name == "sigma-scheduler" }
            let discovery = try #require(processes.first { $0.name == "sigma-discovery" })
            let config = try #require(processes.first { $0.name == "sigma-config" })

            try await progress(1)
            try await crashAndRestart(allocator)
            try await progress(first / 4)
            // The active scheduler (the standby takes over, then the restarted one is the standby).
            var active: ServiceProcess?
            for (index, client) in cluster.each.enumerated() where try await client.call(CommonMethods.health, .init()).role == "active" {
                active = schedulers[index]
            }
            try await crashAndRestart(try #require(active))
            // Acknowledged while the deploy goes on: ten more.
            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "chaos"
            scale.replicas = Int32(total)
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            try await progress(first / 2)
            try await crashAndRestart(discovery)
            try await crashAndRestart(config)
            try await progress(first * 3 / 4)

            // An agent: killed, and started again in its host with the same flags (it adopts its instances).
            try bed.restartAgent(host: 2)

            try await progress(total)
            let instances = try await cluster.instances("chaos")
            #expect(instances.count == total)
            #expect(instances.allSatisfy { $0.state == "Running" })
            #expect(Set(instances.map(\.ip)).count == total)
            let hostPorts = instances.map { "\($0.node):\($0.hostPorts["http"] ?? 0)" }
            #expect(Set(hostPorts).count == total)
            #expect(instances.allSatisfy { ($0.hostPorts["http"] ?? 0) > 0 })
            // What the database holds agrees: one address per instance, and the port each instance was given is held
            // by it on its node (the primary key (node, port) makes sharing impossible).
            let held = try await cluster.store.query(
                """
                SELECT (SELECT count(*) FROM ip_addresses a JOIN instances i ON i.id = a.instance WHERE i.app = 'chaos') AS ips,
                       (SELECT count(DISTINCT a.address) FROM ip_addresses a JOIN instances i ON i.id = a.instance WHERE i.app = 'chaos') AS distinct_ips,
                       (SELECT count(*) FROM instances i JOIN host_ports p
                            ON p.instance = i.id AND p.node = i.node AND p.port = (i.host_ports->>'http')::int
                        WHERE i.app = 'chaos') AS ports
                """)
            #expect(try held.first?.decode(Int.self, "ips") == total)
            #expect(try held.first?.decode(Int.self, "distinct_ips") == total)
            #expect(try held.first?.decode(Int.self, "ports") == total)
            // Acknowledged writes: the scale, the config version; Discovery (restarted) serves every endpoint.
            var get = Sigma_V1_AppRequest()
            get.name = "chaos"
            #expect(try await cluster.client.call(SchedulerMethods.getApp, get).app.spec.replicas == Int32(total))
            var read = Sigma_V1_GetConfigRequest()
            read.app = "chaos"
            #expect(try await configClient.call(ConfigMethods.get, read).version.version == published.version.version)
            let discoveryClient = try SchedulerCluster.rpcClient(cluster.discoveryEndpoints)
            try await cluster.eventually("Discovery lists every instance", within: .seconds(30)) {
                var resolve = Sigma_V1_ResolveRequest()
                resolve.app = "chaos"
                resolve.state = "Running"
                return try await discoveryClient.call(DiscoveryMethods.resolve, resolve).endpoints.count == total
            }
        }
    }
}
