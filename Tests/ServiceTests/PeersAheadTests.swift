import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// Peers known before start (docs/protocol.md, "Startup order and peers"): every ordinal holds its IP from the
/// first pass after an apply or scale-up, placed or not, and Discovery lists it Pending with that IP; `ordered`
/// waits for the predecessor's Running, `ordered-ready` for Running and ready. Real scheduler, allocator,
/// Discovery and PostgreSQL, simulated agents.
@Suite struct PeersAheadTests {
    @Test func everyOrdinalHoldsItsIPFromTheStartAndKeepsItWhenPlaced() async throws {
        try await SchedulerCluster.with(discoveries: 1) { cluster in
            let discovery = try SchedulerCluster.rpcClient(cluster.discoveryEndpoints)
            // Room for two of the three.
            let small = SimulatedAgent("n1", client: cluster.client)
            try await small.register(cpu: 1000)
            small.start()
            defer { small.stop() }
            try await cluster.waitReady(["n1"])
            try await cluster.apply("zk", replicas: 3, cpu: 400) { DiscoveryTests.withPorts(&$0) }
            try await cluster.eventually("two Running, one Pending, each with its own IP") {
                let list = try await cluster.instances("zk")
                return list.filter { $0.state == "Running" }.count == 2 && list.filter { $0.state == "Pending" }.count == 1
                    && Set(list.map(\.ip).filter { !$0.isEmpty }).count == 3
            }
            let waiting = try #require(try await cluster.instances("zk").first { $0.state == "Pending" })
            // (Its reason is the cpu it lacks, or, a loaded machine's pause later, a Suspect node: either way it waits.)
            #expect(waiting.node.isEmpty && !waiting.pendingReason.isEmpty, "\(waiting)")
            // Discovery lists all three, the Pending one with its IP.
            let resolved = try await DiscoveryTests.resolve(discovery, "zk")
            #expect(resolved.endpoints.map(\.ordinal) == [0, 1, 2])
            #expect(resolved.endpoints.allSatisfy { !$0.ip.isEmpty })
            let listed = try #require(resolved.endpoints.first { $0.ordinal == waiting.ordinal })
            #expect(listed.state == "Pending" && listed.ip == waiting.ip && !listed.ready)

            // Scaled up: the new ordinal holds an IP while it waits.
            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "zk"
            scale.replicas = 4
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            try await cluster.eventually("ordinal 3 Pending with an IP") {
                let list = try await cluster.instances("zk")
                return list.count == 4 && Set(list.map(\.ip).filter { !$0.isEmpty }).count == 4
            }
            let before = Dictionary(uniqueKeysWithValues: try await cluster.instances("zk").map { ($0.ordinal, $0.ip) })

            // Room for the rest: they are placed with the IPs they held.
            let big = SimulatedAgent("n2", client: cluster.client)
            try await big.register(cpu: 4000)
            big.start()
            defer { big.stop() }
            try await cluster.eventually("four Running") { try await cluster.allRunning("zk", 4) }
            let after = Dictionary(uniqueKeysWithValues: try await cluster.instances("zk").map { ($0.ordinal, $0.ip) })
            #expect(after == before)

            // Scaled down: what the removed ordinals held goes back to the pool.
            scale.replicas = 1
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            let allocator = try SchedulerCluster.rpcClient([cluster.allocatorEndpoint])
            try await cluster.eventually("three addresses released") {
                let usage = try await allocator.call(AllocatorMethods.listIPPools, .init()).usage
                return try await cluster.instances("zk").count == 1 && usage.first?.used == 1
            }
        }
    }

    /// A pool that cannot serve every ordinal gives what it has; the rest wait without one, and get one when
    /// addresses free up.
    @Test func anExhaustedPoolLeavesTheRestWithoutAnIPUntilOneFrees() async throws {
        // A /29: five addresses to hand out.
        try await SchedulerCluster.with(pool: "100.64.0.0/29") { cluster in
            try await cluster.apply("wide", replicas: 7, cpu: 100)  // no node at all: every ordinal waits
            try await cluster.eventually("five of seven hold an IP") {
                let list = try await cluster.instances("wide")
                return list.count == 7 && list.allSatisfy { $0.state == "Pending" } && list.filter { !$0.ip.isEmpty }.count == 5
            }
            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "wide"
            scale.replicas = 3
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            try await cluster.eventually("the three left hold an IP each") {
                let list = try await cluster.instances("wide")
                return list.count == 3 && Set(list.map(\.ip).filter { !$0.isEmpty }).count == 3
            }
        }
    }

    /// `ordered` starts ordinal k once k-1 is Running, ready or not (a quorum's first member is not ready
    /// alone); `ordered-ready` waits for ready too.
    @Test func orderedWaitsForRunningAndOrderedReadyForReady() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.setReady("quorum", false)
            agent.setReady("chain", false)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("quorum", replicas: 3, cpu: 100) { $0.startup = "ordered" }
            try await cluster.apply("chain", replicas: 3, cpu: 100) { $0.startup = "ordered-ready" }
            try await cluster.eventually("every quorum member Running, none ready") { try await cluster.allRunning("quorum", 3) }
            #expect(try await cluster.instances("quorum").allSatisfy { !$0.ready })
            try await cluster.eventually("the chain's first Running") {
                try await cluster.instances("chain").first { $0.ordinal == 0 }?.state == "Running"
            }
            var get = Sigma_V1_GetAssignmentsRequest()
            get.node = "n1"
            // A few beats later the chain still waits for its first to be ready.
            for _ in 0..<3 { try await agent.beat() }
            let chain = try await cluster.client.call(SchedulerMethods.getAssignments, get).assignments
                .filter { $0.app == "chain" }.sorted { $0.ordinal < $1.ordinal }
            #expect(chain.map(\.mayStart) == [true, false, false])
            #expect(try await cluster.instances("chain").filter { $0.ordinal > 0 }.allSatisfy { $0.state == "Scheduled" })
            agent.setReady("chain", true)
            try await cluster.eventually("the whole chain Running") { try await cluster.allRunning("chain", 3) }
            let second = try #require(try await cluster.instances("chain").first { $0.ordinal == 1 })
            let allowed = try await cluster.events("instance", second.id).filter { $0.reason == "StartAllowed" }
            #expect(allowed.count == 1 && allowed.first?.message.hasSuffix("is Running and ready") == true, "\(allowed)")
            let member = try #require(try await cluster.instances("quorum").first { $0.ordinal == 2 })
            let released = try await cluster.events("instance", member.id).filter { $0.reason == "StartAllowed" }
            #expect(released.count == 1 && released.first?.message.hasSuffix("is Running") == true, "\(released)")
        }
    }
}
