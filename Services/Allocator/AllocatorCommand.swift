import ArgumentParser
import Protocol
import RPC
import ClientKit
import ControlPlane
import Hosting

/// `sigma-allocator`: Sigma's allocator: instance IPs, host ports and SSDs, each exactly once.
@main
struct AllocatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-allocator",
        abstract: "Sigma's allocator: instance IPs, host ports and SSDs, each exactly once.")

    @OptionGroup var options: ServiceOptions
    @OptionGroup var database: DatabaseOptions

    @Option(help: "Seconds between sweeps that release what deleted instances still hold.")
    var reclaimInterval: Double = 60

    func run() async throws {
        let host = try ControlPlaneHost(kind: .allocator, options: options, database: database)
        let pools = IPPools(store: host.store, logger: host.logger)
        var handlers = RPCHandlers()
        handlers.register(AllocatorMethods.createIPPool) { request, _ in try await pools.create(request.pool) }
        handlers.register(AllocatorMethods.listIPPools) { _, _ in try await pools.list() }
        handlers.register(AllocatorMethods.allocateIPs) { request, _ in
            var response = Sigma_V1_AllocateIPsResponse()
            response.allocations = try await pools.allocate(request)
            return response
        }
        handlers.register(AllocatorMethods.releaseIPs) { request, _ in try await pools.release(request) }
        let ports = HostPorts(store: host.store, logger: host.logger)
        handlers.register(AllocatorMethods.setNodePortRange) { request, _ in
            var response = Sigma_V1_SetNodePortRangeResponse()
            response.range = try await ports.setRange(request.range)
            return response
        }
        handlers.register(AllocatorMethods.allocateHostPorts) { request, _ in
            var response = Sigma_V1_AllocateHostPortsResponse()
            response.allocations = try await ports.allocate(request.items)
            return response
        }
        handlers.register(AllocatorMethods.releaseHostPorts) { request, _ in try await ports.release(request.instanceIds) }
        handlers.register(AllocatorMethods.listHostPorts) { request, _ in try await ports.list(node: request.node, instance: request.instanceID) }
        let ssds = SSDs(store: host.store, logger: host.logger)
        handlers.register(AllocatorMethods.reportSSDs) { request, _ in
            var response = Sigma_V1_ReportSSDsResponse()
            response.ssds = try await ssds.report(node: request.node, request.ssds)
            return response
        }
        handlers.register(AllocatorMethods.allocateSSDs) { request, _ in
            var response = Sigma_V1_AllocateSSDsResponse()
            response.ssds = try await ssds.allocate(request.items)
            return response
        }
        handlers.register(AllocatorMethods.releaseSSDs) { request, _ in try await ssds.release(request.instanceIds) }
        handlers.register(AllocatorMethods.listSSDs) { request, _ in
            var response = Sigma_V1_ListSSDsResponse()
            response.ssds = try await ssds.list(node: request.node, instance: request.instanceID)
            return response
        }
        let reclaim: @Sendable () async throws -> Sigma_V1_ReclaimResponse = {
            var response = Sigma_V1_ReclaimResponse()
            response.reclaimedIps = try await pools.reclaim()
            response.reclaimedPorts = try await ports.reclaim()
            response.reclaimedSsds = try await ssds.reclaim()
            return response
        }
        handlers.register(AllocatorMethods.reclaim) { _, _ in try await reclaim() }
        handlers.register(AllocatorMethods.listIPAllocations) { request, _ in
            var response = Sigma_V1_ListIPAllocationsResponse()
            response.allocations = try await pools.allocations(pool: request.pool, instance: request.instanceID)
            return response
        }
        guard reclaimInterval > 0 else { throw ValidationError("--reclaim-interval must be positive") }
        let sweep = ReclaimSweep(reclaim: reclaim, interval: .milliseconds(Int(reclaimInterval * 1000)), logger: host.logger)
        try await host.run(handlers: handlers, role: "replica", services: [sweep])
    }
}
