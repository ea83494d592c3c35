import Foundation
import Protocol
import RPC
import Store
import Testing
import TestSupport

/// The usage history on a real scheduler and PostgreSQL: samples of Running instances and pool groups, the
/// fold of finished hours, the prune, and `RecommendResources` / `sigmactl recommend` on a synthetic history.
@Suite struct UsageHistoryTests {
    static let columns = """
        (scope, name, app, resolution, at, samples, cpu_millis, cpu_peak_millis, memory_bytes, memory_peak_bytes,
         request_cpu_millis, request_memory_bytes, limit_cpu_millis, limit_memory_bytes)
        """

    @Test func samplesFoldIntoHoursAndTheOldGo() async throws {
        try await SchedulerCluster.with(extra: ["--usage-interval", "0.3"]) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(idc: "idc-a", cpu: 8000)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("web", replicas: 1, cpu: 500)
            agent.setUsage("web", cpuMillis: 123, memoryBytes: 64 << 20)
            try await cluster.eventually("web-0 sampled with its usage") {
                try await !cluster.store.query(
                    """
                    SELECT 1 FROM usage_history WHERE scope = 'instance' AND name = 'web-0' AND app = 'web' AND resolution = 'sample'
                        AND cpu_millis = 123 AND memory_bytes = 67108864 AND request_cpu_millis = 500
                    """).isEmpty
            }
            try await cluster.eventually("idc-a sampled with its requests and capacity") {
                try await !cluster.store.query(
                    """
                    SELECT 1 FROM usage_history WHERE scope = 'group' AND name = 'idc-a' AND resolution = 'sample'
                        AND request_cpu_millis = 500 AND capacity_cpu_millis = 8000
                    """).isEmpty
            }

            // Three samples of an hour that is over become one hour row; an hour row past the retention goes.
            for (minute, cpu) in [(1, 10), (2, 20), (3, 30)] {
                _ = try await cluster.store.execute(
                    "INSERT INTO usage_history \(Self.columns) VALUES ('instance', 'old-0', 'old', 'sample', "
                        + "date_trunc('hour', now()) - interval '3 hours' + make_interval(mins => $1), 1, $2, $2, 1048576, 1048576, 0, 0, 0, 0)",
                    minute, cpu)
            }
            _ = try await cluster.store.execute(
                "INSERT INTO usage_history \(Self.columns) VALUES ('instance', 'old-0', 'old', 'hour', now() - interval '200 hours', 60, 1, 1, 1, 1, 0, 0, 0, 0)")
            try await cluster.eventually("old-0's hour folded, its week-old row pruned") {
                let rows = try await cluster.store.query(
                    "SELECT resolution, samples, cpu_millis, cpu_peak_millis FROM usage_history WHERE name = 'old-0' ORDER BY at")
                guard rows.count == 1 else { return false }
                return try rows[0].decode(String.self, "resolution") == "hour" && rows[0].decode(Int.self, "samples") == 3
                    && rows[0].decode(Int64.self, "cpu_millis") == 20 && rows[0].decode(Int64.self, "cpu_peak_millis") == 30
            }
            let stale = try await cluster.store.query(
                "SELECT 1 FROM usage_history WHERE resolution = 'sample' AND at < date_trunc('hour', now())")
            #expect(stale.isEmpty, "samples of finished hours are folded")
        }
    }

    @Test func recommendSizesFromTheP95AndThePeak() async throws {
        try await SchedulerCluster.with(extra: ["--usage-interval", "0"]) { cluster in
            try await cluster.apply("db", replicas: 0, cpu: 1000, memory: 1 << 30)
            // 100 hourly readings of db-0, half an hour apart from the hour marks: CPU 100m … 199m, memory 100Mi …
            // 199Mi; the peaks 500m and 400Mi once.
            for i in 0..<100 {
                _ = try await cluster.store.execute(
                    "INSERT INTO usage_history \(Self.columns) VALUES ('instance', 'db-0', 'db', 'hour', "
                        + "now() - make_interval(secs => $1), 60, $2, $3, $4, $5, 1000, 1073741824, 0, 0)",
                    (Double(i) + 0.5) * 3600, 100 + i, i == 7 ? 500 : 100 + i, Int64(100 + i) << 20, i == 9 ? Int64(400) << 20 : Int64(100 + i) << 20)
            }
            var request = Sigma_V1_RecommendResourcesRequest()
            request.app = "db"
            let answer = try await cluster.client.call(SchedulerMethods.recommendResources, request)
            #expect(answer.readings == 100 && answer.instances == 1)
            #expect(answer.cpuP95Millis == 194 && answer.cpuPeakMillis == 500 && answer.memoryP95Bytes == 194 << 20 && answer.memoryPeakBytes == 400 << 20)
            #expect(answer.recommended.request.cpuMillis == 230 && answer.recommended.limit.cpuMillis == 650)
            #expect(answer.recommended.request.memoryBytes == 224 << 20 && answer.recommended.limit.memoryBytes == 520 << 20)
            #expect(answer.current.request.cpuMillis == 1000 && answer.method.hasPrefix("request = p95 × 115%"))
            request.windowHours = 50
            #expect(try await cluster.client.call(SchedulerMethods.recommendResources, request).readings == 50)

            // Refused: too little history, an unknown app, a headroom out of range.
            try await cluster.apply("tiny", replicas: 0)
            request.app = "tiny"
            request.windowHours = 0
            await #expect(throws: RPCError.self) { _ = try await cluster.client.call(SchedulerMethods.recommendResources, request) }
            do {
                _ = try await cluster.client.call(SchedulerMethods.recommendResources, request)
            } catch let error as RPCError {
                #expect(error.code == .failedPrecondition && error.message.hasPrefix("app tiny has 0 usage reading(s) in the last 168 h"), "\(error)")
            }
            request.app = "nothing"
            await #expect(throws: RPCError.notFound("no app nothing")) { _ = try await cluster.client.call(SchedulerMethods.recommendResources, request) }
            request.app = "db"
            request.headroomPercent = 500
            await #expect(throws: RPCError.invalidArgument("headroom_percent: 500 is not between 0 and 400")) {
                _ = try await cluster.client.call(SchedulerMethods.recommendResources, request)
            }

            // sigmactl shows current and proposed, and --apply sets the proposal.
            let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
            let flags = ["--scheduler", cluster.endpoints[0], "--timeout", "20"]
            let shown = try await runProgram(sigmactl, ["recommend", "db", "--apply"] + flags)
            let proposed = shown.split(separator: "\n").first { $0.hasPrefix("proposed") }?.split(separator: " ").map(String.init)
            #expect(proposed == ["proposed", "230m", "650m", "224Mi", "520Mi"], "\(shown)")
            #expect(shown.contains("app/db resources set live"), "\(shown)")
            var get = Sigma_V1_AppRequest()
            get.name = "db"
            let resources = try await cluster.client.call(SchedulerMethods.getApp, get).app.spec.resources
            #expect(resources.request.cpuMillis == 230 && resources.limit.memoryBytes == 520 << 20)
        }
    }
}
