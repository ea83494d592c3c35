import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// Health-gated rollouts (docs/protocol.md, "Rollouts"): the real scheduler, allocator and PostgreSQL, with
/// simulated agents that report a revision's instances crash-looping or never ready.
@Suite struct RolloutTests {
    static func image(_ spec: inout Sigma_V1_AppSpec, _ version: Int) {
        spec.image = "oci:/images/web:\(version)"
    }

    static func rollouts(_ cluster: SchedulerCluster, _ app: String) async throws -> [Sigma_V1_Rollout] {
        var request = Sigma_V1_ListRolloutsRequest()
        request.app = app
        return try await cluster.client.call(SchedulerMethods.listRollouts, request).rollouts
    }

    static func generations(_ cluster: SchedulerCluster, _ app: String) async throws -> [Int32: Int64] {
        Dictionary(uniqueKeysWithValues: try await cluster.instances(app).map { ($0.ordinal, $0.generation) })
    }

    /// A revision whose instances crash-loop fails after its first instance; with autoRevert the app goes back
    /// to the revision before as a new one, the first instance is replaced again and the other three never are.
    @Test func aCrashLoopingRevisionStopsAfterItsFirstInstanceAndReverts() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.setCrashing("oci:/images/web:2")
            agent.start()
            defer { agent.stop() }
            func apply(_ version: Int) async throws {
                try await cluster.apply("web", replicas: 4, cpu: 100) { spec in
                    Self.image(&spec, version)
                    spec.update.autoRevert = true
                }
            }
            try await apply(1)
            try await cluster.eventually("4 Running") { try await cluster.allRunning("web", 4) }
            try await cluster.eventually("the new app's rollout done") { try await Self.rollouts(cluster, "web").first?.state == "Succeeded" }
            let first = try await Self.rollouts(cluster, "web")
            #expect(first.map(\.fromRevision) == [0] && first.map(\.toRevision) == [1] && first.map(\.startedBy) == ["anonymous"],
                    "a new app's rollout, from revision 0: \(first)")
            let before = try await Self.generations(cluster, "web")

            try await apply(2)
            try await cluster.eventually("the failed rollout reverted and the revert done", within: .seconds(30)) {
                let records = try await Self.rollouts(cluster, "web")
                return records.count == 3 && records.first?.state == "Succeeded"
            }
            let records = try await Self.rollouts(cluster, "web")
            #expect(records.map(\.toRevision) == [3, 2, 1] && records.map(\.state) == ["Succeeded", "Failed", "Succeeded"])
            #expect(records.map(\.startedBy) == ["scheduler", "anonymous", "anonymous"], "the revert is the scheduler's")
            #expect(records[1].reason.hasPrefix("web-0 is crash-looping (3 restarts): exit 1"), "\(records[1].reason)")
            #expect(records[0].cause.hasPrefix("auto-revert: rollout to revision 2 failed") && records[0].cause.hasSuffix("back to revision 1"),
                    "\(records[0].cause)")
            var get = Sigma_V1_AppRequest()
            get.name = "web"
            let app = try await cluster.client.call(SchedulerMethods.getApp, get).app
            #expect(app.revision == 3 && app.spec.image == "oci:/images/web:1")
            try await cluster.eventually("4 Running again") { try await cluster.allRunning("web", 4) }
            let after = try await Self.generations(cluster, "web")
            #expect(after[0] == before[0]! + 2, "web-0 replaced twice: to the bad revision and back")
            #expect([1, 2, 3].allSatisfy { after[$0] == before[$0] }, "the others never touched: \(before) → \(after)")
            #expect(try await cluster.instances("web").allSatisfy { $0.revision == 3 })
            let reasons = try await cluster.events("app", "web").map(\.reason)
            #expect(reasons.contains("RolloutFailed") && reasons.filter { $0 == "RolloutStarted" }.count == 3, "\(reasons)")
        }
    }

    /// A revision whose instances never turn ready fails at its progress deadline, naming the instance; without
    /// autoRevert the app stays at it and the instances not replaced keep the old revision.
    @Test func aNeverReadyRevisionFailsAtItsProgressDeadline() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.setReady("oci:/images/web:2", false)
            agent.start()
            defer { agent.stop() }
            func apply(_ version: Int) async throws {
                try await cluster.apply("web", replicas: 3, cpu: 100) { spec in
                    Self.image(&spec, version)
                    spec.update.progressDeadlineSeconds = 10
                }
            }
            try await apply(1)
            try await cluster.eventually("3 Running") { try await cluster.allRunning("web", 3) }
            let before = try await Self.generations(cluster, "web")
            try await apply(2)
            try await cluster.eventually("the rollout failed", within: .seconds(40)) {
                try await Self.rollouts(cluster, "web").first?.state == "Failed"
            }
            let failed = try #require(try await Self.rollouts(cluster, "web").first)
            #expect(failed.reason == "no progress for 10 s: web-0 is Running, not ready", "\(failed.reason)")
            #expect(failed.endedUnixMs - failed.startedUnixMs >= 10_000)
            #expect(failed.newInstances == 1 && failed.availableInstances == 0 && failed.oldInstances == 2)
            let instances = try await cluster.instances("web").sorted { $0.ordinal < $1.ordinal }
            #expect(instances.map(\.revision) == [2, 1, 1])
            let after = try await Self.generations(cluster, "web")
            #expect(after[1] == before[1] && after[2] == before[2])
        }
    }

    /// `sigmactl apply` stops waiting as soon as the rollout of what it applied fails: exit 4, with the reason.
    @Test func applyWaitEndsWhenTheRolloutFails() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.setCrashing("oci:/images/web:2")
            agent.start()
            defer { agent.stop() }
            let file = NSTemporaryDirectory() + "sigma-rollout-\(UUID().uuidString.prefix(8)).yaml"
            defer { try? FileManager.default.removeItem(atPath: file) }
            let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
            let flags = ["--scheduler", cluster.endpoints.joined(separator: ","), "--timeout", "20"]
            for version in [1, 2] {
                try "name: web\nimage: oci:/images/web:\(version)\nreplicas: 2\nresources: {request: {cpu: 100m}}\n"
                    .write(toFile: file, atomically: true, encoding: .utf8)
                let started = ContinuousClock.now
                let (status, output) = try await runProgramStatus(sigmactl, ["apply", "-f", file, "--wait-timeout", "120"] + flags)
                if version == 1 {
                    #expect(status == 0, "\(output)")
                } else {
                    #expect(status == 4, "\(output)")
                    #expect(output.contains("app/web: rollout to revision 2 failed: web-0 is crash-looping (3 restarts): exit 1"), "\(output)")
                    #expect(ContinuousClock.now - started < .seconds(60), "it did not wait for --wait-timeout")
                }
            }
        }
    }

    /// A canary of 1 of 4 pauses once it is available; a scale meanwhile leaves it paused (the new ordinal takes
    /// the new revision), promote replaces the rest. A second canary is dropped by undo (only it is replaced
    /// again); with autoPromote a third goes on by itself.
    @Test func aCanaryPausesPromoteFinishesAndUndoDropsIt() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.start()
            defer { agent.stop() }
            func apply(_ version: Int, replicas: Int = 5, autoPromote: Bool = false) async throws {
                try await cluster.apply("web", replicas: replicas, cpu: 100) { spec in
                    Self.image(&spec, version)
                    spec.update.canary = 1
                    spec.update.autoPromote = autoPromote
                }
            }
            var request = Sigma_V1_AppRequest()
            request.name = "web"
            func newest(_ state: String) async throws {
                try await cluster.eventually("the newest rollout \(state)") { try await Self.rollouts(cluster, "web").first?.state == state }
            }
            try await apply(1, replicas: 4)
            try await cluster.eventually("4 Running") { try await cluster.allRunning("web", 4) }
            let none = await #expect(throws: RPCError.self) { try await cluster.client.call(SchedulerMethods.promoteRollout, request) }
            #expect(none?.code == .failedPrecondition)

            try await apply(2, replicas: 4)
            try await newest("Paused")
            let paused = try #require(try await Self.rollouts(cluster, "web").first)
            #expect(paused.reason.hasPrefix("1 canary instance(s) of revision 2 available") && !paused.promoted, "\(paused.reason)")
            #expect(try await cluster.instances("web").sorted { $0.ordinal < $1.ordinal }.map(\.revision) == [2, 1, 1, 1])
            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "web"
            scale.replicas = 5
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            try await cluster.eventually("the fifth placed") { try await cluster.instances("web").count == 5 }
            let still = try #require(try await Self.rollouts(cluster, "web").first)
            #expect(still.state == "Paused" && still.toRevision == 3, "\(still)")
            #expect(try await cluster.instances("web").sorted { $0.ordinal < $1.ordinal }.map(\.revision) == [3, 1, 1, 1, 3])
            let promoted = try await cluster.client.call(SchedulerMethods.promoteRollout, request).rollout
            #expect(promoted.promoted && promoted.state == "Progressing")
            try await newest("Succeeded")
            #expect(try await cluster.instances("web").allSatisfy { $0.revision == 3 })
            let before = try await Self.generations(cluster, "web")

            try await apply(3)
            try await newest("Paused")
            var undo = Sigma_V1_RolloutUndoRequest()
            undo.name = "web"
            _ = try await cluster.client.call(SchedulerMethods.rolloutUndo, undo)
            try await newest("Succeeded")
            let after = try await Self.generations(cluster, "web")
            #expect(after[0] == before[0]! + 2 && [1, 2, 3, 4].allSatisfy { after[$0] == before[$0] }, "\(before) → \(after)")
            #expect(try await cluster.instances("web").allSatisfy { $0.revision == 5 })

            try await apply(5, autoPromote: true)
            try await newest("Succeeded")
            #expect(try await cluster.events("app", "web").map(\.reason).contains("RolloutPromoted"))
            #expect(try await cluster.instances("web").allSatisfy { $0.revision == 6 })
        }
    }

    /// Pause holds a rollout, resume lets it go on; each refuses when there is nothing to do, and an unknown app is NOT_FOUND.
    @Test func pauseAndResume() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.start()
            defer { agent.stop() }
            var request = Sigma_V1_AppRequest()
            request.name = "web"
            let unknown = await #expect(throws: RPCError.self) { try await cluster.client.call(SchedulerMethods.pauseRollout, request) }
            #expect(unknown?.code == .notFound)
            // minReadySeconds 2: the rollout takes a while, long enough to be paused while it goes.
            func apply(_ version: Int) async throws {
                try await cluster.apply("web", replicas: 3, cpu: 100) { spec in
                    Self.image(&spec, version)
                    spec.update.minReadySeconds = 2
                }
            }
            try await apply(1)
            try await cluster.eventually("3 Running") { try await cluster.allRunning("web", 3) }
            let idle = await #expect(throws: RPCError.self) { try await cluster.client.call(SchedulerMethods.pauseRollout, request) }
            #expect(idle?.code == .failedPrecondition)
            try await apply(2)
            let held = try await cluster.client.call(SchedulerMethods.pauseRollout, request).rollout
            #expect(held.state == "Paused" && held.reason == "paused by anonymous", "\(held.reason)")
            let replaced = try await cluster.instances("web").filter { $0.revision == 2 }.count
            // Held: a few passes later nothing more was replaced.
            for _ in 0..<3 { try await agent.beat() }
            #expect(try await cluster.instances("web").filter { $0.revision == 2 }.count == replaced)
            #expect(try await Self.rollouts(cluster, "web").first?.state == "Paused")
            _ = try await cluster.client.call(SchedulerMethods.resumeRollout, request)
            try await cluster.eventually("done", within: .seconds(40)) { try await Self.rollouts(cluster, "web").first?.state == "Succeeded" }
            let twice = await #expect(throws: RPCError.self) { try await cluster.client.call(SchedulerMethods.resumeRollout, request) }
            #expect(twice?.code == .failedPrecondition)
        }
    }

    /// A strategy out of range is refused naming the field; nothing is applied.
    @Test func aBadStrategyIsRefusedNamingTheField() async throws {
        try await SchedulerCluster.with { cluster in
            var negative = Sigma_V1_UpdateStrategy()
            negative.maxUnavailable = -1
            var tooShort = Sigma_V1_UpdateStrategy()
            tooShort.minReadySeconds = 30
            tooShort.progressDeadlineSeconds = 20
            for (strategy, field) in [(negative, "update.maxUnavailable: -1"), (tooShort, "update.progressDeadlineSeconds: 20 must be more")] {
                let refusal = await #expect(throws: RPCError.self) { try await cluster.apply("x", replicas: 1) { $0.update = strategy } }
                #expect(refusal?.code == .invalidArgument)
                #expect(refusal?.message.contains(field) == true, "\(refusal?.message ?? "")")
            }
            let apps = try await cluster.client.call(SchedulerMethods.listApps, Sigma_V1_ListAppsRequest()).apps
            #expect(apps.isEmpty)
        }
    }

    /// maxUnavailable 2 of 6: never more than two instances not Running and ready at once (sampled every
    /// 20 ms), and minReadySeconds 1 holds each pair for a second: three rounds, at least 3 s.
    @Test func maxUnavailableBoundsWhatIsDownAtOnce() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.start()
            defer { agent.stop() }
            func apply(_ version: Int) async throws {
                try await cluster.apply("web", replicas: 6, cpu: 100) { spec in
                    Self.image(&spec, version)
                    spec.update.maxUnavailable = 2
                    spec.update.minReadySeconds = 1
                }
            }
            try await apply(1)
            try await cluster.eventually("6 Running") { try await cluster.allRunning("web", 6) }
            try await apply(2)
            var worst = 0
            try await cluster.eventually("the rollout done", within: .seconds(60)) {
                let down = try await cluster.instances("web").filter { !($0.state == "Running" && $0.ready) }.count
                worst = max(worst, down)
                return try await Self.rollouts(cluster, "web").first?.state == "Succeeded"
            }
            #expect(worst <= 2, "\(worst) unavailable at once")
            let done = try #require(try await Self.rollouts(cluster, "web").first)
            #expect(done.endedUnixMs - done.startedUnixMs >= 3000, "\(done.endedUnixMs - done.startedUnixMs) ms")
            #expect(try await cluster.instances("web").allSatisfy { $0.revision == 2 && $0.generation == 2 })
        }
    }
}
