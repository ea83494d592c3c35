import Foundation
import Protocol
import Testing
import TestSupport

/// A heartbeat writes an instance's row only when something the control plane acts on changed (state,
/// readiness, limit, exit code, reason, restarts, next retry); the usage it reports is written by the replica
/// in batches. Checked on the rows themselves: PostgreSQL's xmin is the transaction that last wrote each.
@Suite struct HeartbeatWriteTests {
    static func versions(_ cluster: SchedulerCluster, _ app: String) async throws -> [String: String] {
        let rows = try await cluster.store.query("SELECT id::text AS id, xmin::text AS version FROM instances WHERE app = $1", app)
        return Dictionary(uniqueKeysWithValues: try rows.map { (try $0.decode(String.self, "id"), try $0.decode(String.self, "version")) })
    }

    @Test func aSteadyHeartbeatWritesNoInstanceRow() async throws {
        try await SchedulerCluster.with { cluster in
            // Beaten by hand, one heartbeat at a time.
            let agent = SimulatedAgent("steady", client: cluster.client)
            try await agent.register(cpu: 8000)
            try await cluster.apply("calm", replicas: 3, cpu: 100)
            try await cluster.eventually("3 Running and ready") {
                try await agent.beat()
                let instances = try await cluster.instances("calm")
                return instances.count == 3 && instances.allSatisfy { $0.state == "Running" && $0.ready }
            }
            try await agent.beat()
            let before = try await Self.versions(cluster, "calm")
            for _ in 0..<3 { try await agent.beat() }
            #expect(try await Self.versions(cluster, "calm") == before, "three steady heartbeats wrote no instance row")

            // Usage alone: not in the heartbeat's transaction, but written by the replica within its interval.
            agent.setUsage("calm", cpuMillis: 42, memoryBytes: 42 << 20)
            try await agent.beat()
            try await cluster.eventually("the usage written") {
                try await cluster.instances("calm").allSatisfy { $0.usage.cpuMillis == 42 && $0.usage.memoryBytes == 42 << 20 }
            }
            let written = try await Self.versions(cluster, "calm")
            try await agent.beat()
            #expect(try await Self.versions(cluster, "calm") == written, "the same usage again writes nothing")

            // A change of state is written by the heartbeat itself: seen as soon as it is answered.
            agent.setEnded("calm", "Failed")
            try await agent.beat()
            #expect(try await cluster.instances("calm").allSatisfy { $0.state == "Failed" && $0.exitCode == 1 && !$0.ready })
        }
    }
}
