import Foundation
import Logging
import Protocol
import Store

/// SSDs: each node's inventory as reported, handed out whole, the smallest free healthy one that fits first.
/// Exclusivity lives in the schema (one row per SSD, one owner column) and in row locks taken with SKIP
/// LOCKED, so replicas never hand out one SSD twice.
struct SSDs: Sendable {
    let store: Store
    let logger: Logger

    static let maxPerInstance = 16

    func report(node: String, _ ssds: [Sigma_V1_SSD]) async throws -> [Sigma_V1_SSD] {
        guard !node.isEmpty else { throw RPCError.invalidArgument("node: required") }
        var paths = Set<String>()
        for ssd in ssds {
            guard !ssd.path.isEmpty, ssd.path.utf8.count <= 4096 else { throw RPCError.invalidArgument("ssds.path: 1 to 4096 bytes") }
            guard ssd.sizeBytes > 0, ssd.sizeBytes <= UInt64(Int64.max) else { throw RPCError.invalidArgument("ssds.size_bytes: must be positive") }
            guard paths.insert(ssd.path).inserted else { throw RPCError.invalidArgument("ssds: \(ssd.path) twice") }
        }
        let reported = Array(paths)
        try await store.transaction(isolation: .readCommitted) { tx in
            guard !(try await tx.query("SELECT 1 FROM node_directory WHERE name = $1", node)).isEmpty else {
                throw RPCError.notFound("no node \(node)")
            }
            for ssd in ssds {
                try await tx.execute(
                    """
                    INSERT INTO ssds (node, path, size_bytes, model, healthy) VALUES ($1, $2, $3, $4, $5)
                    ON CONFLICT (node, path) DO UPDATE SET size_bytes = $3, model = $4, healthy = $5
                    """, node, ssd.path, Int64(ssd.sizeBytes), ssd.model, ssd.healthy)
            }
            try await tx.execute("DELETE FROM ssds WHERE node = $1 AND instance IS NULL AND NOT (path = ANY($2::text[]))", node, reported)
            for row in try await tx.query(
                "UPDATE ssds SET healthy = false WHERE node = $1 AND instance IS NOT NULL AND NOT (path = ANY($2::text[])) RETURNING path, instance::text AS instance",
                node, reported)
            {
                let path = try row.decode(String.self, "path")
                let owner = try row.decode(String.self, "instance")
                logger.warning("an SSD in use is gone from its node's report; marked unhealthy", metadata: [
                    "node": "\(node)", "path": "\(path)", "instance": "\(owner)",
                ])
            }
        }
        return try await list(node: node, instance: "")
    }

    func allocate(_ items: [Sigma_V1_SSDRequest]) async throws -> [Sigma_V1_SSD] {
        guard !items.isEmpty else { throw RPCError.invalidArgument("items: at least one") }
        var seen = Set<UUID>()
        let parsed: [(node: String, instance: UUID, count: Int, minBytes: Int64)] = try items.map { item in
            guard !item.node.isEmpty else { throw RPCError.invalidArgument("items.node: required") }
            let instance = try parseInstanceID(item.instanceID, field: "items.instance_id")
            guard (1...UInt32(Self.maxPerInstance)).contains(item.count) else {
                throw RPCError.invalidArgument("items.count: 1 to \(Self.maxPerInstance) SSDs per instance")
            }
            guard seen.insert(instance).inserted else { throw RPCError.invalidArgument("items: instance \(instance) twice") }
            return (item.node, instance, Int(item.count), Int64(clamping: item.minBytes))
        }
        return try await store.transaction(isolation: .readCommitted) { tx in
            var result: [Sigma_V1_SSD] = []
            for item in parsed {
                result += try await allocate(item.node, item.instance, item.count, item.minBytes, tx)
            }
            return result
        }
    }

