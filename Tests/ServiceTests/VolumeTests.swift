import Foundation
import NodeRuntime
import Protocol
import Testing
import TestSupport

/// Volumes (`AppSpec.volumes`) with a real agent, runc and the real scheduler: one per ordinal, an ext4 image
/// on the node that outlives the instance, mounted where the spec says, no larger than its size.
@Suite struct VolumeTests {
    /// Each start appends `fresh=SIGMA_VOLUME_FRESH` to its volume's log, and tries to write past the volume's
    /// size once (`dd=` its exit code); the data is there after a restart and after a rolling update.
    static let script = """
        echo "fresh=$SIGMA_VOLUME_FRESH rev=$REV" >> /data/log
        dd if=/dev/zero of=/data/big bs=1M count=100 2>/dev/null; r=$?; rm -f /data/big; echo "dd=$r" >> /data/log
        trap 'exit 0' TERM; while :; do sleep 0.05; done
        """

    /// App `vol`: one instance running `script` with a 64 MiB volume at /data; `REV` in its environment.
    static func apply(_ cluster: SchedulerCluster, revision: Int) async throws {
        try await cluster.apply("vol", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
            spec.image = "host"
            spec.command = ["/bin/sh", "-c", Self.script]
            spec.env = ["REV": "\(revision)"]
            var volume = Sigma_V1_Volume()
            volume.name = "data"
            volume.mountPath = "/data"
            volume.sizeBytes = 64 << 20
            spec.volumes = [volume]
        }
    }

    /// (The volume retention is 5 s here, 0.0014 hours: the deleted app's volume goes at the end, never sooner.)
    @Test func anOrdinalKeepsItsVolumeAcrossARestartAndARollingUpdate() async throws {
        try await SchedulerCluster.forAgents(extra: ["--volume-retention", "0.0014"]) { cluster in
            try await RealAgent.with(cluster) { agent in
                try await Self.apply(cluster, revision: 1)
                let volumes = VolumeStore(stateDirectory: agent.state)
                let log = volumes.mountPoint(team: "", app: "vol", ordinal: 0, name: "data") + "/log"
                func lines() -> [String] {
                    (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").map(String.init) ?? []
                }
                try await cluster.eventually("the first start wrote to a fresh volume") { lines().count >= 2 }
                #expect(Array(lines().prefix(2)) == ["fresh=1 rev=1", "dd=1"], "\(lines()): fresh, and 100 MiB do not fit in 64 MiB")

                // Its process killed: the restart finds the same volume.
                let pid = try #require(try await agent.localInstances().first?.pid)
                kill(pid_t(pid), SIGKILL)
                try await cluster.eventually("restarted") { lines().count >= 4 }
                #expect(Array(lines().prefix(4)) == ["fresh=1 rev=1", "dd=1", "fresh=0 rev=1", "dd=1"])

                // A new revision is a new generation on the same node, with the same volume.
                let before = try #require(try await cluster.instance("vol"))
                try await Self.apply(cluster, revision: 2)
                try await cluster.eventually("the new revision runs") {
                    let now = try await cluster.instance("vol")
                    return now?.generation == before.generation + 1 && now?.state == "Running" && lines().count >= 6
                }
                #expect(Array(lines().suffix(2)) == ["fresh=0 rev=2", "dd=1"])
                #expect(lines().count == 6)

                var delete = Sigma_V1_AppRequest()
                delete.name = "vol"
                let deletedAt = ContinuousClock.now
                _ = try await cluster.client.call(SchedulerMethods.deleteApp, delete)
                try await cluster.eventually("unmounted once the instance stopped") {
                    let mounts = try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)
                    return try await agent.localInstances().isEmpty && !mounts.contains(volumes.directory)
                }
                let image = volumes.folder(team: "", app: "vol", ordinal: 0) + "/data.img"
                try await cluster.eventually("removed after the retention", within: .seconds(60)) { !FileManager.default.fileExists(atPath: image) }
                // (Timed from before the delete was sent: the retention starts when it is committed, or later.)
                #expect(ContinuousClock.now - deletedAt >= .seconds(5), "the image stays on the node for the retention")
                try await cluster.eventually("its row gone once the agent said so") {
                    try await cluster.store.query("SELECT count(*)::bigint AS n FROM volumes")[0].decode(Int64.self, "n") == 0
                }
            }
        }
    }
}
