import Foundation
import NodeRuntime
import Protocol
import RPC
import Testing
import TestSupport

/// Rollouts on three real test hosts (real agents, runc): an app with volumes rolls to nodes it never ran on
/// without two copies of an ordinal ever running at once (sampled from every host's runc state, and the
/// monitors' journals); a revision whose image does not exist stops after its first instance and reverts;
/// `sigmactl apply` on a new app with a missing image ends at once, naming the image.
@Suite struct RolloutTestbedTests {
    static let script = """
        echo "revision=$REVISION fresh=$SIGMA_VOLUME_FRESH node=$SIGMA_NODE" >> /data/log
        trap 'exit 0' TERM; while :; do sleep 0.05; done
        """

    static func kv(_ spec: inout Sigma_V1_AppSpec, revision: Int) {
        spec.image = "host"
        spec.command = ["/bin/sh", "-c", Self.script]
        spec.env = ["REVISION": "\(revision)"]
        spec.lifecycle.stopGracePeriodSeconds = 1
        spec.update.autoRevert = true
        var volume = Sigma_V1_Volume()
        volume.name = "data"
        volume.mountPath = "/data"
        volume.sizeBytes = 32 << 20
        spec.volumes = [volume]
    }

    @Test func anAppWithVolumesRollsWithOneCopyPerOrdinalAndAMissingImageReverts() async throws {
        try await Testbed.with(hosts: 3, brokenAfter: 3, schedulerFlags: ["--node-lease-margin", "2"]) { bed, cluster in
            try await cluster.apply("kv", replicas: 2, cpu: 100, memory: 16 << 20) { Self.kv(&$0, revision: 1) }
            try await cluster.eventually("kv running", within: .seconds(60)) { try await cluster.allRunning("kv", 2) }
            try await cluster.eventually("the new app's rollout done", within: .seconds(30)) {
                try await RolloutTests.rollouts(cluster, "kv").first?.state == "Succeeded"
            }
            let before = try await cluster.instances("kv").sorted { $0.ordinal < $1.ordinal }
            let samplers = before.map { CopyChecker.Sampler(runcRoots: bed.runcRoots, instance: $0.id) }
            let sampling = samplers.map { sampler in Task { await sampler.run() } }
            defer { sampling.forEach { $0.cancel() } }
            try await cluster.eventually("the samplers see both copies", within: .seconds(30)) {
                samplers.allSatisfy { $0.samples.withLock { $0.contains { !$0.isEmpty } } }
            }

            // The nodes they run on cordoned: the new revision's copies go elsewhere, each only once the old stopped.
            let used = Set(before.map(\.node))
            func each(_ method: RPCMethod<Sigma_V1_NodeRequest, Sigma_V1_NodeResponse>) async throws {
                for node in used {
                    var request = Sigma_V1_NodeRequest()
                    request.name = node
                    _ = try await cluster.client.call(method, request)
                }
            }
            try await each(SchedulerMethods.cordonNode)
            try await cluster.apply("kv", replicas: 2, cpu: 100, memory: 16 << 20) { Self.kv(&$0, revision: 2) }
            try await cluster.eventually("the rollout to revision 2 done", within: .seconds(90)) {
                try await RolloutTests.rollouts(cluster, "kv").first.map { $0.toRevision == 2 && $0.state == "Succeeded" } ?? false
            }
            let after = try await cluster.instances("kv").sorted { $0.ordinal < $1.ordinal }
            #expect(after.map(\.id) == before.map(\.id) && after.map(\.ip) == before.map(\.ip), "same instances, same IPs")
            #expect(after.allSatisfy { !used.contains($0.node) && $0.revision == 2 && $0.state == "Running" }, "\(after)")
            try await cluster.eventually("one copy each, on the new node", within: .seconds(30)) {
                samplers.allSatisfy { $0.samples.withLock { samples in samples.count > 5 && samples.suffix(3).allSatisfy { $0.count == 1 } } }
            }
            sampling.forEach { $0.cancel() }
            for task in sampling { _ = await task.value }
            for (sampler, instance) in zip(samplers, before) {
                #expect(sampler.overlaps == 0, "\(instance.id): \(sampler.overlaps) samples saw two copies")
                let (lives, journal) = bed.copies(of: instance.id, killed: nil)
                #expect(lives.count == 2 && CopyChecker.longestOverlap(lives) == 0, "\(journal)")
            }

            // A revision whose image is missing: its first instance crash-loops, the rollout fails naming the
            // image and reverts; the second instance is never touched.
            try await each(SchedulerMethods.uncordonNode)
            let generations = after.map(\.generation)
            try await cluster.apply("kv", replicas: 2, cpu: 100, memory: 16 << 20) { spec in
                Self.kv(&spec, revision: 2)
                spec.image = "oci:/nonexistent/sigma-test:1"
            }
            try await cluster.eventually("the bad rollout failed and the revert done", within: .seconds(90)) {
                let records = try await RolloutTests.rollouts(cluster, "kv")
                return records.count >= 4 && records[0].toRevision == 4 && records[0].state == "Succeeded"
            }
            let records = try await RolloutTests.rollouts(cluster, "kv")
            #expect(records[1].toRevision == 3 && records[1].state == "Failed", "\(records[1])")
            #expect(records[1].reason.hasPrefix("kv-0 is crash-looping (3 restarts)")
                    && records[1].reason.contains("image oci:/nonexistent/sigma-test:1: not found"), "\(records[1].reason)")
            let reverted = try await cluster.instances("kv").sorted { $0.ordinal < $1.ordinal }
            #expect(reverted[1].generation == generations[1], "kv-1 never touched")
            #expect(reverted.allSatisfy { $0.revision == 4 && $0.state == "Running" })

            // `sigmactl apply` of a new app on a missing image ends as soon as its rollout fails, naming the image.
            let file = NSTemporaryDirectory() + "sigma-ghost-\(UUID().uuidString.prefix(8)).yaml"
            defer { try? FileManager.default.removeItem(atPath: file) }
            try "name: ghost\nimage: oci:/nonexistent/ghost:1\nreplicas: 1\nresources: {request: {cpu: 100m, memory: 16Mi}}\n"
                .write(toFile: file, atomically: true, encoding: .utf8)
            let started = ContinuousClock.now
            let (status, output) = try await runProgramStatus(
                ServiceProcess.binDirectory + "/sigmactl",
                ["apply", "-f", file, "--wait-timeout", "120", "--scheduler", cluster.endpoints.joined(separator: ","), "--timeout", "20"])
            #expect(status == 4, "\(output)")
            #expect(output.contains("app/ghost: rollout to revision 1 failed: ghost-0 is crash-looping (3 restarts): start failed: image oci:/nonexistent/ghost:1: not found\n"),
                    "\(output)")
            #expect(ContinuousClock.now - started < .seconds(60), "it did not wait for --wait-timeout")
        }
    }
}
