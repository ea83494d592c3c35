import Foundation
import Protocol
import RPC
import Store
import Testing
import TestSupport

/// Apps over their lifetime: live limits, quotas, rollouts and undo, scale down and delete, drain and remove,
/// manual migration, and the assignment feed.
@Suite(.serialized) struct SchedulerAppTests {
    @Test func liveLimitsChangeWithoutRestartAndRequestsMustFit() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 4000, memory: 8 << 30)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("api", replicas: 2, cpu: 1000) { $0.resources.limit.cpuMillis = 1000 }
            try await cluster.eventually("Running") { try await cluster.allRunning("api", 2) }
            let before = try await cluster.instances("api")

            var update = Sigma_V1_UpdateResourcesRequest()
            update.app = "api"
            update.resources.request.cpuMillis = 1000
            update.resources.request.memoryBytes = 1 << 30
            update.resources.limit.cpuMillis = 3000
            _ = try await cluster.client.call(SchedulerMethods.updateResources, update)
            try await cluster.eventually("limits applied") {
                try await cluster.instances("api").allSatisfy { $0.appliedLimit.cpuMillis == 3000 }
            }
            let after = try await cluster.instances("api")
            #expect(after.map(\.generation) == before.map(\.generation))
            #expect(after.map(\.node) == before.map(\.node))
            #expect(try await cluster.client.call(SchedulerMethods.getApp, { var r = Sigma_V1_AppRequest(); r.name = "api"; return r }()).app.revision == 2)

            // A request that no longer fits the node: FAILED_PRECONDITION, and nothing changes.
            update.resources.request.cpuMillis = 2500
            update.resources.limit.cpuMillis = 0
            do {
                _ = try await cluster.client.call(SchedulerMethods.updateResources, update)
                Issue.record("an oversized request was accepted")
            } catch let error as RPCError {
                #expect(error.code == .failedPrecondition)
                #expect(error.message.contains("no longer fits node n1"))
            }
            #expect(try await cluster.instances("api").allSatisfy { $0.resources.request.cpuMillis == 1000 && $0.resources.limit.cpuMillis == 3000 })

            // One instance alone.
            var one = Sigma_V1_UpdateResourcesRequest()
            one.instanceID = after[0].id
            one.resources = after[0].resources
            one.resources.limit.memoryBytes = 4 << 30
            let changed = try await cluster.client.call(SchedulerMethods.updateResources, one)
            #expect(changed.instances.first?.resources.limit.memoryBytes == 4 << 30)
        }
    }

    @Test func teamQuotaCapsSummedRequests() async throws {
        try await SchedulerCluster.with { cluster in
            var quota = Sigma_V1_SetQuotaRequest()
            quota.quota.team = "shop"
            quota.quota.requests.cpuMillis = 2000
            quota.quota.requests.memoryBytes = 8 << 30
            _ = try await cluster.client.call(SchedulerMethods.setQuota, quota)
            try await cluster.apply("cart", replicas: 1, cpu: 1000) { $0.team = "shop" }
            do {
                try await cluster.apply("checkout", replicas: 2, cpu: 1000) { $0.team = "shop" }
                Issue.record("quota not enforced")
            } catch let error as RPCError {
                #expect(error.code == .resourceExhausted)
                #expect(error.message.contains("team shop quota is cpu 2, memory 8Gi"))
            }
            let quotas = try await cluster.client.call(SchedulerMethods.listQuotas, .init()).quotas
            #expect(quotas.first?.used.cpuMillis == 1000)
        }
    }

    @Test func rolloutReplacesOneAtATimeAndUndoRestores() async throws {
        try await SchedulerCluster.with { cluster in
            let agents = ["n1", "n2"].map { SimulatedAgent($0, client: cluster.client) }
            for agent in agents { try await agent.register(cpu: 4000) }
            agents.forEach { $0.start() }
            defer { agents.forEach { $0.stop() } }
            try await cluster.apply("web", replicas: 3, cpu: 100)
            try await cluster.eventually("v1 Running") { try await cluster.allRunning("web", 3) }
            let v1 = try await cluster.instances("web")

            try await cluster.apply("web", replicas: 3, cpu: 100) { $0.image = "oci:/images/web:2" }
            try await cluster.eventually("all on revision 2") {
                let list = try await cluster.instances("web")
                return list.allSatisfy { $0.revision == 2 && $0.state == "Running" }
            }
            let v2 = try await cluster.instances("web")
            #expect(v2.map(\.ip) == v1.map(\.ip))
            #expect(zip(v1, v2).allSatisfy { $1.generation == $0.generation + 1 })
            // One at a time: each roll started after the previous instance was Running again.
            var rolls: [Int64] = []
            var runs: [Int64] = []
            for instance in v2 {
                let events = try await cluster.events("instance", instance.id)
                rolls.append(events.first { $0.reason == "Rolling" }!.id)
                runs.append(events.last { $0.reason == "Running" }!.id)
            }
            let order = rolls.indices.sorted { rolls[$0] < rolls[$1] }
            for (a, b) in zip(order, order.dropFirst()) { #expect(runs[a] < rolls[b]) }

            var name = Sigma_V1_AppRequest()
            name.name = "web"
            let history = try await cluster.client.call(SchedulerMethods.rolloutHistory, name).revisions
            #expect(history.map(\.revision) == [1, 2])
            #expect(history.map(\.spec.image) == ["oci:/images/web:1", "oci:/images/web:2"])
            var undo = Sigma_V1_RolloutUndoRequest()
            undo.name = "web"
            let undone = try await cluster.client.call(SchedulerMethods.rolloutUndo, undo).app
            #expect(undone.revision == 3 && undone.spec.image == "oci:/images/web:1")
            try await cluster.eventually("back on the first image") {
                try await cluster.instances("web").allSatisfy { $0.revision == 3 && $0.state == "Running" }
            }
        }
    }

    @Test func scaleDownAndDeleteReleaseEverything() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000, ssds: [100 << 30, 200 << 30, 400 << 30])
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("mysql", replicas: 3, cpu: 500) {
                $0.network = "host"
                var port = Sigma_V1_ContainerPort()
                port.name = "mysql"
                port.containerPort = 3306
                $0.ports = [port]
                $0.ssd.count = 1
                $0.ssd.minBytes = 150 << 30
                $0.ssd.mountPath = "/var/lib/mysql"
            }
            try await cluster.eventually("2 Running, 1 waiting for an SSD") {
                let list = try await cluster.instances("mysql")
                return list.filter { $0.state == "Running" }.count == 2 && list.contains { $0.pendingReason.contains("insufficient SSDs") }
            }
            let running = try await cluster.instances("mysql").filter { $0.state == "Running" }
            #expect(running.allSatisfy { $0.hostPorts["mysql"].map { (20000...32767).contains($0) } ?? false })
            #expect(Set(running.flatMap(\.ssdPaths)) == ["/dev/nvme1n1", "/dev/nvme2n1"])

            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "mysql"
            scale.replicas = 1
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            try await cluster.eventually("one left") { try await cluster.instances("mysql").count == 1 }
            var request = Sigma_V1_AppRequest()
            request.name = "mysql"
            _ = try await cluster.client.call(SchedulerMethods.deleteApp, request)
            try await cluster.eventually("app gone") {
                let app = try? await cluster.client.call(SchedulerMethods.getApp, request)
                let left = try await cluster.instances("mysql")
                return app == nil && left.isEmpty
            }
            let held = try await cluster.store.query(
                """
                SELECT (SELECT count(*) FROM ip_addresses WHERE instance IS NOT NULL)::bigint AS ips,
                       (SELECT count(*) FROM host_ports)::bigint AS ports, (SELECT count(*) FROM ssds WHERE instance IS NOT NULL)::bigint AS ssds
                """)[0]
            #expect(try held.decode(Int64.self, "ips") == 0)
            #expect(try held.decode(Int64.self, "ports") == 0)
            #expect(try held.decode(Int64.self, "ssds") == 0)
        }
    }

    @Test func drainMovesInstancesAndRemoveNeedsAnEmptyNode() async throws {
        try await SchedulerCluster.with { cluster in
            let agents = ["n1", "n2"].map { SimulatedAgent($0, client: cluster.client) }
            for agent in agents { try await agent.register(cpu: 4000) }
            agents.forEach { $0.start() }
            defer { agents.forEach { $0.stop() } }
            try await cluster.apply("svc", replicas: 4, cpu: 500)
            try await cluster.eventually("Running") { try await cluster.allRunning("svc", 4) }
            var node = Sigma_V1_NodeRequest()
            node.name = "n1"
            do {
                _ = try await cluster.client.call(SchedulerMethods.removeNode, node)
                Issue.record("removed a node with instances")
            } catch let error as RPCError {
                #expect(error.code == .failedPrecondition)
                #expect(error.message.contains("drain it first"))
            }
            let ips = Set(try await cluster.instances("svc").map(\.ip))
            #expect(try await cluster.client.call(SchedulerMethods.drainNode, node).node.draining)
            try await cluster.eventually("all on n2") {
                let list = try await cluster.instances("svc")
                return list.allSatisfy { $0.node == "n2" && $0.state == "Running" }
            }
            #expect(Set(try await cluster.instances("svc").map(\.ip)) == ips)
            _ = try await cluster.client.call(SchedulerMethods.removeNode, node)
            #expect(try await cluster.client.call(SchedulerMethods.listNodes, .init()).nodes.map(\.name) == ["n2"])

            // By hand: one instance to a chosen node.
            try await agents[0].register(cpu: 4000)
            let instance = try await cluster.instances("svc")[0]
            var migrate = Sigma_V1_MigrateInstanceRequest()
            migrate.instanceID = instance.id
            migrate.toNode = "n1"
            _ = try await cluster.client.call(SchedulerMethods.migrateInstance, migrate)
            try await cluster.eventually("moved to n1") {
                let moved = try await cluster.instances("svc").first { $0.id == instance.id }!
                return moved.node == "n1" && moved.state == "Running" && moved.ip == instance.ip
            }
        }
    }

    /// An agent that missed route events asks for those after its sequence: it gets just them (a delta), in
    /// order, while the replica still keeps them; another epoch or a sequence it never published gets the list.
    @Test func routesMissedAreFetchedAloneNotTheWholeList() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 4000)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("one", replicas: 2, cpu: 100)
            try await cluster.eventually("2 Running") { try await cluster.allRunning("one", 2) }
            let before = try await cluster.client.call(SchedulerMethods.getRoutes, .init())
            #expect(before.routes.count == 2 && !before.delta)

            try await cluster.apply("two", replicas: 1, cpu: 100)
            try await cluster.eventually("the new instance Running") { try await cluster.allRunning("two", 1) }
            let two = try await cluster.instances("two")[0]
            var since = Sigma_V1_GetRoutesRequest()
            (since.sinceSequence, since.feedEpoch) = (before.sequence, before.feedEpoch)
            let delta = try await cluster.client.call(SchedulerMethods.getRoutes, since)
            #expect(delta.delta && delta.routes.isEmpty && delta.feedEpoch == before.feedEpoch)
            #expect(delta.sequence == before.sequence + UInt64(delta.missed.count) && !delta.missed.isEmpty)
            #expect(delta.missed.contains { $0.route.instanceID == two.id && $0.route.ip == two.ip && !$0.removed }, "\(delta.missed)")

            since.feedEpoch = before.feedEpoch &+ 1
            let otherEpoch = try await cluster.client.call(SchedulerMethods.getRoutes, since)
            #expect(!otherEpoch.delta && otherEpoch.routes.count == 3)
            (since.sinceSequence, since.feedEpoch) = (delta.sequence + 1000, before.feedEpoch)
            let ahead = try await cluster.client.call(SchedulerMethods.getRoutes, since)
            #expect(!ahead.delta && ahead.routes.count == 3)
        }
    }

    @Test func agentsLearnAssignmentsByPush() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            let registered = try await agent.register(cpu: 4000)
            let subscriber = try Subscriber(endpoints: [registered.eventsEndpoint], topics: [FeedTopics.node("n1")], logger: quietLogger) { _ in
                var get = Sigma_V1_GetAssignmentsRequest()
                get.node = "n1"
                let snapshot = try await cluster.client.call(SchedulerMethods.getAssignments, get)
                return EventSnapshot(sequence: snapshot.sequence, epoch: snapshot.feedEpoch, payload: try snapshot.serializedBytes())
            }
            defer { subscriber.close() }
            // The snapshot first, then the apply: instances bound before the snapshot was taken would come in
            // it and never as an update (under load the snapshot could be that late).
            var events = subscriber.events.makeAsyncIterator()
            if case .snapshot(_, _, let payload)? = await events.next() {
                let snapshot = try Sigma_V1_GetAssignmentsResponse(serializedBytes: payload)
                #expect(snapshot.assignments.isEmpty)
            } else {
                Issue.record("the feed did not start with a snapshot")
            }
            /// Reads the feed until both of `app`'s instances were seen; counts those seen in updates.
            func follow(_ app: String) async throws -> (seen: Set<String>, updates: Int) {
                var seen = Set<String>()
                var updates = 0
                while let event = await events.next() {
                    switch event {
                    case .snapshot(_, _, let payload):
                        let snapshot = try Sigma_V1_GetAssignmentsResponse(serializedBytes: payload)
                        for assignment in snapshot.assignments where assignment.app == app { seen.insert(assignment.instanceID) }
                    case .update(_, _, let payload):
                        guard !payload.isEmpty else { continue }
                        let event = try Sigma_V1_AssignmentEvent(serializedBytes: payload)
                        if !event.removed && event.assignment.app == app {
                            seen.insert(event.assignment.instanceID)
                            updates += 1
                        }
                    }
                    if seen.count == 2 { break }
                }
                return (seen, updates)
            }
            // ZeroMQ joins a subscriber a little after it connects: events published meanwhile are missed, and
            // the subscriber's next event (past the gap) makes it take a snapshot again. Once a first app is
            // seen either way, the subscription is live, and a second app's instances come as updates.
            try await cluster.apply("warm", replicas: 2, cpu: 100)
            _ = try await follow("warm")
            try await cluster.apply("pushed", replicas: 2, cpu: 100)
            let (seen, updates) = try await follow("pushed")
            #expect(updates > 0)
            #expect(Set(try await cluster.instances("pushed").map(\.id)) == seen)
        }
    }
}
