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
}
