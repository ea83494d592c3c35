import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// sigma-scheduler through the real executables (scheduler, allocator) and PostgreSQL, with simulated agents.
@Suite(.serialized) struct SchedulerTests {
    @Test func placesWithSpreadAndSumsThePool() async throws {
        try await SchedulerCluster.with { cluster in
            let agents = ["a1", "a2", "b1", "b2"].map { SimulatedAgent($0, client: cluster.client) }
            for agent in agents { try await agent.register(idc: "idc-\(agent.name.prefix(1))", cpu: 4000, memory: 8 << 30) }
            agents.forEach { $0.start() }
            defer { agents.forEach { $0.stop() } }

            let applied = try await cluster.apply("web", replicas: 6, cpu: 500, memory: 1 << 30) { $0.resources.limit.cpuMillis = 2000 }
            #expect(applied.changed && applied.app.revision == 1)
            try await cluster.eventually("6 instances Running") { try await cluster.allRunning("web", 6) }

            let instances = try await cluster.instances("web")
            let perIDC = Dictionary(grouping: instances) { $0.node.prefix(1) }.mapValues(\.count)
            #expect(perIDC == ["a": 3, "b": 3])
            let perNode = Dictionary(grouping: instances, by: \.node).mapValues(\.count)
            #expect(perNode.values.max()! - perNode.values.min()! <= 1)
            #expect(Set(instances.map(\.ip)).count == 6)
            #expect(instances.allSatisfy { $0.ip.hasPrefix("100.64.") && $0.generation == 1 })

            var poolRequest = Sigma_V1_GetPoolRequest()
            poolRequest.groupBy = ["idc"]
            let pool = try await cluster.client.call(SchedulerMethods.getPool, poolRequest)
            #expect(pool.total.nodes == 4 && pool.total.readyNodes == 4)
            #expect(pool.total.capacity.cpuMillis == 16000)
            #expect(pool.total.requested.cpuMillis == 3000)
            #expect(pool.total.limits.cpuMillis == 12000)
            #expect(pool.total.instances == 6)
            #expect(pool.groups.map(\.value) == ["idc-a", "idc-b"])
            #expect(pool.groups.map(\.figures.requested.cpuMillis) == [1500, 1500])
            #expect(pool.nodes.map(\.figures.requested.cpuMillis).reduce(0, +) == 3000)

            // Applying the same spec again changes nothing.
            #expect(try await cluster.apply("web", replicas: 6, cpu: 500, memory: 1 << 30) { $0.resources.limit.cpuMillis = 2000 }.changed == false)
        }
    }

    @Test func requestsNeverOvercommitAndPendingSaysWhy() async throws {
        try await SchedulerCluster.with { cluster in
            let agents = ["n1", "n2"].map { SimulatedAgent($0, client: cluster.client) }
            try await agents[0].register(cpu: 2000, memory: 8 << 30)
            try await agents[1].register(cpu: 2000, memory: 8 << 30, labels: ["disk": "hdd"])
            agents.forEach { $0.start() }
            defer { agents.forEach { $0.stop() } }

            // Four instances asking 1 core (limit 4) fit two 2-core nodes; the fifth waits.
            try await cluster.apply("db", replicas: 5, cpu: 1000) { $0.resources.limit.cpuMillis = 4000 }
            try await cluster.eventually("4 Running, 1 Pending with a reason") {
                let list = try await cluster.instances("db")
                return list.filter { $0.state == "Running" }.count == 4 && list.contains { $0.pendingReason.contains("insufficient cpu") }
            }
            let pending = try await cluster.instances("db").first { $0.state == "Pending" }!
            #expect(pending.pendingReason == "0/2 nodes available: 2 insufficient cpu")
            let pool = try await cluster.client.call(SchedulerMethods.getPool, .init())
            #expect(pool.total.requested.cpuMillis == 4000 && pool.total.capacity.cpuMillis == 4000)
            #expect(pool.total.limits.cpuMillis == 16000)

            // A selector no node matches: Pending with the explanation, not an error.
            try await cluster.apply("ssd-only", replicas: 1, cpu: 0) {
                var requirement = Sigma_V1_LabelRequirement()
                requirement.key = "disk"
                requirement.operator = "In"
                requirement.values = ["ssd"]
                $0.nodeSelector = [requirement]
            }
            try await cluster.eventually("selector explained") {
                try await cluster.instances("ssd-only").first?.pendingReason == "0/2 nodes available: 2 selector mismatch"
            }
            var get = Sigma_V1_GetInstanceRequest()
            get.app = "ssd-only"
            let described = try await cluster.client.call(SchedulerMethods.getInstance, get)
            #expect(described.events.contains { $0.reason == "FailedScheduling" && $0.message.contains("selector mismatch") })
        }
    }

    @Test func badInputGetsTypedErrors() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 4000, memory: 8 << 30)

            await #expect(throws: RPCError.invalidArgument(
                "spec.name: \"Bad_Name\" is not a name (lowercase letters, digits and '-', 1-63 characters, starting with a letter); spec.resources.limit.cpu: 100m is below the request 1 (0 means unlimited)"
            )) {
                try await cluster.apply("Bad_Name", replicas: 1) { $0.resources.limit.cpuMillis = 100 }
            }
            await #expect(throws: RPCError.self) { try await cluster.apply("web", replicas: 1) { $0.network = "bridge" } }
            do {
                try await cluster.apply("huge", replicas: 1, cpu: 64000)
                Issue.record("a request larger than every node was accepted")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains("more than any node has (largest: cpu 4, memory 8Gi)"))
            }
            var get = Sigma_V1_AppRequest()
            get.name = "nothing"
            await #expect(throws: RPCError.notFound("no app nothing")) { try await cluster.client.call(SchedulerMethods.getApp, get) }

            var beat = Sigma_V1_HeartbeatRequest()
            beat.node = "stranger"
            await #expect(throws: RPCError.notFound("node stranger is not registered; call RegisterNode first")) {
                try await cluster.client.call(SchedulerMethods.heartbeat, beat)
            }
            beat.node = "n1"
            var status = Sigma_V1_InstanceStatus()
            status.instanceID = "not-a-uuid"
            status.state = "Running"
            beat.instances = [status]
            await #expect(throws: RPCError.invalidArgument("instances.instance_id: \"not-a-uuid\" is not a UUID")) {
                try await cluster.client.call(SchedulerMethods.heartbeat, beat)
            }

            var register = Sigma_V1_RegisterNodeRequest()
            register.name = "n2"
            register.hostIp = "300.1.1.1"
            await #expect(throws: RPCError.invalidArgument("host_ip: \"300.1.1.1\" is not an IPv4 address")) {
                try await cluster.client.call(SchedulerMethods.registerNode, register)
            }
        }
    }
}
