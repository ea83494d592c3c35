import Foundation
import NodeRuntime
import Protocol
import RPC
import Testing
import TestSupport

/// Volumes on three real test hosts: an ordinal drained away and back finds the data it wrote before; one
/// whose node is lost starts elsewhere with a fresh volume and says so (`SIGMA_VOLUME_FRESH=1`).
@Suite struct VolumeTestbedTests {
    static let script = """
        echo "fresh=$SIGMA_VOLUME_FRESH node=$SIGMA_NODE" >> /data/log
        trap 'exit 0' TERM; while :; do sleep 0.05; done
        """

    @Test func drainedAwayAndBackItFindsItsDataAndANodeLostStartsFreshSayingSo() async throws {
        try await Testbed.with(hosts: 3, brokenAfter: 3, schedulerFlags: ["--node-lease-margin", "2"]) { bed, cluster in
            try await cluster.apply("kv", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                spec.image = "host"
                spec.command = ["/bin/sh", "-c", Self.script]
                spec.lifecycle.stopGracePeriodSeconds = 1
                var volume = Sigma_V1_Volume()
                volume.name = "data"
                volume.mountPath = "/data"
                volume.sizeBytes = 32 << 20
                spec.volumes = [volume]
            }
            func log(on host: Int) -> [String] {
                let path = VolumeStore(stateDirectory: "/run/sigma-testbed/\(bed.name)/h\(host)/state")
                    .mountPoint(team: "", app: "kv", ordinal: 0, name: "data") + "/log"
                return ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            }
            func runs(on host: Int, lines: Int) async throws {
                try await cluster.eventually("kv-0 running on h\(host), its log \(lines) line(s)", within: .seconds(60)) {
                    let now = try await cluster.instance("kv")
                    return now?.node == bed.nodes[host - 1] && now?.state == "Running" && log(on: host).count == lines
                }
            }
            func node(_ host: Int, _ method: RPCMethod<Sigma_V1_NodeRequest, Sigma_V1_NodeResponse>) async throws {
                var request = Sigma_V1_NodeRequest()
                request.name = bed.nodes[host - 1]
                _ = try await cluster.client.call(method, request)
            }
            try await cluster.eventually("kv-0 running", within: .seconds(60)) { try await cluster.allRunning("kv", 1) }
            let first = bed.nodes.firstIndex(of: try #require(try await cluster.instance("kv")).node)! + 1
            try await runs(on: first, lines: 1)
            #expect(log(on: first) == ["fresh=1 node=\(bed.nodes[first - 1])"])

            // Drained off its node: a new volume elsewhere.
            try await node(first, SchedulerMethods.drainNode)
            try await cluster.eventually("moved", within: .seconds(60)) {
                let now = try await cluster.instance("kv")
                return now?.node != bed.nodes[first - 1] && now?.state == "Running"
            }
            let second = bed.nodes.firstIndex(of: try #require(try await cluster.instance("kv")).node)! + 1
            try await runs(on: second, lines: 1)
            #expect(log(on: second) == ["fresh=1 node=\(bed.nodes[second - 1])"])

            // Back: the first node still holds its volume and takes it again (the preference itself: VolumeHomeTests).
            try await node(first, SchedulerMethods.uncordonNode)
            try await node(second, SchedulerMethods.drainNode)
            try await runs(on: first, lines: 2)
            #expect(log(on: first) == ["fresh=1 node=\(bed.nodes[first - 1])", "fresh=0 node=\(bed.nodes[first - 1])"])

            // Its node lost, the one that held it before out of the way: a fresh volume on the third, and it knows.
            try await node(second, SchedulerMethods.uncordonNode)
            try await node(second, SchedulerMethods.cordonNode)
            let third = Set(1...3).subtracting([first, second]).first!
            try await bed.kill(host: first)
            try await runs(on: third, lines: 1)
            #expect(log(on: third) == ["fresh=1 node=\(bed.nodes[third - 1])"])
        }
    }
}
