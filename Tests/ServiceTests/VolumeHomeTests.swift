import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// The scheduler's side of volumes, with simulated agents: where each ordinal's volumes are (the `volumes`
/// table), placement that goes back to them, and their release after the retention through the heartbeats.
@Suite struct VolumeHomeTests {
    static func withVolume(_ spec: inout Sigma_V1_AppSpec) {
        var volume = Sigma_V1_Volume()
        volume.name = "data"
        volume.mountPath = "/data"
        volume.sizeBytes = 1 << 30
        spec.volumes = [volume]
    }

    static func node(_ cluster: SchedulerCluster, _ name: String, drain: Bool) async throws {
        var request = Sigma_V1_NodeRequest()
        request.name = name
        _ = try await cluster.client.call(drain ? SchedulerMethods.drainNode : SchedulerMethods.uncordonNode, request)
    }

    enum Data: String, CaseIterable, Sendable { case volume, ssd }

    /// db-0 runs on n1, is drained to n2, and n1 comes back; drained off n2 it goes back to n1, where its
    /// volume (or its SSD, still its own) is, although n3 is emptier (the placer alone would take n3: `filler`
    /// weighs on n1).
    @Test(arguments: Data.allCases)
    func aMovedOrdinalGoesBackToTheNodeThatHoldsItsData(_ data: Data) async throws {
        try await SchedulerCluster.with { cluster in
            let agents = ["n1", "n2", "n3"].map { SimulatedAgent($0, client: cluster.client) }
            try await agents[0].register(cpu: 4000, ssds: [64 << 30])
            agents[0].start()
            defer { agents.forEach { $0.stop() } }
            try await cluster.apply("db", replicas: 1, cpu: 100) { spec in
                if data == .volume { Self.withVolume(&spec) } else { spec.ssd.count = 1 }
            }
            try await cluster.eventually("db-0 on n1") { try await cluster.instances("db").first?.state == "Running" }
            // Pinned to n1: it weighs there whenever n1 takes work.
            try await cluster.apply("filler", replicas: 1, cpu: 2000) { spec in
                var pin = Sigma_V1_LabelRequirement()
                pin.key = "node"
                pin.operator = "In"
                pin.values = ["n1"]
                spec.nodeSelector = [pin]
            }
            try await cluster.eventually("filler on n1") { try await cluster.allRunning("filler", 1) }
            let firstSSDs = try #require(try await cluster.instances("db").first).ssdPaths
            for agent in agents.dropFirst() {
                try await agent.register(cpu: 4000, ssds: [64 << 30])
                agent.start()
            }
            try await Self.node(cluster, "n1", drain: true)
            // Off n1, and the two others are alike: whichever it took, drain that one too once n1 is back.
            try await cluster.eventually("db-0 off n1") {
                let db = try await cluster.instances("db").first
                return db?.node != "n1" && db?.state == "Running"
            }
            let second = try #require(try await cluster.instances("db").first?.node)
            try await Self.node(cluster, "n1", drain: false)
            try await cluster.eventually("filler back on n1") { try await cluster.allRunning("filler", 1) }
            try await Self.node(cluster, second, drain: true)
            try await cluster.eventually("db-0 back on n1, where its volume is") {
                let db = try await cluster.instances("db").first
                return db?.node == "n1" && db?.state == "Running"
            }
            let homes = try await cluster.store.query("SELECT node FROM volumes WHERE app = 'db' ORDER BY bound_at DESC")
            #expect(try homes.map { try $0.decode(String.self, "node") } == ["n1", second])
            if data == .ssd {
                #expect(try await cluster.instances("db").first?.ssdPaths == firstSSDs, "the same SSD as before, its data on it")
                let held = try await cluster.store.query("SELECT node FROM ssds WHERE instance IS NOT NULL ORDER BY node")
                #expect(try held.map { try $0.decode(String.self, "node") } == ["n1", second].sorted(), "the one it left is still its own")
            }
        }
    }

    /// A deleted app's volumes go after the retention: the node is told in its heartbeat until it says they
    /// are gone; a scaled-down ordinal's come back with it within the retention.
    @Test func volumesAreReleasedAfterTheRetentionThroughTheHeartbeats() async throws {
        try await SchedulerCluster.with(extra: ["--volume-retention", "0.0003"]) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 4000)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("db", replicas: 2, cpu: 100) { Self.withVolume(&$0) }
            try await cluster.eventually("2 Running") { try await cluster.allRunning("db", 2) }
            func beat(released: [Sigma_V1_VolumeRef] = []) async throws -> Sigma_V1_HeartbeatResponse {
                var request = Sigma_V1_HeartbeatRequest()
                request.node = "n1"
                request.epoch = 1
                request.releasedVolumes = released
                return try await cluster.client.call(SchedulerMethods.heartbeat, request)
            }
            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "db"
            scale.replicas = 1
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            try await cluster.eventually("db-1's volume due") { try await beat().releaseVolumes.map(\.ordinal) == [1] }
            let due = try await beat().releaseVolumes
            #expect(due.first?.app == "db" && due.first?.team == "")
            _ = try await beat(released: due)
            #expect(try await beat().releaseVolumes.isEmpty, "said gone: no longer asked")

            var delete = Sigma_V1_AppRequest()
            delete.name = "db"
            _ = try await cluster.client.call(SchedulerMethods.deleteApp, delete)
            try await cluster.eventually("db-0's volume due") { try await beat().releaseVolumes.map(\.ordinal) == [0] }
        }
    }
}
