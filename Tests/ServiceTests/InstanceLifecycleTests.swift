import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// The instance lifecycle against a real agent (runc, cgroups, a namespace per instance) and PostgreSQL: the
/// cases a new user hit on the demo, each a test that failed before its fix.
@Suite(.serialized) struct InstanceLifecycleTests {
    static let stayUp = NodeAgentTests.stayUp

    /// A node selector that matches the agent started with `--label pin=here`.
    static var pin: Sigma_V1_LabelRequirement {
        var requirement = Sigma_V1_LabelRequirement()
        requirement.key = "pin"
        requirement.operator = "In"
        requirement.values = ["here"]
        return requirement
    }

    /// Case 1: a changed template placed again on the node it already runs on. The agent reports the old
    /// generation's end and the new generation together; that heartbeat counts, the node never turns Suspect
    /// or Broken, and another app's instance on the node is not touched.
    @Test func aRolloutOntoTheSameNodeLeavesTheNodeAndOtherAppsAlone() async throws {
        try await SchedulerCluster.forAgents(brokenAfter: 9) { cluster in
            try await RealAgent.with(cluster, extra: ["--label", "pin=here"]) { agent in
                try await cluster.apply("bystander", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    NodeAgentTests.service(&spec, script: Self.stayUp)
                }
                try await cluster.apply("pinned", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    NodeAgentTests.service(&spec, script: Self.stayUp)
                    spec.nodeSelector = [Self.pin]
                    spec.lifecycle.stopGracePeriodSeconds = 2
                }
                try await cluster.eventually("both Running") {
                    let pinned = try await cluster.allRunning("pinned", 1)
                    let bystander = try await cluster.allRunning("bystander", 1)
                    return pinned && bystander
                }
                let bystander = try #require(try await agent.localInstances().first { $0.app == "bystander" })
                let before = try #require(try await cluster.instance("pinned"))

                try await cluster.apply("pinned", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    NodeAgentTests.service(&spec, script: Self.stayUp)
                    spec.nodeSelector = [Self.pin]
                    spec.lifecycle.stopGracePeriodSeconds = 1
                }
                try await cluster.eventually("the new revision Running on the same node", within: .seconds(30)) {
                    guard let now = try await cluster.instance("pinned") else { return false }
                    return now.state == "Running" && now.generation > before.generation && now.revision == 2
                }
                // The new generation's Running came in a heartbeat that also carried the old one's end.
                let after = try #require(try await cluster.instance("pinned"))
                #expect(after.node == agent.name && after.ip == before.ip)
                let nodeEvents = try await cluster.events("node", agent.name).map(\.reason)
                #expect(!nodeEvents.contains("Suspect") && !nodeEvents.contains("Broken"), "\(nodeEvents)")
                #expect(try await cluster.node(agent.name).health == "Ready")
                let still = try #require(try await agent.localInstances().first { $0.app == "bystander" })
                // (A restart before the first look, under load, is not the rollout's doing.)
                #expect(still.pid == bystander.pid && still.restarts == bystander.restarts, "\(bystander) then \(still)")
                #expect(!agent.process.log.contains("heartbeat failed"), "\(agent.process.log.suffix(2000))")
            }
        }
    }

    /// Case 4: an ordered-ready app deleted while its second ordinal still waits for the first to be ready. The one
    /// that never started ends at once (its agent confirms it never ran); nothing it held stays held.
    @Test func anInstanceThatNeverStartedEndsWhenItsAppIsDeleted() async throws {
        try await SchedulerCluster.forAgents { cluster in
            try await RealAgent.with(cluster) { agent in
                try await cluster.apply("waiting", replicas: 2, cpu: 200, memory: 128 << 20) { spec in
                    NodeAgentTests.service(&spec, script: Self.stayUp)
                    spec.startup = "ordered-ready"
                    var probe = Sigma_V1_Probe()
                    probe.exec = ["/bin/false"]
                    probe.periodSeconds = 1
                    spec.lifecycle.readiness = probe
                    spec.lifecycle.stopGracePeriodSeconds = 1
                }
                try await cluster.eventually("ordinal 0 Running and not ready, ordinal 1 waiting") {
                    let first = try await cluster.instance("waiting", ordinal: 0)
                    let second = try await cluster.instance("waiting", ordinal: 1)
                    return first?.state == "Running" && first?.ready == false && second?.state == "Scheduled"
                        && second?.node == agent.name
                }
                #expect(try await agent.localInstances().count == 1)
                var delete = Sigma_V1_AppRequest()
                delete.name = "waiting"
                _ = try await cluster.client.call(SchedulerMethods.deleteApp, delete)
                try await cluster.eventually("the app and both instances gone", within: .seconds(20)) {
                    let apps = try await cluster.client.call(SchedulerMethods.listApps, .init()).apps
                    return try await cluster.instances("waiting").isEmpty && apps.allSatisfy { $0.spec.name != "waiting" }
                }
                let node = try await cluster.node(agent.name)
                #expect(node.requested.cpuMillis == 0 && node.requested.memoryBytes == 0 && node.instances == 0)
                let held = try await SchedulerCluster.rpcClient([cluster.allocatorEndpoint]).call(AllocatorMethods.reclaim, .init())
                #expect(held.reclaimedIps.isEmpty && held.reclaimedPorts.isEmpty && held.reclaimedSsds.isEmpty)
            }
        }
    }

