import Foundation
import Fuzzing
import Protocol
import RPC
import Testing
import TestSupport

/// The fuzz smoke (`make fuzz` sends a million a service): seeded hostile requests to every control-plane
/// service; each must get a typed answer with its own request id, none INTERNAL, and the service keeps serving.
@Suite(.serialized) struct FuzzTests {
    @Test func everyServiceAnswersHostileRequestsWithTypedErrors() async throws {
        try await SchedulerCluster.with(discoveries: 1, configs: 1) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(idc: "idc-a", cpu: 8000)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("web", replicas: 2, cpu: 100)
            try await cluster.eventually("web running") { try await cluster.allRunning("web", 2) }
            let targets = [("scheduler", cluster.endpoints[0]), ("allocator", cluster.allocatorEndpoint),
                           ("config", cluster.configEndpoints[0]), ("discovery", cluster.discoveryEndpoints[0])]
            for (index, (name, endpoint)) in targets.enumerated() {
                let served = try await servedMethods(endpoint: endpoint)
                #expect(served.contains("Health") && served.count > 2, "\(name): \(served)")
                let report = try await fuzzService(endpoint: endpoint, seed: UInt64(1000 + index), count: 10_000, methods: served)
                #expect(report.sent == 10_000)
                #expect(report.problems.isEmpty, "\(name): \(report.problems.prefix(10).joined(separator: "\n"))")
                // Most reach a handler and are refused by it, typed; some are answered OK.
                #expect((report.statuses["invalidArgument"] ?? 0) > 1000 && (report.statuses["ok"] ?? 0) > 0, "\(name): \(report.statuses)")
                let health = try await SchedulerCluster.rpcClient([endpoint]).call(CommonMethods.health, .init())
                #expect(health.healthy, "\(name) after fuzzing")
            }
        }
    }
}
