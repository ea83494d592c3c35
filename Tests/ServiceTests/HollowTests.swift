import Foundation
import Testing
import TestSupport

/// The small form of `sigma-bench hollow` in the suite: 200 simulated agents over the real protocol against a
/// real scheduler, allocator and PostgreSQL go through every phase — at rest, a deploy of 400 instances that all
/// run, 10 % of the nodes silenced with every one of their instances Running elsewhere on its IP, the apps
/// deleted with every node emptied (the bench fails when a phase does not get there). Its timings are the
/// benchmark's to report (`make bench`), not asserted here.
@Suite struct HollowTests {
    @Test func twoHundredSimulatedNodesGoThroughEveryPhase() async throws {
        let result = try await runProgramStatus(ServiceProcess.binDirectory + "/sigma-bench", [
            "hollow", "--database-url", try TestDatabase.adminURL, "--nodes", "200", "--instances", "2", "--seconds", "2", "--json",
        ])
        #expect(result.status == 0, "\(result.output)")
        let json = try #require(result.output.firstIndex(of: "{").map { String(result.output[$0...]) })
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let figures = try #require(object["figures"] as? [[String: Any]])
        let names = Set(figures.compactMap { $0["name"] as? String })
        for name in ["empty nodes: heartbeat p99", "apply → all 400 Running", "400 instances: postgres CPU",
                     "10% silenced → their instances Running elsewhere, same IPs", "delete → every node empty"] {
            #expect(names.contains(name), "no figure \(name) in \(names.sorted())")
        }
        let answered = figures.first { $0["name"] as? String == "empty nodes: heartbeats answered" }?["value"] as? Double
        #expect((answered ?? 0) > 0, "the simulated nodes' heartbeats were answered")
    }
}
