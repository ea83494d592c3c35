import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// Several test hosts (network namespaces, one sigma-agent each) on this machine, from `scripts/testbed`.
@Suite(.serialized) struct TestbedTests {
    @Test func hostsRunInstancesAndComeDownClean() async throws {
        let busybox = try #require(["/bin/busybox", "/usr/bin/busybox"].first { FileManager.default.isExecutableFile(atPath: $0) })
        var name = ""
        try await Testbed.with(hosts: 2, configs: 1, discoveries: 1, idcs: ["idc-a", "idc-b"]) { bed, cluster in
            name = bed.name
            try await cluster.eventually("both hosts registered with their underlay address") {
                let nodes = try await cluster.client.call(SchedulerMethods.listNodes, .init()).nodes
                return Set(nodes.map(\.hostIp)) == Set(bed.hosts.map(\.ip)) && nodes.allSatisfy { $0.health == "Ready" }
            }
            try await cluster.apply("spread", replicas: 2, cpu: 100, memory: 16 << 20) { spec in
                spec.image = "host"
                spec.command = [busybox, "sh", "-c", "exec \(busybox) nc -ll -p 7000 -e \(busybox) hostname"]
            }
            try await cluster.eventually("both Running") { try await cluster.allRunning("spread", 2) }
            let instances = try await cluster.instances("spread")
            #expect(Set(instances.map(\.node)) == Set(bed.nodes))
            // Each instance answers on its IP from its own host.
            for instance in instances {
                let index = Int(instance.node.split(separator: "h").last!)!
                #expect(instance.hostIp == bed.hosts[index - 1].ip)
                try await cluster.eventually("\(instance.node)'s instance answers") {
                    try await bed.ask(on: index, instance.ip, "7000").contains("spread-\(instance.ordinal)")
                }
            }
            // Beyond its node an instance reaches of the control plane Discovery and the config center only
            // (masqueraded: each sends its ZMTP greeting at once): not the scheduler, its feed or the allocator,
            // not its own node's agent, and not another node's but at host ports.
            func port(_ endpoint: String) -> String { endpoint.split(separator: ":").last.map(String.init) ?? "" }
            let namespace = try bed.namespace(of: instances[0].id, on: Int(instances[0].node.split(separator: "h").last!)!)
            func greeted(_ host: String, _ port: String) async throws -> Bool {
                let answer = try await bed.run(inNamespace: namespace, "/usr/bin/python3", [
                    "-c", "import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 1.5); s.settimeout(1.5); print(len(s.recv(10)))",
                    host, port])
                return answer.status == 0 && answer.output.hasPrefix("10")
            }
            #expect(try await greeted(bed.control, port(cluster.discoveryEndpoints[0])))
            #expect(try await greeted(bed.control, port(cluster.configEndpoints[0])))
            #expect(try await !greeted(bed.control, port(cluster.endpoints[0])), "the scheduler")
            #expect(try await !greeted(bed.control, port(cluster.allocatorEndpoint)), "the allocator")
            let ownHost = Int(instances[0].node.split(separator: "h").last!)!
            let other = bed.hosts[ownHost == 1 ? 1 : 0]
            #expect(try await !greeted(instances[0].hostIp, port(bed.hosts[ownHost - 1].agent)), "its own node's agent")
            // (once the routes have told its node where the other's instance runs)
            try await cluster.eventually("another node's agent out of reach") { try await !greeted(other.ip, port(other.agent)) }
            // sigmactl logs finds each host's agent on its underlay address.
            let log = try await runProgram(ServiceProcess.binDirectory + "/sigmactl", [
                "logs", "spread-0", "--scheduler", cluster.endpoints.joined(separator: ","),
            ])
            #expect(log.isEmpty)  // nc -e writes to the connection, not to the log
        }
        // Down: no namespace, link or cgroup of the testbed is left.
        let namespaces = try await runProgram("/sbin/ip", ["netns", "list"])
        #expect(!namespaces.contains("\(name)-h"))
        let links = try await runProgram("/sbin/ip", ["-o", "link", "show"])
        #expect(!links.contains("\(name)-"))
        #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/sigma-testbed/\(name)"))
        #expect(!FileManager.default.fileExists(atPath: "/run/sigma-testbed/\(name)"))
    }