    private func allocate(_ node: String, _ instance: UUID, _ count: Int, _ minBytes: Int64, _ tx: Transaction) async throws
        -> [Sigma_V1_SSD]
    {
        guard !(try await tx.query("SELECT 1 FROM node_directory WHERE name = $1", node)).isEmpty else { throw RPCError.notFound("no node \(node)") }
        guard !(try await tx.query("SELECT 1 FROM instance_directory WHERE id = $1", instance)).isEmpty else {
            throw RPCError.notFound("no instance \(instance.lowercasedText)")
        }
        // What it holds on the nodes it moved away from stays its own, with its data: it finds it again when it
        // comes back there (placement prefers those nodes). It goes when the instance does (ReleaseSSDs).
        let held = try await tx.query("SELECT count(*) AS n FROM ssds WHERE instance = $1 AND node = $2", instance, node)[0].decode(Int.self, "n")
        let need = count - held
        if need > 0 {
            let taken = try await tx.execute(
                """
                UPDATE ssds SET instance = $2, allocated_at = now()
                WHERE (node, path) IN (
                    SELECT node, path FROM ssds
                    WHERE node = $1 AND instance IS NULL AND healthy AND size_bytes >= $3
                    ORDER BY size_bytes, path LIMIT $4 FOR UPDATE SKIP LOCKED)
                """, node, instance, minBytes, need)
            guard taken == need else {
                throw RPCError.resourceExhausted(
                    "node \(node) has \(taken) free healthy SSDs of at least \(minBytes) bytes; instance \(instance.lowercasedText) needs \(need)")
            }
        }
        return try await tx.query(Self.select + " WHERE instance = $1 AND node = $2 ORDER BY size_bytes, path", instance, node).map(Self.ssd)
    }

    func release(_ texts: [String]) async throws -> Sigma_V1_ReleaseSSDsResponse {
        let ids = try parseInstanceIDs(texts, field: "instance_ids")
        let rows = try await store.query(
            """
            WITH old AS (SELECT node, path, instance FROM ssds WHERE instance = ANY($1::uuid[]) FOR UPDATE)
            UPDATE ssds AS s SET instance = NULL, allocated_at = NULL FROM old
            WHERE s.node = old.node AND s.path = old.path
            RETURNING s.node, s.path, s.size_bytes, s.model, s.healthy, old.instance::text AS instance
            """, ids)
        var response = Sigma_V1_ReleaseSSDsResponse()
        response.released = try rows.map(Self.ssd)
        let released = Set(response.released.map(\.instanceID))
        response.notAllocated = ids.map { $0.lowercasedText }.filter { !released.contains($0) }
        return response
    }

    func list(node: String, instance: String) async throws -> [Sigma_V1_SSD] {
        let instanceID: UUID? = instance.isEmpty ? nil : try parseInstanceID(instance, field: "instance_id")
        return try await store.query(
            Self.select + " WHERE ($1 = '' OR node = $1) AND ($2::uuid IS NULL OR instance = $2::uuid) ORDER BY node, size_bytes, path",
            node, instanceID
        ).map(Self.ssd)
    }

    /// Frees the SSDs of instances that no longer exist, logging each.
    func reclaim() async throws -> [Sigma_V1_SSD] {
        let rows = try await store.query(
            """
            WITH orphans AS (
                SELECT node, path, instance FROM ssds s
                WHERE instance IS NOT NULL AND NOT EXISTS (SELECT 1 FROM instance_directory i WHERE i.id = s.instance)
                FOR UPDATE SKIP LOCKED
            )
            UPDATE ssds AS s SET instance = NULL, allocated_at = NULL FROM orphans
            WHERE s.node = orphans.node AND s.path = orphans.path
            RETURNING s.node, s.path, s.size_bytes, s.model, s.healthy, orphans.instance::text AS instance
            """)
        return try rows.map { row in
            let ssd = try Self.ssd(row)
            logger.notice("SSD reclaimed from a deleted instance", metadata: ["instance": "\(ssd.instanceID)", "node": "\(ssd.node)", "path": "\(ssd.path)"])
            return ssd
        }
    }

    static let select = "SELECT node, path, size_bytes, model, healthy, coalesce(instance::text, '') AS instance FROM ssds"

    static func ssd(_ row: Row) throws -> Sigma_V1_SSD {
        var ssd = Sigma_V1_SSD()
        ssd.node = try row.decode(String.self, "node")
        ssd.path = try row.decode(String.self, "path")
        ssd.sizeBytes = UInt64(try row.decode(Int64.self, "size_bytes"))
        ssd.model = try row.decode(String.self, "model")
        ssd.healthy = try row.decode(Bool.self, "healthy")
        ssd.instanceID = try row.decode(String.self, "instance")
        return ssd
    }
}
