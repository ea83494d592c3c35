import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// `RestartRollout` and `ApplyApp`'s dry run (docs/protocol.md, "Rollouts" and the method table), on the real
/// scheduler, allocator and PostgreSQL with a simulated agent.
@Suite struct RolloutRestartTests {
    static func app(_ cluster: SchedulerCluster, _ name: String) async throws -> Sigma_V1_App {
        var get = Sigma_V1_AppRequest()
        get.name = name
        return try await cluster.client.call(SchedulerMethods.getApp, get).app
    }

    /// A restart gives every instance a new generation with the same spec, one at a time (maxUnavailable 1),
    /// as a recorded rollout to a new revision; an app without instances or none at all is refused.
    @Test func aRestartReplacesEveryInstanceThroughARollout() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("web", replicas: 3, cpu: 100)
            try await cluster.eventually("3 Running") { try await cluster.allRunning("web", 3) }
            let before = try await RolloutTests.generations(cluster, "web")
            let spec = try await Self.app(cluster, "web").spec

            var request = Sigma_V1_AppRequest()
            request.name = "web"
            let started = try await cluster.client.call(SchedulerMethods.restartRollout, request).rollout
            #expect(started.fromRevision == 1 && started.toRevision == 2 && started.cause == "restart")
            var mostUnavailable = 0
            try await cluster.eventually("the restart done", within: .seconds(60)) {
                let instances = try await cluster.instances("web")
                mostUnavailable = max(mostUnavailable, instances.filter { $0.state != "Running" || !$0.ready }.count)
                return try await RolloutTests.rollouts(cluster, "web").first?.state == "Succeeded"
            }
            #expect(mostUnavailable <= 1, "maxUnavailable 1 held: at most \(mostUnavailable) seen unavailable")
            let after = try await RolloutTests.generations(cluster, "web")
            #expect(before.keys.sorted() == after.keys.sorted() && before.allSatisfy { after[$0.key]! > $0.value },
                    "every instance a new generation: \(before) → \(after)")
            let app = try await Self.app(cluster, "web")
            #expect(app.revision == 2 && app.spec == spec, "the same spec as a new revision")
            #expect(try await cluster.instances("web").allSatisfy { $0.revision == 2 && $0.state == "Running" })
            let history = try await cluster.client.call(SchedulerMethods.rolloutHistory, request).revisions
            #expect(history.map(\.changeCause).last == "restart")

            try await cluster.apply("idle", replicas: 0, cpu: 100)
            request.name = "idle"
            let idle = await #expect(throws: RPCError.self) { try await cluster.client.call(SchedulerMethods.restartRollout, request) }
            #expect(idle?.code == .failedPrecondition)
            request.name = "nothing"
            let unknown = await #expect(throws: RPCError.self) { try await cluster.client.call(SchedulerMethods.restartRollout, request) }
            #expect(unknown?.code == .notFound)
        }
    }

    /// A dry run answers what an apply would do and writes nothing: no app, no revision, no rollout, no
    /// instance touched; its checks are an apply's.
    @Test func aDryRunSaysWhatAnApplyWouldDoAndWritesNothing() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.start()
            defer { agent.stop() }
            func dryRun(_ name: String, replicas: Int, image: Int = 1, cpu: Int64 = 100) async throws -> Sigma_V1_ApplyAppResponse {
                var request = Sigma_V1_ApplyAppRequest()
                request.spec.name = name
                request.spec.image = "oci:/images/\(name):\(image)"
                request.spec.replicas = Int32(replicas)
                request.spec.resources.request.cpuMillis = cpu
                request.spec.resources.request.memoryBytes = 1 << 30
                request.dryRun = true
                return try await cluster.client.call(SchedulerMethods.applyApp, request)
            }
            let created = try await dryRun("web", replicas: 2)
            #expect(created.action == "created" && created.changed && !created.hasApp)
            #expect(try await cluster.client.call(SchedulerMethods.listApps, .init()).apps.isEmpty, "nothing written")

            try await cluster.apply("web", replicas: 2, cpu: 100)
            try await cluster.eventually("2 Running") { try await cluster.allRunning("web", 2) }
            let generations = try await RolloutTests.generations(cluster, "web")
            let rolls = try await dryRun("web", replicas: 2, image: 2)
            #expect(rolls.action == "rolls" && rolls.app.revision == 1 && rolls.app.spec.image == "oci:/images/web:1")
            #expect(try await dryRun("web", replicas: 5).action == "live")
            #expect(try await dryRun("web", replicas: 2).action == "unchanged")
            let tooBig = await #expect(throws: RPCError.self) { try await dryRun("web", replicas: 2, cpu: 1_000_000) }
            #expect(tooBig?.code == .invalidArgument)

            #expect(try await Self.app(cluster, "web").revision == 1)
            #expect(try await RolloutTests.rollouts(cluster, "web").map(\.toRevision) == [1], "only the new app's own rollout")
            #expect(try await cluster.instances("web").count == 2)
            #expect(try await RolloutTests.generations(cluster, "web") == generations)
        }
    }
}
