import Core
import Foundation
import Logging
import Protocol
import Store

/// Host ports: random free ports of a node's range, kept per instance and node. Uniqueness lives in the
/// schema (primary key node + port); a concurrent pick of the same port by another replica rolls back and
/// picks again.
struct HostPorts: Sendable {
    let store: Store
    let logger: Logger

    static let defaultRange = HostPortRange.default
    static let maxPerInstance = 64

    func setRange(_ range: Sigma_V1_PortRange) async throws -> Sigma_V1_PortRange {
        guard !range.node.isEmpty else { throw RPCError.invalidArgument("range.node: required") }
        guard (1...65535).contains(range.firstPort), (range.firstPort...65535).contains(range.lastPort) else {
            throw RPCError.invalidArgument("range: \(range.firstPort)-\(range.lastPort) is not a port range within 1-65535")
        }
        for port in range.reserved where !(range.firstPort...range.lastPort).contains(port) {
            throw RPCError.invalidArgument("range.reserved: \(port) is outside \(range.firstPort)-\(range.lastPort)")
        }
        do {
            try await store.execute(
                """
                INSERT INTO node_port_ranges (node, first_port, last_port, reserved) VALUES ($1, $2, $3, $4::int[])
                ON CONFLICT (node) DO UPDATE SET first_port = $2, last_port = $3, reserved = $4::int[]
                """, range.node, Int(range.firstPort), Int(range.lastPort), range.reserved.map { Int($0) })
        } catch let error as StoreError where error.code == .constraintViolation {
            throw RPCError.notFound("no node \(range.node)")
        }
        logger.info("host port range set", metadata: ["node": "\(range.node)", "range": "\(range.firstPort)-\(range.lastPort)"])
        return range
    }