    /// Case 3: a command that exits 1 at once is BackOff, not Running: in the instance (with its restarts, last
    /// exit and next retry), in the app's READY count, in `sigmactl get`, and in Discovery.
    @Test func aCrashLoopIsBackOffNotRunning() async throws {
        try await SchedulerCluster.forAgents(discoveries: 1) { cluster in
            try await RealAgent.with(cluster, extra: ["--restart-backoff", "10"]) { agent in
                try await cluster.apply("steady", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    NodeAgentTests.service(&spec, script: Self.stayUp)
                }
                try await cluster.apply("crashing", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    NodeAgentTests.service(&spec, script: "echo crashing; exit 1")
                }
                try await cluster.eventually("the crash loop in BackOff") {
                    let instance = try await cluster.instance("crashing")
                    return instance?.state == "BackOff" && instance?.restarts == 1 && instance?.exitCode == 1
                        && instance?.reason.contains("restarting after exit 1") == true && (instance?.nextRetryUnixMs ?? 0) > 0
                }
                try await cluster.eventually("steady Running") { try await cluster.allRunning("steady", 1) }
                let crashing = try #require(try await cluster.instance("crashing"))
                #expect(crashing.stateCode == .instanceStateBackOff && !crashing.ready)
                let apps = try await cluster.client.call(SchedulerMethods.listApps, .init()).apps
                #expect(apps.first { $0.spec.name == "crashing" }?.ready == 0)
                #expect(apps.first { $0.spec.name == "crashing" }?.states["BackOff"] == 1)
                #expect(apps.first { $0.spec.name == "steady" }?.ready == 1)

                let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
                let scheduler = ["--scheduler", cluster.endpoints.joined(separator: ",")]
                let table = try await runProgram(sigmactl, ["get", "apps"] + scheduler)
                let row = try #require(table.split(separator: "\n").first { $0.hasPrefix("crashing ") })
                #expect(row.split(separator: " ", omittingEmptySubsequences: true)[3] == "0/1", "\(table)")
                let instances = try await runProgram(sigmactl, ["get", "instances", "--app", "crashing"] + scheduler)
                #expect(instances.contains("BackOff") && instances.contains("RESTARTS"), "\(instances)")

                let discovery = try SchedulerCluster.rpcClient(cluster.discoveryEndpoints)
                try await cluster.eventually("Discovery says BackOff") {
                    var request = Sigma_V1_ResolveRequest()
                    request.app = "crashing"
                    let endpoint = try await discovery.call(DiscoveryMethods.resolve, request).endpoints.first
                    return endpoint?.state == "BackOff" && endpoint?.stateCode == .instanceStateBackOff && endpoint?.ready == false
                        && endpoint?.restarts == 1
                }
                var readyOnly = Sigma_V1_ResolveRequest()
                readyOnly.app = "crashing"
                readyOnly.readyOnly = true
                #expect(try await discovery.call(DiscoveryMethods.resolve, readyOnly).endpoints.isEmpty)
                #expect(agent.log(of: crashing.id).contains("crashing"))
            }
        }
    }

    /// Case 6: the command runs under an init, so a stop's SIGTERM reaches a command with no handler of its
    /// own: a delete with a 60 s grace period ends it at once (it was SIGKILLed after the whole grace period).
    @Test func aStopDoesNotWaitOutTheGracePeriod() async throws {
        try await SchedulerCluster.forAgents { cluster in
            try await RealAgent.with(cluster) { agent in
                try await cluster.apply("sleeper", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    spec.image = "host"
                    spec.command = ["/bin/sleep", "1000"]
                    spec.lifecycle.stopGracePeriodSeconds = 60
                }
                try await cluster.eventually("Running") { try await cluster.allRunning("sleeper", 1) }
                let local = try #require(try await agent.localInstances().first)
                // (runc returns once the container's process is started; its exec of the init may follow a moment later)
                try await cluster.eventually("the init as PID 1") {
                    (try? String(contentsOfFile: "/proc/\(local.pid)/cmdline", encoding: .utf8))?.hasPrefix("/.sigma-init") == true
                }
                var delete = Sigma_V1_AppRequest()
                delete.name = "sleeper"
                _ = try await cluster.client.call(SchedulerMethods.deleteApp, delete)
                // Well inside the 60 s grace period.
                try await cluster.eventually("gone", within: .seconds(20)) { try await cluster.instances("sleeper").isEmpty }
                #expect(agent.process.log.contains("exit 143"), "\(agent.process.log.suffix(2000))")
            }
        }
    }
}