    @Test func theOverlayCarriesInstanceIPsAcrossHostsAndAfterAMove() async throws {
        let busybox = try #require(["/bin/busybox", "/usr/bin/busybox"].first { FileManager.default.isExecutableFile(atPath: $0) })
        try await Testbed.with(hosts: 2, brokenAfter: 1.5, idcs: ["idc-a", "idc-b"]) { bed, cluster in
            try await cluster.apply("echo", replicas: 3, cpu: 100, memory: 16 << 20) { spec in
                spec.image = "host"
                spec.command = [busybox, "sh", "-c", "exec \(busybox) nc -ll -p 7000 -e \(busybox) hostname"]
            }
            try await cluster.eventually("all three Running") { try await cluster.allRunning("echo", 3) }
            let all = try await cluster.instances("echo")
            #expect(Set(all.map(\.node)) == Set(bed.nodes))
            // Two share a host: instance → instance by IP on one host.
            let neighbours = try #require(Dictionary(grouping: all, by: \.node).values.first { $0.count == 2 })
            let neighbourNamespace = try bed.namespace(of: neighbours[0].id, on: bed.nodes.firstIndex(of: neighbours[0].node)! + 1)
            try await cluster.eventually("instance to instance on one host") {
                try await bed.ask(inNamespace: neighbourNamespace, neighbours[1].ip, "7000")
                    .contains("echo-\(neighbours[1].ordinal)")
            }
            let first = try #require(all.filter { $0.node == bed.nodes[0] }.min { $0.ordinal < $1.ordinal })
            let second = try #require(all.filter { $0.node == bed.nodes[1] }.min { $0.ordinal < $1.ordinal })
            // The instance on host 1 → the one on host 2 over the overlay, and back.
            let firstNamespace = try bed.namespace(of: first.id, on: 1)
            let secondNamespace = try bed.namespace(of: second.id, on: 2)
            try await cluster.eventually("instance to instance across hosts") {
                try await bed.ask(inNamespace: firstNamespace, second.ip, "7000")
                    .contains("echo-\(second.ordinal)")
            }
            try await cluster.eventually("and back") {
                try await bed.ask(inNamespace: secondNamespace, first.ip, "7000")
                    .contains("echo-\(first.ordinal)")
            }

            // Host 2 dies: its instance is placed on host 1 again, with the same IP, and answers there.
            try await bed.kill(host: 2)
            try await cluster.eventually("moved to host 1 with its IP", within: .seconds(30)) {
                let now = try await cluster.instance("echo", ordinal: second.ordinal)
                return now?.node == bed.nodes[0] && now?.state == "Running" && now?.ip == second.ip
            }
            try await cluster.eventually("the moved instance answers on its old IP") {
                try await bed.ask(inNamespace: firstNamespace, second.ip, "7000")
                    .contains("echo-\(second.ordinal)")
            }
        }
    }

    /// A host cut off from the network (its link down, its agent and instance still running): declared Broken,
    /// its instance placed again elsewhere with the same IP; when the link comes back the host fences, so the old
    /// copy stops and only the new one serves that IP.
    @Test func aHostCutOffLosesItsInstanceAndFencesWhenItComesBack() async throws {
        let busybox = try #require(["/bin/busybox", "/usr/bin/busybox"].first { FileManager.default.isExecutableFile(atPath: $0) })
        try await Testbed.with(hosts: 2, brokenAfter: 1.5, idcs: ["idc-a", "idc-b"]) { bed, cluster in
            try await cluster.apply("cut", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                spec.image = "host"
                spec.command = [busybox, "sh", "-c", "exec \(busybox) nc -ll -p 7000 -e \(busybox) hostname"]
            }
            try await cluster.eventually("Running") { try await cluster.allRunning("cut", 1) }
            let before = try #require(try await cluster.instance("cut"))
            let cut = bed.nodes.firstIndex(of: before.node)! + 1
            let other = cut == 1 ? 2 : 1
            let epoch = try await cluster.node(before.node).epoch
            let link = "\(bed.name)-h\(cut)-r"
            defer { _ = try? spawnAndWait("/sbin/ip", ["link", "set", link, "up"]) }
            try await runProgram("/sbin/ip", ["link", "set", link, "down"])
            try await cluster.eventually("placed on the other host with its IP", within: .seconds(30)) {
                let now = try await cluster.instance("cut")
                return now?.node == bed.nodes[other - 1] && now?.state == "Running" && now?.ip == before.ip
            }
            // Meanwhile the cut-off host still runs its old copy (nothing tells it otherwise); its agent is asked
            // once the link is back.
            let agent = try SchedulerCluster.rpcClient([bed.hosts[cut - 1].agent])
            try await runProgram("/sbin/ip", ["link", "set", link, "up"])
            try await cluster.eventually("back, fenced at a new epoch and Ready", within: .seconds(30)) {
                let node = try await cluster.node(before.node)
                return node.health == "Ready" && node.epoch > epoch
            }
            try await cluster.eventually("the old copy stopped", within: .seconds(30)) {
                let local = try await agent.call(AgentMethods.listLocalInstances, .init()).instances
                return !local.contains { $0.app == "cut" && $0.state == "Running" }
            }
            let namespace = try bed.namespace(of: before.id, on: other)
            try await cluster.eventually("the new copy serves") {
                try await bed.ask(inNamespace: namespace, before.ip, "7000").contains("cut-0")
            }
        }
    }

