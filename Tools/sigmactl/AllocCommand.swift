import ArgumentParser
import Foundation
import Logging
import Protocol
import RPC
import Service

/// `sigmactl alloc ...`: what the allocator has handed out, and its pools.
struct AllocCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alloc", abstract: "Inspect and manage the allocator's IP pools and allocations.",
        subcommands: [Pools.self, CreatePool.self, IPs.self, Release.self, Reclaim.self])

    static func client(_ endpoints: EndpointOptions) throws -> RPCClient {
        var logger = Logger(label: "sigmactl")
        logger.logLevel = .critical
        return try endpoints.keys.client(endpoints: endpoints.endpoints(.allocator),
                                         timeout: .milliseconds(Int(endpoints.timeout * 1000)), logger: logger)
    }

    struct Pools: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List IP pools with their usage (total, used, free, reserved).")
        @OptionGroup var endpoints: EndpointOptions
        @Option(name: .shortAndLong, help: "Output: table, wide or json.") var output: OutputFormat = .table

        func run() async throws {
            let answer = try await AllocCommand.client(endpoints).call(AllocatorMethods.listIPPools, .init())
            let usage = Dictionary(answer.usage.map { ($0.pool, $0) }, uniquingKeysWith: { a, _ in a })
            if output == .json {
                try printJSON(answer.pools.map { pool -> [String: Any] in
                    let u = usage[pool.name] ?? .init()
                    return ["name": pool.name, "cidr": pool.cidr, "gateway": pool.gateway, "reserved": pool.reserved,
                            "total": u.total, "used": u.used, "free": u.free, "reserved_count": u.reserved]
                })
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
            commandName: "create-pool", abstract: "Create an IP pool (at most a /16; network and broadcast are reserved).")
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
        static let configuration = CommandConfiguration(abstract: "List instance IP allocations.")
        @Option(help: "Only this pool.") var pool: String = ""
        @Option(help: "Only this instance (id).") var instance: String = ""
        @OptionGroup var endpoints: EndpointOptions
        @Option(name: .shortAndLong, help: "Output: table, wide or json.") var output: OutputFormat = .table

        func run() async throws {
            var request = Sigma_V1_ListIPAllocationsRequest()
            request.pool = pool
            request.instanceID = instance
            let allocations = try await AllocCommand.client(endpoints).call(AllocatorMethods.listIPAllocations, request).allocations
            if output == .json {
                try printJSON(allocations.map {
                    ["instance": $0.instanceID, "address": $0.address, "pool": $0.pool, "prefix_length": $0.prefixLength,
                     "gateway": $0.gateway] as [String: Any]
                })
                return
            }
            printTable(["INSTANCE", "ADDRESS", "POOL"], allocations.map { [$0.instanceID, "\($0.address)/\($0.prefixLength)", $0.pool] })
        }
    }

    struct Reclaim: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Release what deleted instances still hold, now.")
        @OptionGroup var endpoints: EndpointOptions

        func run() async throws {
            let answer = try await AllocCommand.client(endpoints).call(AllocatorMethods.reclaimIPs, .init())
            for allocation in answer.reclaimed { print("reclaimed \(allocation.address) of deleted instance \(allocation.instanceID)") }
            if answer.reclaimed.isEmpty { print("nothing to reclaim") }
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Release the IPs of deleted instances.")
        @Argument(help: "Instance ids.") var instances: [String]
        @OptionGroup var endpoints: EndpointOptions

        func run() async throws {
            var request = Sigma_V1_ReleaseIPsRequest()
            request.instanceIds = instances
            let answer = try await AllocCommand.client(endpoints).call(AllocatorMethods.releaseIPs, request)
            for allocation in answer.released { print("released \(allocation.address) of \(allocation.instanceID)") }
            for instance in answer.notAllocated { print("\(instance) held no IP: nothing to do") }
        }
    }
}
