import ArgumentParser
import Foundation
import Logging
import Protocol
import RPC
import ClientKit

/// `sigmactl health`: calls `Health` on all five services and prints one table.
/// Exits 1 when any service is unreachable or unhealthy.
struct HealthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health", abstract: "Show whether every Sigma service is up and healthy.")

    @OptionGroup var endpoints: EndpointOptions
    @Option(name: .shortAndLong, help: "Output: table, wide, json or yaml.") var output: OutputFormat = .table

    struct Row {
        let kind: ServiceKind
        let endpoint: String
        let answer: Sigma_V1_HealthResponse?
        let error: String?
        var healthy: Bool { answer?.healthy ?? false }
    }

    func run() async throws {
        let rows = try await withThrowingTaskGroup(of: Row.self) { group in
            for kind in ServiceKind.allCases {
                let endpoint = endpoints.endpoints(kind)
                let client = try endpoints.client(kind)
                group.addTask {
                    do {
                        return Row(kind: kind, endpoint: endpoint, answer: try await client.call(CommonMethods.health, .init()), error: nil)
                    } catch {
                        return Row(kind: kind, endpoint: endpoint, answer: nil, error: "\(error)")
                    }
                }
            }
            var rows: [Row] = []
            for try await row in group { rows.append(row) }
            return rows.sorted { ServiceKind.allCases.firstIndex(of: $0.kind)! < ServiceKind.allCases.firstIndex(of: $1.kind)! }
        }
        switch output {
        case .json, .yaml:
            try printJSON(rows.map { row -> [String: Any] in
                var object: [String: Any] = ["service": row.kind.rawValue, "endpoint": row.endpoint, "healthy": row.healthy]
                if let answer = row.answer {
                    object["version"] = answer.version
                    object["role"] = answer.role
                    object["uptime_seconds"] = answer.uptimeSeconds
                    object["instance"] = answer.instance
                    object["dependencies"] = answer.dependencies.map {
                        ["name": $0.name, "reachable": $0.reachable, "detail": $0.detail, "latency_seconds": $0.latencySeconds] as [String: Any]
                    }
                }
                if let error = row.error { object["error"] = error }
                return object
            }, as: output)
        case .table, .wide:
            let header = ["SERVICE", "STATUS", "ROLE", "VERSION", "UPTIME", "ENDPOINT", "DEPENDENCIES"]
            printTable(header, rows.map { row in
                let status = row.answer == nil ? "UNREACHABLE" : (row.healthy ? "HEALTHY" : "UNHEALTHY")
                let dependencies = row.answer.map { answer in
                    answer.dependencies.map { dependency in
                        let state = dependency.reachable ? "ok" : "DOWN"
                        return output == .wide || !dependency.reachable
                            ? "\(dependency.name)=\(state) (\(dependency.detail))" : "\(dependency.name)=\(state)"
                    }.joined(separator: ", ")
                } ?? row.error ?? ""
                return [row.kind.rawValue, coloured(status), row.answer?.role ?? "-", row.answer?.version ?? "-",
                        row.answer.map { formatUptime($0.uptimeSeconds) } ?? "-", row.endpoint, dependencies]
            })
        }
        if !rows.allSatisfy(\.healthy) { throw ExitCode(1) }
    }
}

func formatUptime(_ seconds: Double) -> String {
    let s = Int(seconds)
    if s < 60 { return "\(s)s" }
    if s < 3600 { return "\(s / 60)m\(s % 60)s" }
    if s < 86400 { return "\(s / 3600)h\(s % 3600 / 60)m" }
    return "\(s / 86400)d\(s % 86400 / 3600)h"
}
