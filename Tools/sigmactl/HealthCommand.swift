import ArgumentParser
import Foundation
import Logging
import Protocol
import RPC
import ClientKit

/// `sigmactl health`: calls `Health` on every service and prints one table: the control plane's four, and
/// the agent of every registered node (the scheduler says where they listen) unless an agent endpoint is
/// given. Exits 1 when any is unreachable or unhealthy.
struct HealthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health", abstract: "Show whether every Sigma service is up and healthy.",
        discussion: Examples.discussion("health"))

    @OptionGroup var endpoints: EndpointOptions
    @Option(name: .shortAndLong, help: "Output: table, wide, json or yaml.") var output: OutputFormat = .table

    struct Row {
        let kind: ServiceKind
        /// The agent's node, when the scheduler named it.
        let node: String?
        let endpoint: String
        let answer: Sigma_V1_HealthResponse?
        let error: String?
        var healthy: Bool { answer?.healthy ?? false }
    }

    func run() async throws {
        var targets = ServiceKind.allCases.filter { $0 != .agent }.map { (kind: $0, node: String?.none, endpoint: endpoints.endpoints($0)) }
        if let agents = endpoints.givenEndpoints(.agent) {
            targets.append((.agent, nil, agents))
        } else {
            let nodes = (try? await endpoints.client(.scheduler).call(SchedulerMethods.listNodes, .init()).nodes) ?? []
            let registered = nodes.filter { !$0.agentEndpoint.isEmpty }.sorted { $0.name < $1.name }
            targets += registered.isEmpty ? [(.agent, nil, ServiceKind.agent.defaultEndpoint)] : registered.map { (.agent, $0.name, $0.agentEndpoint) }
        }
        let rows = try await withThrowingTaskGroup(of: (Int, Row).self) { group in
            for (index, target) in targets.enumerated() {
                group.addTask { [endpoints] in
                    do {
                        let client = try endpoints.client(target.kind, at: target.endpoint)
                        let answer = try await client.call(CommonMethods.health, .init())
                        return (index, Row(kind: target.kind, node: target.node, endpoint: target.endpoint, answer: answer, error: nil))
                    } catch {
                        return (index, Row(kind: target.kind, node: target.node, endpoint: target.endpoint, answer: nil, error: "\(error)"))
                    }
                }
            }
            var rows: [(Int, Row)] = []
            for try await row in group { rows.append(row) }
            return rows.sorted { $0.0 < $1.0 }.map(\.1)
        }
        switch output {
        case .json, .yaml:
            try printJSON(rows.map { row -> [String: Any] in
                var object: [String: Any] = ["service": row.kind.rawValue, "endpoint": row.endpoint, "healthy": row.healthy]
                if let node = row.node { object["node"] = node }
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
                return [row.kind.rawValue + (row.node.map { " \($0)" } ?? ""), coloured(status), row.answer?.role ?? "-", row.answer?.version ?? "-",
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
