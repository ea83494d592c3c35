import Core
import Foundation
import Protocol
import Store

/// The listing of `instances` (read only): its columns, as the scheduler's listings select them, and their decoding.
extension InstancesTable {
    /// The columns of an instance's listing, `instances i` joined with `nodes n`, as `instance(_:)` reads them.
    static let listColumns = """
        i.id::text AS id, i.app, i.ordinal, coalesce(i.node, '') AS node, i.state, i.generation, i.revision, i.ip,
        i.prefix_length, i.gateway, i.host_ports::text AS host_ports, i.ssds::text AS ssds,
        i.request_cpu_millis, i.request_memory_bytes, i.limit_cpu_millis, i.limit_memory_bytes,
        i.applied_cpu_millis, i.applied_memory_bytes, i.usage_cpu_millis, i.usage_memory_bytes, i.pending_reason, i.reason, i.exit_code,
        i.ready, i.restarts,
        coalesce((extract(epoch FROM i.next_retry_at) * 1000)::bigint, 0) AS next_retry_ms,
        (extract(epoch FROM i.created_at) * 1000)::bigint AS created_ms, (extract(epoch FROM i.updated_at) * 1000)::bigint AS updated_ms,
        coalesce(host(n.host_ip), '') AS host_ip
        """

    static func instance(_ row: Row) throws -> Sigma_V1_Instance {
        var instance = Sigma_V1_Instance()
        instance.id = try row.decode(String.self, "id")
        instance.app = try row.decode(String.self, "app")
        instance.ordinal = try row.decode(Int32.self, "ordinal")
        instance.node = try row.decode(String.self, "node")
        instance.state = try row.decode(String.self, "state")
        instance.stateCode = InstanceState(rawValue: instance.state)?.code ?? .instanceStateUnspecified
        instance.generation = try row.decode(Int64.self, "generation")
        instance.revision = try row.decode(Int64.self, "revision")
        instance.ip = try row.decode(String.self, "ip")
        instance.hostIp = try row.decode(String.self, "host_ip")
        let ports = try row.decodeJSON([String: Int].self, "host_ports")
        instance.hostPorts = ports.mapValues { UInt32(clamping: $0) }
        instance.ssdPaths = try Assignments.decodeSSDs(try row.decode(String.self, "ssds")).map(\.path)
        instance.resources.request = Resources(
            cpuMillis: try row.decode(Int64.self, "request_cpu_millis"), memoryBytes: try row.decode(Int64.self, "request_memory_bytes")).wire
        instance.resources.limit = Resources(
            cpuMillis: try row.decode(Int64.self, "limit_cpu_millis"), memoryBytes: try row.decode(Int64.self, "limit_memory_bytes")).wire
        if let cpu = try row.decode(Int64?.self, "applied_cpu_millis"), let memory = try row.decode(Int64?.self, "applied_memory_bytes") {
            instance.appliedLimit = Resources(cpuMillis: cpu, memoryBytes: memory).wire
        }
        instance.usage.cpuMillis = try row.decode(Int64.self, "usage_cpu_millis")
        instance.usage.memoryBytes = try row.decode(Int64.self, "usage_memory_bytes")
        instance.pendingReason = try row.decode(String.self, "pending_reason")
        instance.reason = try row.decode(String.self, "reason")
        instance.exitCode = try row.decode(Int32.self, "exit_code")
        instance.ready = try row.decode(Bool.self, "ready")
        instance.restarts = try row.decode(Int32.self, "restarts")
        instance.nextRetryUnixMs = try row.decode(Int64.self, "next_retry_ms")
        instance.createdUnixMs = try row.decode(Int64.self, "created_ms")
        instance.updatedUnixMs = try row.decode(Int64.self, "updated_ms")
        return instance
    }
}
