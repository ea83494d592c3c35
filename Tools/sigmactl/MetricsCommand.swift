import ArgumentParser
import Foundation
import Logging
import Protocol
import ClientKit

/// `sigmactl metrics SERVICE`: request counts and latencies per method.
struct MetricsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics", abstract: "Show calls and latency per method of one service.",
        discussion: Examples.discussion("metrics"))

    @Argument(help: "scheduler, allocator, agent, config or discovery") var service: ServiceKind
    @OptionGroup var endpoints: EndpointOptions
    @Option(name: .shortAndLong, help: "Output: table, wide, json or yaml.") var output: OutputFormat = .table

    func run() async throws {
        let client = try endpoints.client(service)
        let metrics = try await client.call(CommonMethods.metrics, .init())
        if output.isStructured {
            try printJSON(metrics.methods.map { method -> [String: Any] in
                [
                    "method": method.method, "calls": method.calls, "calls_by_status": method.callsByStatus,
                    "latency_sum_seconds": method.latencySumSeconds,
                    "latency_buckets": method.latencyBuckets.map { ["le": $0.upperBoundSeconds, "count": $0.count] },
                ]
            }, as: output)
            return
        }
        printTable(["METHOD", "CALLS", "ERRORS", "MEAN", "P50", "P99", "BY STATUS"], metrics.methods.map { method in
            let errors = method.calls - (method.callsByStatus["OK"] ?? 0)
            let mean = method.calls == 0 ? 0 : method.latencySumSeconds / Double(method.calls)
            let statuses = method.callsByStatus.keys.sorted().map { "\($0)=\(method.callsByStatus[$0]!)" }.joined(separator: " ")
            return [method.method, "\(method.calls)", "\(errors)", formatSeconds(mean),
                    quantile(method, 0.5), quantile(method, 0.99), statuses]
        })
    }

    /// The upper bound of the bucket holding quantile `q` ("≤ 5ms").
    func quantile(_ method: Sigma_V1_MethodMetrics, _ q: Double) -> String {
        guard method.calls > 0 else { return "-" }
        let rank = UInt64((Double(method.calls) * q).rounded(.up))
        guard let bucket = method.latencyBuckets.first(where: { $0.count >= rank }) else { return "> 60s" }
        return "≤ " + formatSeconds(bucket.upperBoundSeconds)
    }
}

func formatSeconds(_ seconds: Double) -> String {
    if seconds < 0.001 { return String(format: "%.0fµs", seconds * 1e6) }
    if seconds < 1 { return String(format: "%.1fms", seconds * 1e3) }
    return String(format: "%.2fs", seconds)
}
