import ArgumentParser
import Foundation
import Logging
import Protocol
import RPC
import ClientKit

/// `sigmactl alloc ...`: what the allocator has handed out, and its pools.
struct AllocCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alloc", abstract: "Inspect and manage the allocator's IP pools and allocations.",
        subcommands: [Pools.self, CreatePool.self, IPs.self, Ports.self, PortRange.self, SSDs.self, Release.self, Reclaim.self])

    static func client(_ endpoints: EndpointOptions) throws -> RPCClient {
        try endpoints.client(.allocator)
    }

    struct Pools: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List IP pools with their usage (total, used, free, reserved).",
            discussion: Examples.discussion("alloc pools"))
        @OptionGroup var endpoints: EndpointOptions
        @Option(name: .shortAndLong, help: "Output: table, wide, json or yaml.") var output: OutputFormat = .table

        func run() async throws {
            let answer = try await AllocCommand.client(endpoints).call(AllocatorMethods.listIPPools, .init())
            let usage = Dictionary(answer.usage.map { ($0.pool, $0) }, uniquingKeysWith: { a, _ in a })
            if output.isStructured {
                try printJSON(answer.pools.map { pool -> [String: Any] in
                    let u = usage[pool.name] ?? .init()
                    return ["name": pool.name, "cidr": pool.cidr, "gateway": pool.gateway, "reserved": pool.reserved,
                            "total": u.total, "used": u.used, "free": u.free, "reserved_count": u.reserved]
                }, as: output)
                return
            }
            printTable(["POOL", "CIDR", "GATEWAY", "TOTAL", "USED", "FREE", "RESERVED"] + (output == .wide ? ["OPERATOR-RESERVED"] : []),
                       answer.pools.map { pool in
                           let u = usage[pool.name] ?? .init()
                           return [pool.name, pool.cidr, pool.gateway.isEmpty ? "-" : pool.gateway, "\(u.total)", "\(u.used)",
                                   "\(u.free)", "\(u.reserved)"] + (output == .wide ? [pool.reserved.joined(separator: ",")] : [])
                       })
        }
    }

    struct CreatePool: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-pool", abstract: "Create an IP pool (at most a /16; network and broadcast are reserved).",
            discussion: Examples.discussion("alloc create-pool"))
        @Argument(help: "Pool name.") var name: String
        @Argument(help: "IPv4 CIDR, e.g. 100.64.0.0/16.") var cidr: String
        @Option(help: "Gateway address inside the pool (reserved).") var gateway: String = ""
        @Option(parsing: .upToNextOption, help: "Further addresses to keep out of allocation.") var reserve: [String] = []
        @OptionGroup var endpoints: EndpointOptions

        func run() async throws {
            var request = Sigma_V1_CreateIPPoolRequest()
            request.pool.name = name
            request.pool.cidr = cidr
            request.pool.gateway = gateway
            request.pool.reserved = reserve
            let answer = try await AllocCommand.client(endpoints).call(AllocatorMethods.createIPPool, request)
            print("pool \(answer.pool.name) created: \(answer.pool.cidr), \(answer.usage.free) addresses free, \(answer.usage.reserved) reserved")
        }
    }

    struct IPs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ips", abstract: "List instance IP allocations.",
            discussion: Examples.discussion("alloc ips"))
        @Option(help: "Only this pool.") var pool: String = ""
        @Option(help: "Only this instance (id).") var instance: String = ""
        @OptionGroup var endpoints: EndpointOptions
        @Option(name: .shortAndLong, help: "Output: table, wide, json or yaml.") var output: OutputFormat = .table

        func run() async throws {
            var request = Sigma_V1_ListIPAllocationsRequest()
            request.pool = pool
            request.instanceID = instance
            let allocations = try await AllocCommand.client(endpoints).call(AllocatorMethods.listIPAllocations, request).allocations
            if output.isStructured {
                try printJSON(allocations.map {
                    ["instance": $0.instanceID, "address": $0.address, "pool": $0.pool, "prefix_length": $0.prefixLength,
                     "gateway": $0.gateway] as [String: Any]
                }, as: output)
                return
            }
            printTable(["INSTANCE", "ADDRESS", "POOL"], allocations.map { [$0.instanceID, "\($0.address)/\($0.prefixLength)", $0.pool] })
        }
    }

    struct Reclaim: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Release what deleted instances still hold, now.",
            discussion: Examples.discussion("alloc reclaim"))
        @OptionGroup var endpoints: EndpointOptions

        func run() async throws {
            let answer = try await AllocCommand.client(endpoints).call(AllocatorMethods.reclaim, .init())
            for allocation in answer.reclaimedIps { print("reclaimed \(allocation.address) of deleted instance \(allocation.instanceID)") }
            for ssd in answer.reclaimedSsds { print("reclaimed SSD \(ssd.path) on \(ssd.node) of deleted instance \(ssd.instanceID)") }
            for allocation in answer.reclaimedPorts {
                print("reclaimed ports \(allocation.ports.map(String.init).joined(separator: ",")) on \(allocation.node) of deleted instance \(allocation.instanceID)")
            }
            if answer.reclaimedIps.isEmpty && answer.reclaimedPorts.isEmpty && answer.reclaimedSsds.isEmpty { print("nothing to reclaim") }
        }
    }

    struct Ports: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List host ports in use, and nodes' port ranges.",
            discussion: Examples.discussion("alloc ports"))
        @Option(help: "Only this node.") var node: String = ""
        @Option(help: "Only this instance (id).") var instance: String = ""
        @OptionGroup var endpoints: EndpointOptions
        @Option(name: .shortAndLong, help: "Output: table, wide, json or yaml.") var output: OutputFormat = .table

        func run() async throws {
            var request = Sigma_V1_ListHostPortsRequest()
            request.node = node
            request.instanceID = instance
            let answer = try await AllocCommand.client(endpoints).call(AllocatorMethods.listHostPorts, request)
            if output.isStructured {
                try printJSON([
                    "allocations": answer.allocations.map { ["instance": $0.instanceID, "node": $0.node, "ports": $0.ports] as [String: Any] },
                    "ranges": answer.ranges.map {
                        ["node": $0.node, "first_port": $0.firstPort, "last_port": $0.lastPort, "reserved": $0.reserved] as [String: Any]
                    },
                ], as: output)
                return
            }
            printTable(["NODE", "INSTANCE", "PORTS"], answer.allocations.map {
                [$0.node, $0.instanceID, $0.ports.map(String.init).joined(separator: ",")]
            })
        }
    }

    struct SSDs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ssds", abstract: "List SSDs of the nodes and who holds them.",
            discussion: Examples.discussion("alloc ssds"))
        @Option(help: "Only this node.") var node: String = ""
        @Option(help: "Only this instance (id).") var instance: String = ""
        @OptionGroup var endpoints: EndpointOptions
        @Option(name: .shortAndLong, help: "Output: table, wide, json or yaml.") var output: OutputFormat = .table

        func run() async throws {
            var request = Sigma_V1_ListSSDsRequest()
            request.node = node
            request.instanceID = instance
            let ssds = try await AllocCommand.client(endpoints).call(AllocatorMethods.listSSDs, request).ssds
            if output.isStructured {
                try printJSON(ssds.map {
                    ["node": $0.node, "path": $0.path, "size_bytes": $0.sizeBytes, "model": $0.model, "healthy": $0.healthy,
                     "instance": $0.instanceID] as [String: Any]
                }, as: output)
                return
            }
            printTable(["NODE", "PATH", "SIZE", "MODEL", "HEALTHY", "INSTANCE"], ssds.map {
                [$0.node, $0.path, String(format: "%.0f GiB", Double($0.sizeBytes) / Double(1 << 30)), $0.model.isEmpty ? "-" : $0.model,
                 $0.healthy ? "yes" : "NO", $0.instanceID.isEmpty ? "-" : $0.instanceID]
            })
        }
    }

    struct PortRange: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "port-range", abstract: "Set a node's host port range (default 20000-32767).",
            discussion: Examples.discussion("alloc port-range"))
        @Argument(help: "Node name.", completion: NameCompletion.nodes) var node: String
        @Argument(help: "First port.") var first: UInt32
        @Argument(help: "Last port.") var last: UInt32
        @Option(parsing: .upToNextOption, help: "Ports of the range to keep out of allocation.") var reserve: [UInt32] = []
        @OptionGroup var endpoints: EndpointOptions

        func run() async throws {
            var request = Sigma_V1_SetNodePortRangeRequest()
            request.range.node = node
            request.range.firstPort = first
            request.range.lastPort = last
            request.range.reserved = reserve
            _ = try await AllocCommand.client(endpoints).call(AllocatorMethods.setNodePortRange, request)
            print("node \(node): host ports \(first)-\(last)" + (reserve.isEmpty ? "" : ", reserved \(reserve.map(String.init).joined(separator: ","))"))
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Release the IPs, host ports and SSDs of deleted instances.",
            discussion: Examples.discussion("alloc release"))
        @Argument(help: "Instance ids.") var instances: [String]
        @OptionGroup var endpoints: EndpointOptions

        func run() async throws {
            let client = try AllocCommand.client(endpoints)
            var request = Sigma_V1_ReleaseIPsRequest()
            request.instanceIds = instances
            let answer = try await client.call(AllocatorMethods.releaseIPs, request)
            for allocation in answer.released { print("released \(allocation.address) of \(allocation.instanceID)") }
            var portsRequest = Sigma_V1_ReleaseHostPortsRequest()
            portsRequest.instanceIds = instances
            let ports = try await client.call(AllocatorMethods.releaseHostPorts, portsRequest)
            for allocation in ports.released {
                print("released ports \(allocation.ports.map(String.init).joined(separator: ",")) on \(allocation.node) of \(allocation.instanceID)")
            }
            var ssdRequest = Sigma_V1_ReleaseSSDsRequest()
            ssdRequest.instanceIds = instances
            let ssds = try await client.call(AllocatorMethods.releaseSSDs, ssdRequest)
            for ssd in ssds.released { print("released SSD \(ssd.path) on \(ssd.node) of \(ssd.instanceID)") }
            let nothing = Set(answer.notAllocated).intersection(ports.notAllocated).intersection(ssds.notAllocated)
            for instance in instances.map({ $0.lowercased() }) where nothing.contains(instance) {
                print("\(instance) held nothing: nothing to do")
            }
        }
    }
}
