import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// The scheduler's side of "at most one copy", with simulated agents: the node lease each accepted heartbeat
/// grants, and a safe-mode instance moved to another node that may start there only once its prior copy is
/// gone (docs/protocol.md, "The node's lease" and "Prior copies").
@Suite struct PriorCopyTests {
    static func beat(_ cluster: SchedulerCluster, _ node: String, epoch: Int64, _ statuses: [Sigma_V1_InstanceStatus] = [])
        async throws -> Sigma_V1_HeartbeatResponse {
        var request = Sigma_V1_HeartbeatRequest()
        request.node = node
        request.epoch = epoch
        request.instances = statuses
        return try await cluster.client.call(SchedulerMethods.heartbeat, request)
    }

    static func status(_ id: String, _ generation: Int64, _ state: String) -> Sigma_V1_InstanceStatus {
        var status = Sigma_V1_InstanceStatus()
        status.instanceID = id
        status.generation = generation
        status.state = state
        return status
    }

    @Test func aHeartbeatAtTheCurrentEpochGrantsTheLeaseAndOneToldToFenceDoesNot() async throws {
        try await SchedulerCluster.with(brokenAfter: 4, extra: ["--node-lease", "2.5"]) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register()
            // (Answered from memory after the registration: what is left of the lease it stored, at most 2.5 s.)
            #expect((2000...2500).contains(try await Self.beat(cluster, "n1", epoch: 1).leaseTtlMs))
            try await cluster.eventually("n1 Broken") { try await cluster.node("n1").health == "Broken" }
            let stale = try await Self.beat(cluster, "n1", epoch: 1)
            #expect(stale.fence && stale.leaseTtlMs == 0, "a node that must fence gets no lease")
            let fenced = try await Self.beat(cluster, "n1", epoch: stale.epoch)
            #expect(!fenced.fence && fenced.health == "Ready" && fenced.leaseTtlMs == 2500)
        }
    }

    /// Two apps on n1, one safe and one fast; n1 goes quiet (but not Broken) and is drained. Both are bound to
    /// n2 at once: the fast one runs there at once, the safe one waits while n1 may still run it — n1's
    /// heartbeat that does not mention it is asked to stop it — and starts once n1 reports it Terminated.
    @Test func aSafeInstanceMovedElsewhereStartsOnlyOnceItsOldCopyIsReportedGone() async throws {
        try await SchedulerCluster.with { cluster in
            let n1 = SimulatedAgent("n1", client: cluster.client), n2 = SimulatedAgent("n2", client: cluster.client)
            try await n1.register()
            n1.start()
            defer { n1.stop(); n2.stop() }
            try await cluster.apply("db", replicas: 1, cpu: 100) { $0.failover = "safe" }
            try await cluster.apply("web", replicas: 1, cpu: 100)
            try await cluster.eventually("both Running on n1") {
                let db = try await cluster.allRunning("db", 1), web = try await cluster.allRunning("web", 1)
                return db && web
            }
            let db = try await cluster.instances("db")[0], web = try await cluster.instances("web")[0]
            try await n2.register()
            n2.start()
            n1.stop()  // quiet from now on: only the beats below
            var drain = Sigma_V1_NodeRequest()
            drain.name = "n1"
            _ = try await cluster.client.call(SchedulerMethods.drainNode, drain)

            try await cluster.eventually("the fast one runs on n2") {
                let now = try await cluster.instances("web")[0]
                return now.node == "n2" && now.state == "Running" && now.generation == web.generation + 1
            }
            try await cluster.eventually("the safe one bound to n2") { try await cluster.instances("db")[0].node == "n2" }
            var get = Sigma_V1_GetAssignmentsRequest()
            get.node = "n2"
            let held = try await cluster.client.call(SchedulerMethods.getAssignments, get).assignments.first { $0.instanceID == db.id }
            #expect(held?.mayStart == false, "n1 may still run generation \(db.generation)")
            // n2 beats every 150 ms meanwhile and never starts it.
            for _ in 0..<5 {
                try await Task.sleep(for: .milliseconds(150))
                #expect(n2.running[db.id] == nil)
            }
            #expect(try await cluster.instances("db")[0].state == "Scheduled")

            var remove = Sigma_V1_NodeRequest()
            remove.name = "n1"
            let refused = await #expect(throws: RPCError.self) { try await cluster.client.call(SchedulerMethods.removeNode, remove) }
            #expect(refused?.code == .failedPrecondition && refused?.message.contains("may still run 1 copy(ies) of safe-mode instances") == true,
                    "removed, n1's copies would hold the safe one back for good")

            let silent = try await Self.beat(cluster, "n1", epoch: 1)
            #expect(silent.stop.contains { $0.instanceID == db.id && $0.generation == db.generation },
                    "a prior copy its node does not mention is asked for")
            #expect(!silent.stopInstances.contains(db.id))
            _ = try await Self.beat(cluster, "n1", epoch: 1, [Self.status(db.id, db.generation, "Terminated")])
            try await cluster.eventually("the safe one runs on n2 now") {
                let now = try await cluster.instances("db")[0]
                return now.node == "n2" && now.state == "Running"
            }
            let events = try await cluster.events("instance", db.id)
            let gone = try #require(events.first { $0.reason == "CopyGone" })
            #expect(gone.message == "generation \(db.generation) on n1: reported stopped by n1")
        }
    }

    /// The node of a safe instance's prior copy dies: the copy is gone once the node is Broken and its lease
    /// has certainly lapsed (TTL × 1.01 + the margin after the last granted heartbeat), not before.
    @Test func aDeadNodesPriorCopyIsGoneOnceItsLeaseHasCertainlyLapsed() async throws {
        try await SchedulerCluster.with(brokenAfter: 1, extra: ["--node-lease", "3", "--node-lease-margin", "1"]) { cluster in
            let n1 = SimulatedAgent("n1", client: cluster.client), n2 = SimulatedAgent("n2", client: cluster.client)
            try await n1.register()
            n1.start()
            defer { n1.stop(); n2.stop() }
            try await cluster.apply("db", replicas: 1, cpu: 100) { $0.failover = "safe" }
            try await cluster.eventually("Running on n1") { try await cluster.allRunning("db", 1) }
            let db = try await cluster.instances("db")[0]
            try await n2.register()
            n2.start()
            n1.stop()
            try await cluster.eventually("bound to n2 once n1 is Broken") { try await cluster.instances("db")[0].node == "n2" }
            try await cluster.eventually("running on n2", within: .seconds(30)) {
                try await cluster.instances("db")[0].state == "Running"
            }
            // The lease: 3 s × 1.01 + 1 s after the renewal n1's row holds last (no grant reaches past it); without
            // the lease it would run about 1 s after, once n1 is Broken. (Measured on the database's clock: on a
            // loaded machine n1's last renewal may come well before the test stops its heartbeats.)
            let renewed = try await cluster.store.query(
                "SELECT (extract(epoch FROM lease_renewed_at) * 1000)::bigint AS ms FROM nodes WHERE name = 'n1'")[0].decode(Int64.self, "ms")
            let gone = try #require(try await cluster.events("instance", db.id).first { $0.reason == "CopyGone" })
            #expect(gone.atUnixMs >= renewed + 4030, "gone at \(gone.atUnixMs), the lease renewed at \(renewed)")
            #expect(gone.message == "generation \(db.generation) on n1: its node's lease has certainly lapsed")
        }
    }

    @Test func anUnknownFailoverIsRefusedNamingTheField() async throws {
        try await SchedulerCluster.with { cluster in
            let error = await #expect(throws: RPCError.self) { try await cluster.apply("x", replicas: 1) { $0.failover = "sometimes" } }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains("failover: \"sometimes\" is not one of safe, fast") == true)
        }
    }
}
