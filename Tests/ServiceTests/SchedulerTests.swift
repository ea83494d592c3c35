import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// sigma-scheduler through the real executables (scheduler, allocator) and PostgreSQL, with simulated agents.
@Suite(.serialized) struct SchedulerTests {
    /// Events live for --events-retention hours and audit log entries for --audit-retention: older ones are
    /// deleted by the active scheduler's passes.
    @Test func eventsPastTheirRetentionAreDeleted() async throws {
        try await SchedulerCluster.with(extra: ["--events-retention", "1", "--audit-retention", "3"]) { cluster in
            try await cluster.store.execute(
                """
                INSERT INTO events (kind, name, reason, message, at) VALUES
                    ('node', 'old', 'Ready', 'two hours ago', now() - interval '2 hours'),
                    ('node', 'new', 'Ready', 'a minute ago', now() - interval '1 minute')
                """)
            try await cluster.store.execute(
                """
                INSERT INTO audit_log (service, method, caller, role, caller_key, status, subject, message, at) VALUES
                    ('scheduler', 'ApplyApp', 'old', 'operator', '', 'OK', 'web', '', now() - interval '4 hours'),
                    ('scheduler', 'ApplyApp', 'new', 'operator', '', 'OK', 'web', '', now() - interval '2 hours')
                """)
            try await cluster.eventually("the old event and audit entry deleted") {
                let events = try await cluster.store.query("SELECT 1 FROM events WHERE name = 'old'")
                let audit = try await cluster.store.query("SELECT 1 FROM audit_log WHERE caller = 'old'")
                return events.isEmpty && audit.isEmpty
            }
            #expect(try await cluster.store.query("SELECT 1 FROM events WHERE name = 'new'").count == 1)
            #expect(try await cluster.store.query("SELECT 1 FROM audit_log WHERE caller = 'new'").count == 1)
        }
    }

