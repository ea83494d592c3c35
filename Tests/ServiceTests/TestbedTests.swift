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
        try await Testbed.with(hosts: 2, idcs: ["idc-a", "idc-b"]) { bed, cluster in
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
                    let answer = try await bed.run(on: index, busybox, ["nc", "-w", "2", instance.ip, "7000"])
                    return answer.output.contains("spread-\(instance.ordinal)")
                }
            }
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
            try await cluster.apply("echo", replicas: 2, cpu: 100, memory: 16 << 20) { spec in
                spec.image = "host"
                spec.command = [busybox, "sh", "-c", "exec \(busybox) nc -ll -p 7000 -e \(busybox) hostname"]
            }
            try await cluster.eventually("both Running") { try await cluster.allRunning("echo", 2) }
            let instances = try await cluster.instances("echo").sorted { $0.node < $1.node }
            #expect(instances.map(\.node) == bed.nodes)
            let (first, second) = (instances[0], instances[1])
            // The instance on host 1 → the one on host 2 over the overlay, and back.
            let firstNamespace = try bed.namespace(of: first.id, on: 1)
            let secondNamespace = try bed.namespace(of: second.id, on: 2)
            try await cluster.eventually("instance to instance across hosts") {
                try await bed.run(inNamespace: firstNamespace, busybox, ["nc", "-w", "2", second.ip, "7000"]).output
                    .contains("echo-\(second.ordinal)")
            }
            try await cluster.eventually("and back") {
                try await bed.run(inNamespace: secondNamespace, busybox, ["nc", "-w", "2", first.ip, "7000"]).output
                    .contains("echo-\(first.ordinal)")
            }

            // Host 2 dies: its instance is placed on host 1 again, with the same IP, and answers there.
            try await bed.kill(host: 2)
            try await cluster.eventually("moved to host 1 with its IP", within: .seconds(30)) {
                let now = try await cluster.instance("echo", ordinal: second.ordinal)
                return now?.node == bed.nodes[0] && now?.state == "Running" && now?.ip == second.ip
            }
            try await cluster.eventually("the moved instance answers on its old IP") {
                try await bed.run(inNamespace: firstNamespace, busybox, ["nc", "-w", "2", second.ip, "7000"]).output
                    .contains("echo-\(second.ordinal)")
            }
        }
    }
}