    @Test func hostPortsReachInstancesFromEveryWhereAndReplicasShareAContainerPort() async throws {
        let busybox = try #require(["/bin/busybox", "/usr/bin/busybox"].first { FileManager.default.isExecutableFile(atPath: $0) })
        let nft = try #require(["/usr/sbin/nft", "/sbin/nft"].first { FileManager.default.isExecutableFile(atPath: $0) })
        try await Testbed.with(hosts: 2, configs: 1, discoveries: 1, idcs: ["idc-a", "idc-b"]) { bed, cluster in
            // Three replicas on two hosts: two share a host, and both listen on container port 7000.
            try await cluster.apply("web", replicas: 3, cpu: 100, memory: 16 << 20) { spec in
                spec.image = "host"
                spec.command = [busybox, "sh", "-c", "exec \(busybox) nc -ll -p 7000 -e \(busybox) hostname"]
                spec.network = "host"
                var port = Sigma_V1_ContainerPort()
                port.name = "http"
                port.containerPort = 7000
                spec.ports = [port]
            }
            try await cluster.eventually("three Running") { try await cluster.allRunning("web", 3) }
            let instances = try await cluster.instances("web")
            #expect(Set(instances.map(\.node)).count == 2)
            for instance in instances {
                let here = bed.nodes.firstIndex(of: instance.node)! + 1
                let other = here == 1 ? 2 : 1
                let hostPort = "\(try #require(instance.hostPorts["http"]))"
                let expected = "web-\(instance.ordinal)"
                // From another host, from the host itself, from an instance on the same host and from itself (hairpin).
                try await cluster.eventually("\(expected) from another host") {
                    try await bed.ask(on: other, instance.hostIp, hostPort).contains(expected)
                }
                #expect(try await bed.ask(on: here, instance.hostIp, hostPort).contains(expected))
                // The instance itself, through its own published port (hairpin back out its bridge port, masqueraded).
                let own = try bed.namespace(of: instance.id, on: here)
                #expect(try await bed.ask(inNamespace: own, instance.hostIp, hostPort).contains(expected))
                let neighbour = instances.first { $0.node == instance.node && $0.id != instance.id }
                let namespace = try bed.namespace(of: (neighbour ?? instance).id, on: here)
                if neighbour != nil {
                    #expect(try await bed.ask(inNamespace: namespace, instance.hostIp, hostPort)
                        .contains(expected))
                }
                // An instance reaches its node only through what is published: not the agent's own port (the SYN is
                // dropped, so the attempt is cut short after 2 s).
                let agentPort = String(bed.hosts[here - 1].agent.split(separator: ":").last!)
                let probe = try await bed.run(inNamespace: namespace, "/usr/bin/timeout", ["2", busybox, "nc", instance.hostIp, agentPort])
                #expect(probe.status != 0)
                #expect(!probe.output.contains("agent"))
            }
            // Deleted: the DNAT entries go with the instances.
            var delete = Sigma_V1_AppRequest()
            delete.name = "web"
            _ = try await cluster.client.call(SchedulerMethods.deleteApp, delete)
            try await cluster.eventually("no published port left") {
                for index in 1...2 {
                    let map = try await bed.run(on: index, nft, ["list", "map", "ip", "sigma_sigma0", "published"]).output
                    if map.contains(":") && map.contains(" . 7000") { return false }
                }
                return true
            }
        }
    }
}
