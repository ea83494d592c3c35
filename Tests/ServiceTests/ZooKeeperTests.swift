import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// Debian's ZooKeeper 3.8 as a user deploys it: a three-server ensemble in `image: host` instances on three
/// test hosts, its zoo.cfg a config template whose `{{#peers}}` lists every server, `startup: ordered`, and a
/// readiness probe that passes only once the server has joined a quorum. It forms in one pass: ordinal 0
/// starts with the full member list (every ordinal holds its IP from the start) and cannot be ready alone, so
/// ordinal 1 starts on its Running; no server restarts, one leads, two follow.
@Suite struct ZooKeeperTests {
    static let zooCfg = """
        tickTime=500
        initLimit=40
        syncLimit=20
        dataDir=/var/lib/zk
        clientPort=2181
        admin.enableServer=false
        4lw.commands.whitelist=srvr
        {{#peers}}
        server.{{ordinal}}={{ip}}:2888:3888
        {{/peers}}

        """
    static let classPath = "/usr/share/java/slf4j-simple.jar:/usr/share/java/zookeeper.jar"
    static let script = """
        echo "zk-{{instance.ordinal}} at {{instance.ip}}: $(grep -c '^server\\.' /etc/zk/zoo.cfg) servers"
        exec java -Xmx96m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp \(classPath) \\
            org.apache.zookeeper.server.quorum.QuorumPeerMain /etc/zk/zoo.cfg
        """
    /// What `srvr` says its mode is, asked on the instance's own loopback.
    static let mode = "echo srvr | busybox nc -w 2 127.0.0.1 2181 | sed -n 's/^Mode: //p'"

    @Test func anOrderedEnsembleFormsInOnePass() async throws {
        try await Testbed.with(hosts: 3, configs: 1, discoveries: 1) { bed, cluster in
            let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
            var publish = Sigma_V1_PublishConfigRequest()
            publish.app = "zk"
            publish.files = [("/etc/zk/zoo.cfg", Self.zooCfg), ("/var/lib/zk/myid", "{{instance.ordinal}}\n")].map { path, content in
                var file = Sigma_V1_ConfigFile()
                file.path = path
                file.content = Data(content.utf8)
                return file
            }
            publish.script = Self.script
            _ = try await config.call(ConfigMethods.publish, publish)
            try await cluster.apply("zk", replicas: 3, cpu: 200, memory: 256 << 20) { spec in
                spec.image = "host"
                spec.config.app = "zk"
                spec.startup = "ordered"
                spec.resources.limit.cpuMillis = 2000
                spec.resources.limit.memoryBytes = 512 << 20
                spec.lifecycle.stopGracePeriodSeconds = 2
                var probe = Sigma_V1_Probe()
                probe.exec = ["/bin/sh", "-c", "\(Self.mode) | grep -Eq '^(leader|follower)$'"]
                probe.periodSeconds = 1
                probe.failureThreshold = 1
                probe.timeoutSeconds = 5
                spec.lifecycle.readiness = probe
            }
            try await cluster.eventually("three servers Running and ready", within: .seconds(180)) {
                let list = try await cluster.instances("zk")
                return list.count == 3 && list.allSatisfy { $0.state == "Running" && $0.ready }
            }
            let servers = try await cluster.instances("zk").sorted { $0.ordinal < $1.ordinal }
            #expect(servers.allSatisfy { $0.restarts == 0 }, "\(servers.map { "\($0.ordinal): \($0.restarts) restart(s), \($0.reason)" })")
            var modes: [String] = []
            for server in servers {
                let host = bed.nodes.firstIndex(of: server.node)! + 1
                let answer = try await bed.run(inNamespace: try bed.namespace(of: server.id, on: host), "/bin/sh", ["-c", Self.mode])
                modes.append(answer.output.trimmingCharacters(in: .whitespacesAndNewlines))
                let console = (try? String(contentsOfFile: "/run/sigma-testbed/\(bed.name)/h\(host)/state/instances/\(server.id)/console.log",
                                           encoding: .utf8)) ?? ""
                #expect(console.contains("zk-\(server.ordinal) at \(server.ip): 3 servers"), "\(console.prefix(2000))")
            }
            #expect(modes.sorted() == ["follower", "follower", "leader"], "\(modes)")
            // Ordinal k started on k-1's Running, before k-1 could be ready (it needs a quorum).
            for server in servers.dropFirst() {
                let allowed = try await cluster.events("instance", server.id).filter { $0.reason == "StartAllowed" }
                #expect(allowed.count == 1 && allowed.first?.message.hasSuffix("is Running") == true, "\(allowed)")
            }
        }
    }
}
