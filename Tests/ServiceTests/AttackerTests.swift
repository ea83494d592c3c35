import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// Isolation I's attacker suite: one instance on each of 3 test hosts (real agents, runc, nftables) tries the
/// probes of the issue from inside, and each is refused; the hosts are unchanged afterwards. Probes that need
/// a second party are in their own tests, each of which failed before its fix: a secret read by another local
/// user and a reused SSD (NodeAgentTests), forged sources, IPv6 and VXLAN datagrams at the bridge
/// (NetworkTests), a link an image ships (InstanceFilesTests), 3,000 made-up tokens (AccessTests).
@Suite(.serialized) struct AttackerTests {
    @Test func probesFromInsideInstancesAreRefused() async throws {
        let id = String(UUID().uuidString.prefix(8)).lowercased()
        // On the machine every test host shares: a folder standing for the host's own, a fake key under /etc
        // and a filesystem mounted below /usr. All removed afterwards.
        let hostFolder = "/run/sigma-attack-\(id)", keys = "/etc/sigma-attack-\(id)", submount = "/usr/local/sigma-attack-\(id)"
        for folder in [hostFolder, keys, submount] {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        }
        defer {
            umount2(submount, Int32(MNT_DETACH))
            for folder in [hostFolder, keys, submount] { try? FileManager.default.removeItem(atPath: folder) }
        }
        try Data("secret-key = the-cluster's\n".utf8).write(to: URL(fileURLWithPath: keys + "/cluster.key"))
        _ = try await runProgram("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", submount])

        try await Testbed.with(hosts: 3, configs: 1, discoveries: 1, idcs: ["idc-a", "idc-b", "idc-c"]) { bed, cluster in
            func port(_ endpoint: String) -> String { endpoint.split(separator: ":").last.map(String.init) ?? "" }
            func connect(_ host: String, _ port: String) -> String {
                "python3 -c 'import socket; s = socket.create_connection((\"\(host)\", \(port)), 1.5); s.settimeout(1.5); assert len(s.recv(10)) == 10'"
            }
            let others = bed.hosts.map(\.ip)
            let probes: [(String, String)] = [
                ("unshare-and-mount", "unshare -Urm sh -c 'mount -t tmpfs none /dev/shm'"),
                ("read-shadow", "cat /etc/shadow"),
                ("read-gshadow", "cat /etc/gshadow"),
                ("read-keys-under-etc", "cat \(keys)/cluster.key"),
                ("write-under-a-read-only-submount", "touch \(submount)/planted"),
                ("write-the-hosts-usr", "touch /usr/planted"),
                ("raw-socket", "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)'"),
                ("packet-socket", "python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)'"),
                ("add-a-forged-address", "ip addr add 100.64.0.250/32 dev eth0"),
                ("the-scheduler", connect(bed.control, port(cluster.endpoints[0]))),
                ("the-allocator", connect(bed.control, port(cluster.allocatorEndpoint))),
            ] + bed.hosts.enumerated().map { index, host in ("agent-of-h\(index + 1)", connect(host.ip, port(host.agent))) }
            let allowed: [(String, String)] = [
                ("discovery", connect(bed.control, port(cluster.discoveryEndpoints[0]))),
                ("config-center", connect(bed.control, port(cluster.configEndpoints[0]))),
            ]
            // The probes wait for a config file the test publishes once every node knows every instance's route.
            var script = "while [ ! -e /etc/attacker-go ]; do sleep 0.1; done\n"
            script += "probe() { if sh -c \"$2\" >/dev/null 2>&1; then echo \"PROBE $1 ALLOWED\"; else echo \"PROBE $1 refused\"; fi; }\n"
            // Datagrams to every node's VXLAN port (counted where the bridge drops them).
            script += others.map { "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"x\" * 64, (\"\($0)\", 4789))'\n" }.joined()
            for (name, command) in probes + allowed {
                script += "probe \(name) '\(command.replacingOccurrences(of: "'", with: "'\\''"))'\n"
            }
            // A link to a host folder where the next config version goes.
            script += "ln -s \(hostFolder) /conf && echo 'PROBE linked'\n"
            script += "echo PROBES-DONE; trap 'exit 0' TERM; while :; do sleep 0.1; done\n"

            let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
            func publish(_ paths: String...) async throws {
                var request = Sigma_V1_PublishConfigRequest()
                request.app = "attacker"
                request.files = paths.map { path in
                    var file = Sigma_V1_ConfigFile()
                    file.path = path
                    file.content = Data("pwned\n".utf8)
                    return file
                }
                _ = try await config.call(ConfigMethods.publish, request)
            }
            try await publish("/etc/attacker.conf")
            try await cluster.apply("attacker", replicas: 3, cpu: 100, memory: 64 << 20) { spec in
                spec.image = "host"
                spec.command = ["/bin/sh", "-c", script]
                spec.config.app = "attacker"
                spec.spread.required = true
            }
            try await cluster.eventually("3 attackers Running", within: .seconds(60)) { try await cluster.allRunning("attacker", 3) }
            let instances = try await cluster.instances("attacker")
            #expect(Set(instances.map(\.node)) == Set(bed.nodes))
            func log(_ instance: Sigma_V1_Instance) -> String {
                let index = bed.nodes.firstIndex(of: instance.node)! + 1
                let path = "/run/sigma-testbed/\(bed.name)/h\(index)/state/instances/\(instance.id)/console.log"
                return (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            }
            for instance in instances {
                let index = bed.nodes.firstIndex(of: instance.node)! + 1
                let namespace = try bed.namespace(of: instance.id, on: index)
                let other = bed.hosts[index % 3]
                try await cluster.eventually("\(instance.node) knows the other nodes") {
                    let reached = try await bed.run(inNamespace: namespace, "/usr/bin/python3", ["-c", "import socket; socket.create_connection((\"\(other.ip)\", \(port(other.agent))), 1).recv(10)"])
                    return reached.status != 0
                }
            }
            try await publish("/etc/attacker.conf", "/etc/attacker-go")
            try await cluster.eventually("every probe run", within: .seconds(90)) { instances.allSatisfy { log($0).contains("PROBES-DONE") } }
            for instance in instances {
                let output = log(instance)
                for (name, _) in probes { #expect(output.contains("PROBE \(name) refused"), "\(instance.node): \(name)\n\(output)") }
                for (name, _) in allowed { #expect(output.contains("PROBE \(name) ALLOWED"), "\(instance.node): \(name)\n\(output)") }
                #expect(output.contains("PROBE linked"))
                #expect(!output.contains("the-cluster's"))
            }
            // The next config version meets the links: refused on every host, nothing lands in the host folder.
            try await publish("/etc/attacker.conf", "/etc/attacker-go", "/conf/pwned")
            try await cluster.eventually("the version refused on every host", within: .seconds(30)) {
                (1...3).allSatisfy { index in
                    ((try? String(contentsOfFile: "/run/sigma-testbed/\(bed.name)/h\(index)/agent.log", encoding: .utf8)) ?? "")
                        .contains("config change not written")
                }
            }
            // Every host's bridge dropped its instance's datagrams to the overlay port.
            for index in 1...3 {
                let rules = try await bed.run(on: index, "/usr/sbin/nft", ["list", "chain", "bridge", "sigma_sigma0", "prerouting"]).output
                let dropped = rules.split(separator: "\n").first { $0.contains("udp dport 4789") }.map(String.init) ?? ""
                #expect(dropped.contains("counter packets") && !dropped.contains("counter packets 0 "), "h\(index): \(dropped)")
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: hostFolder).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: submount).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "/usr/planted"))
    }
}
