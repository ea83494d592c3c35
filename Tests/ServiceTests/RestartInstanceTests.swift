import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// `RestartInstance` / `sigmactl restart APP-N`: a running instance gets a new generation on its node (same IP,
/// nothing else touched), one that ended is placed again, and what cannot be restarted is refused with why.
@Suite struct RestartInstanceTests {
    @Test func aRunningInstanceRestartsInPlaceAndAnEndedOneIsPlacedAgain() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("web", replicas: 2, cpu: 1000)
            try await cluster.eventually("web running") {
                try await cluster.instances("web").allSatisfy { $0.state == "Running" && $0.node == "n1" }
            }
            let before = try await cluster.instances("web")
            let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
            let flags = ["--scheduler", cluster.endpoints[0], "--timeout", "20"]

            // In place: web-1 is a new generation on n1 with the same IP; web-0 keeps its generation.
            let printed = try await runProgram(sigmactl, ["restart", "web-1"] + flags)
            #expect(printed.contains("instance web-1 restarted: generation \(before[1].generation + 1) on n1"), "\(printed)")
            try await cluster.eventually("web-1 running again") {
                let now = try await cluster.instance("web", ordinal: 1)
                return now?.state == "Running" && now?.generation == before[1].generation + 1
            }
            let after = try await cluster.instances("web")
            #expect(after[1].ip == before[1].ip && after[1].node == "n1")
            #expect(after[0].generation == before[0].generation)
            #expect(try await cluster.events("instance", after[1].id).contains { $0.reason == "Restarted" && $0.message == "by anonymous, on n1" })

            // Ended: both fail; web-0 restarted is placed again (a new generation, same IP), web-1 stays Failed.
            agent.setEnded("web", "Failed")
            try await cluster.eventually("web failed") { try await cluster.instances("web").allSatisfy { $0.state == "Failed" } }
            agent.setEnded("web", nil)
            var request = Sigma_V1_GetInstanceRequest()
            request.app = "web"
            request.ordinal = 0
            _ = try await cluster.client.call(SchedulerMethods.restartInstance, request)
            try await cluster.eventually("web-0 running after its restart") {
                let now = try await cluster.instance("web", ordinal: 0)
                return now?.state == "Running" && now!.generation > before[0].generation
            }
            #expect(try await cluster.instance("web", ordinal: 0)?.ip == before[0].ip)
            #expect(try await cluster.instance("web", ordinal: 1)?.state == "Failed")

            // Refused: an instance not placed yet, one that does not exist.
            try await cluster.apply("big", replicas: 2, cpu: 5000)
            try await cluster.eventually("big-1 pending") { try await cluster.instance("big", ordinal: 1)?.pendingReason.isEmpty == false }
            request.app = "big"
            request.ordinal = 1
            let pendingID = try #require(try await cluster.instance("big", ordinal: 1)?.id)
            await #expect(throws: RPCError.failedPrecondition("instance \(pendingID) is Pending: not placed yet; nothing to restart")) {
                _ = try await cluster.client.call(SchedulerMethods.restartInstance, request)
            }
            let (missing, why) = try await runProgramStatus(sigmactl, ["restart", "nope-0"] + flags)
            #expect(missing != 0 && why.contains("nope-0"), "\(why)")
        }
    }
}
