import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// Rollout records (docs/protocol.md, "Rollouts"): a new app's rollout from revision 0 and what `apply --wait`
/// says when it cannot come up, who started each, and the retention of ended ones.
@Suite struct RolloutRecordTests {
    static let sigmactl = ServiceProcess.binDirectory + "/sigmactl"

    static func manifest(_ text: String) throws -> String {
        let file = NSTemporaryDirectory() + "sigma-records-\(UUID().uuidString.prefix(8)).yaml"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    /// A new app whose instances crash-loop: its rollout (0 → 1) fails, `apply` ends with exit 4 and the
    /// reason at once, and autoRevert has nothing to go back to (no revision is added).
    @Test func aNewAppThatCrashLoopsFailsItsRolloutWithoutARevert() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.setCrashing("oci:/images/web:1")
            agent.start()
            defer { agent.stop() }
            let file = try Self.manifest(
                "name: web\nimage: oci:/images/web:1\nreplicas: 2\nresources: {request: {cpu: 100m}}\nupdate: {autoRevert: true}\n")
            defer { try? FileManager.default.removeItem(atPath: file) }
            let started = ContinuousClock.now
            let (status, output) = try await runProgramStatus(
                Self.sigmactl, ["apply", "-f", file, "--wait-timeout", "120", "--scheduler", cluster.endpoints.joined(separator: ","), "--timeout", "20"])
            #expect(status == 4, "\(output)")
            #expect(output.contains("app/web: rollout to revision 1 failed: web-0 is crash-looping (3 restarts): exit 1")
                    || output.contains("app/web: rollout to revision 1 failed: web-1 is crash-looping (3 restarts): exit 1"), "\(output)")
            #expect(ContinuousClock.now - started < .seconds(60), "it did not wait for --wait-timeout")
            let records = try await RolloutTests.rollouts(cluster, "web")
            #expect(records.count == 1 && records[0].fromRevision == 0 && records[0].state == "Failed", "\(records)")
            // The scheduler's passes go on; no revert comes.
            for _ in 0..<5 { try await agent.beat() }
            var get = Sigma_V1_AppRequest()
            get.name = "web"
            #expect(try await cluster.client.call(SchedulerMethods.getApp, get).app.revision == 1)
            #expect(try await RolloutTests.rollouts(cluster, "web").count == 1)
            // Nothing to pause or promote in a new app's rollout.
            let pause = await #expect(throws: RPCError.self) { try await cluster.client.call(SchedulerMethods.pauseRollout, get) }
            #expect(pause?.code == .failedPrecondition)
        }
    }

    /// An instance that can never be placed: the rollout fails at its progress deadline naming the placement's
    /// filter counts, and `apply --wait` ends then with them; a shorter `--wait-timeout` names them too.
    @Test func anUnschedulableInstanceEndsTheWaitWithTheFilterCounts() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 1000)
            agent.start()
            defer { agent.stop() }
            let flags = ["--scheduler", cluster.endpoints.joined(separator: ","), "--timeout", "20"]
            let file = try Self.manifest(
                "name: web\nimage: oci:/images/web:1\nreplicas: 2\nresources: {request: {cpu: 800m}}\nupdate: {progressDeadlineSeconds: 10}\n")
            defer { try? FileManager.default.removeItem(atPath: file) }
            _ = try await runProgram(Self.sigmactl, ["apply", "-f", file, "--no-wait"] + flags)
            try await cluster.eventually("web-0 Running, web-1 Pending with its reason") {
                let instances = try await cluster.instances("web").sorted { $0.ordinal < $1.ordinal }
                return instances.map(\.state) == ["Running", "Pending"] && !instances[1].pendingReason.isEmpty
            }
            let (timedOut, early) = try await runProgramStatus(Self.sigmactl, ["apply", "-f", file, "--wait-timeout", "1"] + flags)
            #expect(timedOut == 3, "\(early)")
            #expect(early.contains("not all instances running after 1 s: web-1 is Pending (0/1 nodes available: 1 insufficient cpu)"), "\(early)")
            let (status, output) = try await runProgramStatus(Self.sigmactl, ["apply", "-f", file, "--wait-timeout", "120"] + flags)
            #expect(status == 4, "\(output)")
            #expect(output.contains("app/web: rollout to revision 1 failed: no progress for 10 s: web-1 is Pending: 0/1 nodes available: 1 insufficient cpu"),
                    "\(output)")
        }
    }

    /// Ended rollouts past `--rollout-retention` go, but an app's newest 10 and its last that succeeded stay;
    /// one under way is never pruned.
    @Test func endedRolloutsPastTheRetentionGoButTheNewestAndTheLastGoodStay() async throws {
        // 0.0005 h: 1.8 s.
        try await SchedulerCluster.with(extra: ["--rollout-retention", "0.0005"]) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("web", replicas: 1, cpu: 100)
            try await cluster.eventually("the new app's rollout done") { try await RolloutTests.rollouts(cluster, "web").first?.state == "Succeeded" }
            // Twelve more revisions that never come up, each superseding the one before.
            for version in 2...13 {
                agent.setCrashing("oci:/images/web:\(version)")
                try await cluster.apply("web", replicas: 1, cpu: 100) { RolloutTests.image(&$0, version) }
            }
            try await cluster.eventually("pruned to the newest 10 and the last good", within: .seconds(30)) {
                try await RolloutTests.rollouts(cluster, "web").count == 11
            }
            let kept = try await RolloutTests.rollouts(cluster, "web")
            #expect(kept.map(\.toRevision) == Array((4...13).reversed()) + [1], "\(kept.map(\.toRevision))")
            #expect(kept.last?.state == "Succeeded")
            // They stay so: the newest 10 and the last good are never pruned.
            for _ in 0..<5 { try await agent.beat() }
            #expect(try await RolloutTests.rollouts(cluster, "web").count == 11)
        }
    }
}
