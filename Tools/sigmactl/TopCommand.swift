import ArgumentParser
import ClientKit
import Core
import Foundation
import Protocol
import RPC

/// `sigmactl top nodes|instances`: what each uses against what it asked for and may use, from the agents'
/// last heartbeats (the same figures `get pool` sums).
struct TopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top", abstract: "Show CPU and memory used by nodes or instances, beside their requests, limits and capacity.",
        discussion: Examples.discussion("top"))
    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case nodes, instances

        init?(argument: String) {
            switch GetCommand.Kind(argument: argument) {
            case .nodes: self = .nodes
            case .instances: self = .instances
            default: return nil
            }
        }
    }
    enum Order: String, ExpressibleByArgument, CaseIterable { case name, cpu, memory }
    @Argument(help: "nodes or instances.") var kind: Kind
    @Option(help: "Instances of this app only.") var app: String = ""
    @Option(help: "Instances on this node only.") var node: String = ""
    @Option(help: "Order: name, or the most used first (cpu, memory).") var sortBy: Order = .name
    @OptionGroup var endpoints: EndpointOptions

    static func percent(_ part: Int64, _ whole: Int64) -> String { whole > 0 ? "\(Int((Double(part) * 100 / Double(whole)).rounded()))%" : "-" }

    func run() async throws {
        let client = try endpoints.client(.scheduler)
        switch kind {
        case .nodes:
            var nodes = try await client.call(SchedulerMethods.listNodes, .init()).nodes.sorted { $0.name < $1.name }
            if sortBy == .cpu { nodes.sort { $0.usage.cpuMillis > $1.usage.cpuMillis } }
            if sortBy == .memory { nodes.sort { $0.usage.memoryBytes > $1.usage.memoryBytes } }
            printTable(["NAME", "CPU USED", "CPU%", "CPU REQ", "CPU CAP", "MEM USED", "MEM%", "MEM REQ", "MEM CAP", "INSTANCES"], nodes.map { node in
                [node.name, Quantity.formatCPU(node.usage.cpuMillis), Self.percent(node.usage.cpuMillis, node.capacity.cpuMillis),
                 Quantity.formatCPU(node.requested.cpuMillis), Quantity.formatCPU(node.capacity.cpuMillis),
                 Quantity.formatBytesRounded(node.usage.memoryBytes), Self.percent(node.usage.memoryBytes, node.capacity.memoryBytes),
                 Quantity.formatBytesRounded(node.requested.memoryBytes), Quantity.formatBytesRounded(node.capacity.memoryBytes), "\(node.instances)"]
            })
        case .instances:
            var request = Sigma_V1_ListInstancesRequest()
            request.app = app
            request.node = node
            var instances = try await client.call(SchedulerMethods.listInstances, request).instances
                .filter { !$0.node.isEmpty }.sorted { (instanceName($0)) < (instanceName($1)) }
            if sortBy == .cpu { instances.sort { $0.usage.cpuMillis > $1.usage.cpuMillis } }
            if sortBy == .memory { instances.sort { $0.usage.memoryBytes > $1.usage.memoryBytes } }
            printTable(["NAME", "NODE", "CPU USED", "CPU REQ", "CPU LIMIT", "MEM USED", "MEM REQ", "MEM LIMIT", "MEM% OF LIMIT"], instances.map { instance in
                let request = instance.resources.request, cap = instance.resources.limit
                return [instanceName(instance), instance.node, Quantity.formatCPU(instance.usage.cpuMillis), Quantity.formatCPU(request.cpuMillis),
                        limitText(cap.cpuMillis, Quantity.formatCPU), Quantity.formatBytesRounded(instance.usage.memoryBytes),
                        Quantity.formatBytesRounded(request.memoryBytes), limitText(cap.memoryBytes, Quantity.formatBytesRounded),
                        Self.percent(instance.usage.memoryBytes, cap.memoryBytes)]
            })
        }
    }
}