    @Test func placesWithSpreadAndSumsThePool() async throws {
        try await SchedulerCluster.with { cluster in
            let agents = ["a1", "a2", "b1", "b2"].map { SimulatedAgent($0, client: cluster.client) }
            for agent in agents { try await agent.register(idc: "idc-\(agent.name.prefix(1))", cpu: 4000, memory: 8 << 30) }
            agents.forEach { $0.start() }
            defer { agents.forEach { $0.stop() } }
            try await cluster.waitReady(agents.map(\.name))

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
                "spec.name: \"Bad_Name\" is not a name ([a-z][a-z0-9-]*, at most 63 characters, not ending in '-'); spec.resources.limit.cpu: 100m is below the request 1 (0 means unlimited)"
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
            // A bad entry is refused alone, never the heartbeat (see badHeartbeatEntriesAreRefusedAlone...).
            let answer = try await cluster.client.call(SchedulerMethods.heartbeat, beat)
            #expect(answer.refused.map(\.message) == ["instance_id: \"not-a-uuid\" is not a UUID"])

            var register = Sigma_V1_RegisterNodeRequest()
            register.name = "n2"
            register.hostIp = "300.1.1.1"
            await #expect(throws: RPCError.invalidArgument("host_ip: \"300.1.1.1\" is not an IPv4 address")) {
                try await cluster.client.call(SchedulerMethods.registerNode, register)
            }
        }
    }

    @Test func brokenNodeMigratesKeepingTheIPAndFencesOnReturn() async throws {
        // Broken after 6 s of silence (Suspect after 2 s). The victim is whichever node holds the first instance:
        // a loaded CI machine's pause once made a node Broken while the three were placed, they went to the other
        // two for good (placement never rebalances), and "one on each node" never came.
        try await SchedulerCluster.with(brokenAfter: 6) { cluster in
            let agents = ["n1", "n2", "n3"].map { SimulatedAgent($0, client: cluster.client) }
            for agent in agents { try await agent.register(idc: "idc-\(agent.name)", cpu: 4000) }
            agents.forEach { $0.start() }
            defer { agents.forEach { $0.stop() } }
            try await cluster.waitReady(agents.map(\.name))
            try await cluster.apply("kv", replicas: 3, cpu: 500)
            try await cluster.eventually("3 Running") { try await cluster.allRunning("kv", 3) }
            let before = try await cluster.instances("kv")
            // (Unwrapped with #require, never `!`: a crash would end every other suite's run with it.)
            let victim = try #require(before.first)
            let silent = try #require(agents.first { $0.name == victim.node })
            let epoch = try await cluster.node(silent.name).epoch

            silent.stop()  // the victim's node goes silent
            try await cluster.eventually("\(silent.name) Broken") { try await cluster.node(silent.name).health == "Broken" }
            try await cluster.eventually("the instance runs elsewhere") {
                let moved = try await cluster.instances("kv").first { $0.id == victim.id }
                return moved?.state == "Running" && moved?.node != silent.name
            }
            let moved = try #require(try await cluster.instances("kv").first { $0.id == victim.id })
            #expect(moved.ip == victim.ip)
            #expect(moved.generation == victim.generation + 1)
            let reasons = try await cluster.events("instance", victim.id).map(\.reason)
            // (CopyGone may follow: the node's lease lapses and the old copy counts as gone, fast mode or not.)
            #expect(reasons.contains("NeedMigration") && reasons.last { $0 != "CopyGone" } == "Running", "\(reasons)")
            #expect(Set(try await cluster.instances("kv").map(\.ip)) == Set(before.map(\.ip)))
            #expect(try await cluster.node(silent.name).epoch == epoch + 1)

            // The node comes back still running the old copy: it is told to fence, stops it, and only then is Ready.
            #expect(silent.running[victim.id] != nil)
            let first = try await silent.beat()
            #expect(first.fence && first.health == "Broken" && first.epoch == epoch + 1)
            #expect(silent.running[victim.id] == nil)
            let second = try await silent.beat()
            #expect(!second.fence && second.health == "Ready")
            let nodeEvents = try await cluster.events("node", silent.name).map(\.reason)
            #expect(Array(nodeEvents.suffix(3)) == ["Suspect", "Broken", "Ready"])
        }
    }

    @Test func staleGenerationIsToldToStop() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register()
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("one", replicas: 1, cpu: 100)
            try await cluster.eventually("Running") { try await cluster.allRunning("one", 1) }
            let instance = try await cluster.instances("one")[0]
            var beat = Sigma_V1_HeartbeatRequest()
            beat.node = "n1"
            beat.epoch = 1
            var status = Sigma_V1_InstanceStatus()
            status.instanceID = instance.id
            status.generation = instance.generation - 1
            status.state = "Running"
            beat.instances = [status]
            let response = try await cluster.client.call(SchedulerMethods.heartbeat, beat)
            #expect(response.stopInstances == [instance.id])
            #expect(response.stop.map { "\($0.instanceID)/\($0.generation)" } == ["\(instance.id)/\(instance.generation - 1)"])
            #expect(try await cluster.instances("one")[0].state == "Running")
        }
    }

    /// An instance on a node is (id, generation): the old generation's end and the new one in one heartbeat
    /// never conflict, and bad entries are refused one by one while the rest (and the node's liveness) counts.
    @Test func badHeartbeatEntriesAreRefusedAloneAndOldGenerationsNeverConflict() async throws {
        try await SchedulerCluster.with(brokenAfter: 30) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register()
            try await cluster.apply("one", replicas: 1, cpu: 100)
            try await cluster.eventually("Scheduled") { try await cluster.instances("one").first?.state == "Scheduled" }
            let instance = try await cluster.instances("one")[0]
            func status(_ id: String, _ generation: Int64, _ state: String) -> Sigma_V1_InstanceStatus {
                var status = Sigma_V1_InstanceStatus()
                status.instanceID = id
                status.generation = generation
                status.state = state
                status.ready = true
                return status
            }
            var beat = Sigma_V1_HeartbeatRequest()
            beat.node = "n1"
            beat.epoch = 1
            beat.instances = [
                status(instance.id, instance.generation - 1, "Terminated"),  // the old generation's end: no conflict
                status(instance.id.uppercased(), instance.generation, "Running"),
                status("not-a-uuid", 1, "Running"),
                status(UUID().uuidString, 1, "Pending"),
                status(UUID().uuidString, 1, "BogusState"),
                status(instance.id, instance.generation, "Running"),  // the same generation twice
            ]
            // The enum beside the string must name the same state.
            var disagreeing = status(UUID().uuidString, 1, "Running")
            disagreeing.stateCode = .instanceStateFailed
            beat.instances.append(disagreeing)
            let before = try await cluster.node("n1").lastHeartbeatUnixMs
            let response = try await cluster.client.call(SchedulerMethods.heartbeat, beat)
            #expect(response.stop.isEmpty && response.stopInstances.isEmpty)
            #expect(response.refused.map(\.code) == Array(repeating: .invalidArgument, count: 5))
            let messages = response.refused.map(\.message)
            #expect(messages[0].contains("not a UUID") && messages[1].contains("state: Pending is not a state an agent reports"))
            #expect(messages[2].contains("\"BogusState\"") && messages[3].contains("reported twice"), "\(messages)")
            #expect(messages[4].contains("(state_code 7) is not a known state, or the two disagree"), "\(messages)")
            #expect(response.health == "Ready")
            #expect(try await cluster.instances("one")[0].state == "Running")
            #expect(try await cluster.node("n1").lastHeartbeatUnixMs >= before)
        }
    }

    @Test func orderedStartWaitsForThePredecessor() async throws {
        // The agent beats only when the test says so: thresholds far away.
        try await SchedulerCluster.with(brokenAfter: 30) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            try await cluster.apply("zk", replicas: 3, cpu: 100) { $0.startup = "ordered" }
            try await cluster.eventually("3 Scheduled") { try await cluster.instances("zk").allSatisfy { $0.state == "Scheduled" } }
            var get = Sigma_V1_GetAssignmentsRequest()
            get.node = "n1"
            let gates = try await cluster.client.call(SchedulerMethods.getAssignments, get).assignments.sorted { $0.ordinal < $1.ordinal }.map(\.mayStart)
            #expect(gates == [true, false, false])
            // Each beat starts what may start; Running releases the next ordinal.
            for _ in 0..<3 { try await agent.beat() }
            try await cluster.eventually("3 Running") { try await cluster.allRunning("zk", 3) }
            let list = try await cluster.instances("zk").sorted { $0.ordinal < $1.ordinal }
            var allowedAt: [Int64] = []
            var runningAt: [Int64] = []
            for instance in list {
                let events = try await cluster.events("instance", instance.id)
                runningAt.append(events.first { $0.reason == "Running" }!.id)
                if instance.ordinal > 0 { allowedAt.append(events.first { $0.reason == "StartAllowed" }!.id) }
            }
            #expect(runningAt[0] < allowedAt[0] && allowedAt[0] < runningAt[1])
            #expect(runningAt[1] < allowedAt[1] && allowedAt[1] < runningAt[2])
        }
    }

    @Test func standbyTakesOverWhenTheLeaderDies() async throws {
        try await SchedulerCluster.with(schedulers: 2) { cluster in
            func roles() async throws -> [String] {
                var roles: [String] = []
                for client in cluster.each { roles.append(try await client.call(CommonMethods.health, .init()).role) }
                return roles
            }
            try await cluster.eventually("one active") { try await roles().sorted() == ["active", "standby"] }
            let active = try await roles().firstIndex(of: "active")!
            cluster.processes[active].crash()
            let survivor = cluster.each[1 - active]
            try await cluster.eventually("the standby is active", within: .seconds(10)) {
                try await survivor.call(CommonMethods.health, .init()).role == "active"
            }
            let agent = SimulatedAgent("n1", client: survivor)
            try await agent.register()
            agent.start()
            defer { agent.stop() }
            var request = Sigma_V1_ApplyAppRequest()
            request.spec.name = "after"
            request.spec.image = "host"
            request.spec.replicas = 2
            _ = try await survivor.call(SchedulerMethods.applyApp, request)
            var list = Sigma_V1_ListInstancesRequest()
            list.app = "after"
            try await cluster.eventually("placed by the new leader") {
                try await survivor.call(SchedulerMethods.listInstances, list).instances.filter { $0.state == "Running" }.count == 2
            }
        }
    }

    @Test func exhaustedIPPoolLeavesInstancesPendingWithTheAllocatorsReason() async throws {
        // A /29 has five addresses to hand out (network, gateway and broadcast are reserved).
        try await SchedulerCluster.with(pool: "100.64.0.0/29") { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("many", replicas: 7, cpu: 100)
            try await cluster.eventually("5 Running, 2 Pending without an IP") {
                let list = try await cluster.instances("many")
                return list.filter { $0.state == "Running" }.count == 5
                    && list.filter { $0.state == "Pending" && $0.pendingReason.hasPrefix("no instance IP") }.count == 2
            }
            let pending = try await cluster.instances("many").first { $0.state == "Pending" }!
            #expect(pending.pendingReason.contains("test"), "\(pending.pendingReason)")
            #expect(pending.ip.isEmpty)
            // Scaling down frees addresses; the rest then bind.
            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "many"
            scale.replicas = 5
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            try await cluster.eventually("5 Running") { try await cluster.allRunning("many", 5) }
        }
    }
}