    func allocate(_ items: [Sigma_V1_HostPortRequest]) async throws -> [Sigma_V1_HostPortAllocation] {
        guard !items.isEmpty else { throw RPCError.invalidArgument("items: at least one") }
        var seen = Set<UUID>()
        let parsed: [(node: String, instance: UUID, count: Int)] = try items.map { item in
            guard !item.node.isEmpty else { throw RPCError.invalidArgument("items.node: required") }
            let instance = try parseInstanceID(item.instanceID, field: "items.instance_id")
            guard (1...UInt32(Self.maxPerInstance)).contains(item.count) else {
                throw RPCError.invalidArgument("items.count: 1 to \(Self.maxPerInstance) ports per instance")
            }
            guard seen.insert(instance).inserted else { throw RPCError.invalidArgument("items: instance \(instance) twice") }
            return (item.node, instance, Int(item.count))
        }
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await store.transaction(isolation: .readCommitted) { tx in
                    var result: [Sigma_V1_HostPortAllocation] = []
                    for item in parsed { result.append(try await allocate(item.node, item.instance, item.count, tx)) }
                    return result
                }
            } catch let error as StoreError where error.code == .uniqueViolation && attempt < 10 {
                logger.debug("another replica took the same port; picking again", metadata: ["attempt": "\(attempt)"])
            }
        }
    }

    private func allocate(_ node: String, _ instance: UUID, _ count: Int, _ tx: Transaction) async throws
        -> Sigma_V1_HostPortAllocation
    {
        let ranges = try await tx.query(
            """
            SELECT coalesce(r.first_port, $2) AS first, coalesce(r.last_port, $3) AS last,
                   coalesce(array_to_string(r.reserved, ','), '') AS reserved
            FROM node_directory n LEFT JOIN node_port_ranges r ON r.node = n.name WHERE n.name = $1
            """, node, Self.defaultRange.lowerBound, Self.defaultRange.upperBound)
        guard let range = ranges.first else { throw RPCError.notFound("no node \(node)") }
        guard !(try await tx.query("SELECT 1 FROM instance_directory WHERE id = $1", instance)).isEmpty else {
            throw RPCError.notFound("no instance \(instance.lowercasedText)")
        }
        // An instance runs on one node: what it holds elsewhere it has moved away from.
        for row in try await tx.query("DELETE FROM host_ports WHERE instance = $1 AND node <> $2 RETURNING node, port", instance, node) {
            let oldNode = try row.decode(String.self, "node")
            let port = try row.decode(Int.self, "port")
            logger.info("host port released: instance moved", metadata: ["instance": "\(instance)", "node": "\(oldNode)", "port": "\(port)"])
        }
        var ports = try await tx.query("SELECT port FROM host_ports WHERE instance = $1 AND node = $2", instance, node).map {
            try $0.decode(Int.self, "port")
        }
        let need = count - ports.count
        if need > 0 {
            let first = try range.decode(Int.self, "first")
            let last = try range.decode(Int.self, "last")
            let reserved = try range.decode(String.self, "reserved")
            let picked = try await tx.query(
                """
                SELECT p FROM generate_series($2::int, $3::int) AS p
                WHERE p <> ALL(coalesce(string_to_array(nullif($4, ''), ',')::int[], '{}'::int[]))
                  AND NOT EXISTS (SELECT 1 FROM host_ports h WHERE h.node = $1 AND h.port = p)
                ORDER BY random() LIMIT $5
                """, node, first, last, reserved, need
            ).map { try $0.decode(Int.self, "p") }
            guard picked.count == need else {
                throw RPCError.resourceExhausted(
                    "node \(node) has \(picked.count) free host ports in \(first)-\(last); instance \(instance.lowercasedText) needs \(need)")
            }
            try await tx.execute(
                "INSERT INTO host_ports (node, port, instance) SELECT $1, p, $3 FROM unnest($2::int[]) AS p", node, picked, instance)
            ports += picked
        }
        var allocation = Sigma_V1_HostPortAllocation()
        allocation.node = node
        allocation.instanceID = instance.lowercasedText
        allocation.ports = ports.sorted().map { UInt32($0) }
        return allocation
    }

    func release(_ texts: [String]) async throws -> Sigma_V1_ReleaseHostPortsResponse {
        let ids = try parseInstanceIDs(texts, field: "instance_ids")
        let rows = try await store.query(
            "DELETE FROM host_ports WHERE instance = ANY($1::uuid[]) RETURNING instance::text AS instance, node, port", ids)
        var response = Sigma_V1_ReleaseHostPortsResponse()
        response.released = try Self.group(rows)
        let released = Set(response.released.map(\.instanceID))
        response.notAllocated = ids.map { $0.lowercasedText }.filter { !released.contains($0) }
        return response
    }

    func list(node: String, instance: String) async throws -> Sigma_V1_ListHostPortsResponse {
        let instanceID: UUID? = instance.isEmpty ? nil : try parseInstanceID(instance, field: "instance_id")
        let rows = try await store.query(
            """
            SELECT instance::text AS instance, node, port FROM host_ports
            WHERE ($1 = '' OR node = $1) AND ($2::uuid IS NULL OR instance = $2::uuid) ORDER BY node, instance, port
            """, node, instanceID)
        var response = Sigma_V1_ListHostPortsResponse()
        response.allocations = try Self.group(rows)
        response.ranges = try await store.query(
            "SELECT node, first_port, last_port, coalesce(array_to_string(reserved, ','), '') AS reserved FROM node_port_ranges WHERE $1 = '' OR node = $1 ORDER BY node",
            node
        ).map { row in
            var range = Sigma_V1_PortRange()
            range.node = try row.decode(String.self, "node")
            range.firstPort = UInt32(try row.decode(Int.self, "first_port"))
            range.lastPort = UInt32(try row.decode(Int.self, "last_port"))
            let reserved = try row.decode(String.self, "reserved")
            range.reserved = reserved.isEmpty ? [] : reserved.split(separator: ",").compactMap { UInt32($0) }
            return range
        }
        return response
    }

    /// Releases the ports of instances that no longer exist, logging each.
    func reclaim() async throws -> [Sigma_V1_HostPortAllocation] {
        let rows = try await store.query(
            """
            DELETE FROM host_ports h WHERE NOT EXISTS (SELECT 1 FROM instance_directory i WHERE i.id = h.instance)
            RETURNING instance::text AS instance, node, port
            """)
        let reclaimed = try Self.group(rows)
        for allocation in reclaimed {
            logger.notice("host ports reclaimed from a deleted instance", metadata: [
                "instance": "\(allocation.instanceID)", "node": "\(allocation.node)", "ports": "\(allocation.ports.map(String.init).joined(separator: ","))",
            ])
        }
        return reclaimed
    }

    /// Rows of (instance, node, port) as one allocation per instance and node.
    static func group(_ rows: [Row]) throws -> [Sigma_V1_HostPortAllocation] {
        var order: [String] = []
        var byKey: [String: Sigma_V1_HostPortAllocation] = [:]
        for row in rows {
            let instance = try row.decode(String.self, "instance")
            let node = try row.decode(String.self, "node")
            let key = instance + "@" + node
            if byKey[key] == nil {
                order.append(key)
                var allocation = Sigma_V1_HostPortAllocation()
                allocation.instanceID = instance
                allocation.node = node
                byKey[key] = allocation
            }
            byKey[key]!.ports.append(UInt32(try row.decode(Int.self, "port")))
        }
        return order.map { key in
            var allocation = byKey[key]!
            allocation.ports.sort()
            return allocation
        }
    }
}
