import Core
import Foundation
import Logging
import Protocol
import Store

/// Instance IPs: pools, allocation and release, all in PostgreSQL. Uniqueness lives in the schema (one row
/// per address, `instance` UNIQUE, pools that cannot overlap); this code picks rows and maps errors.
struct IPPools: Sendable {
    let store: Store
    let logger: Logger
    private let coalescer: AllocationCoalescer

    init(store: Store, logger: Logger) {
        self.store = store
        self.logger = logger
        coalescer = AllocationCoalescer { ids, pool in try await IPPools.allocate(ids, pool: pool, store: store, logger: logger) }
    }

    /// Pools are materialized one row per address; larger ranges are several pools.
    static let smallestPrefix = 16
    /// Instances in one AllocateIPs or ReleaseIPs call.
    static let maxBatch = 10_000

    // MARK: Pools

    func create(_ pool: Sigma_V1_IPPool) async throws -> Sigma_V1_CreateIPPoolResponse {
        guard !pool.name.isEmpty, pool.name.count <= 63 else { throw RPCError.invalidArgument("pool.name: 1 to 63 characters") }
        let cidr: IPv4CIDR
        do { cidr = try IPv4CIDR(parsing: pool.cidr) } catch { throw RPCError.invalidArgument("pool.cidr: \(error)") }
        guard cidr.prefixLength >= Self.smallestPrefix else {
            throw RPCError.invalidArgument("pool.cidr: /\(cidr.prefixLength) is larger than a /\(Self.smallestPrefix); create several pools")
        }
        var reserved = Set(cidr.structurallyReserved)
        if !pool.gateway.isEmpty {
            guard let gateway = IPv4Address(pool.gateway), cidr.contains(gateway) else {
                throw RPCError.invalidArgument("pool.gateway: '\(pool.gateway)' is not an address inside \(cidr)")
            }
            reserved.insert(gateway)
        }
        for text in pool.reserved {
            guard let address = IPv4Address(text), cidr.contains(address) else {
                throw RPCError.invalidArgument("pool.reserved: '\(text)' is not an address inside \(cidr)")
            }
            reserved.insert(address)
        }
        let overlapping = try await store.query("SELECT name, cidr::text AS cidr FROM ip_pools WHERE cidr && $1::cidr", cidr.description)
        if let other = overlapping.first {
            throw RPCError.invalidArgument(
                "pool.cidr: \(cidr) overlaps pool \(try other.decode(String.self, "name")) (\(try other.decode(String.self, "cidr")))")
        }
        let reservedTexts = reserved.map(\.description)
        do {
            try await store.transaction(isolation: .readCommitted) { tx in
                try await tx.execute("INSERT INTO ip_pools (name, cidr, gateway) VALUES ($1, $2::cidr, $3::inet)",
                                     pool.name, cidr.description, pool.gateway.isEmpty ? nil : pool.gateway)
                try await tx.execute(
                    """
                    INSERT INTO ip_addresses (address, pool, reserved)
                    SELECT $1::inet + i, $2, ($1::inet + i) = ANY($3::inet[])
                    FROM generate_series(0::bigint, $4::bigint - 1) AS i
                    """, cidr.network.description, pool.name, reservedTexts, Int64(cidr.size))
            }
        } catch let error as StoreError where error.code == .uniqueViolation {
            throw RPCError.alreadyExists("pool \(pool.name) exists")
        } catch let error as StoreError where error.sqlState == "23P01" {
            throw RPCError.invalidArgument("pool.cidr: \(cidr) overlaps an existing pool")
        }
        // A pool adds up to 65,536 rows at once: statistics that know them now, not at autovacuum's next pass,
        // keep the plans of sigma_allocate_ips (cached per connection) on the indexes.
        try await store.execute("ANALYZE ip_addresses")
        logger.info("IP pool created", metadata: ["pool": "\(pool.name)", "cidr": "\(cidr)", "reserved": "\(reserved.count)"])
        var response = Sigma_V1_CreateIPPoolResponse()
        response.pool = try await pools(named: pool.name).first ?? pool
        response.usage = try await usage(pool: pool.name).first ?? .init()
        return response
    }

    func list() async throws -> Sigma_V1_ListIPPoolsResponse {
        var response = Sigma_V1_ListIPPoolsResponse()
        response.pools = try await pools(named: "")
        response.usage = try await usage(pool: "")
        return response
    }

    /// One pool, or all when `name` is empty, with the operator's reserved addresses.
    private func pools(named name: String) async throws -> [Sigma_V1_IPPool] {
        let rows = try await store.query(
            """
            SELECT p.name, p.cidr::text AS cidr, coalesce(host(p.gateway), '') AS gateway,
                   coalesce(array_to_string(array_agg(host(a.address) ORDER BY a.address)
                       FILTER (WHERE host(a.address) NOT IN (host(network(p.cidr)), host(broadcast(p.cidr)),
                                                             coalesce(host(p.gateway), ''))), ','), '') AS reserved
            FROM ip_pools p LEFT JOIN ip_addresses a ON a.pool = p.name AND a.reserved
            WHERE $1 = '' OR p.name = $1
            GROUP BY p.name ORDER BY p.name
            """, name)
        return try rows.map { row in
            var pool = Sigma_V1_IPPool()
            pool.name = try row.decode(String.self, "name")
            pool.cidr = try row.decode(String.self, "cidr")
            pool.gateway = try row.decode(String.self, "gateway")
            let reserved = try row.decode(String.self, "reserved")
            pool.reserved = reserved.isEmpty ? [] : reserved.split(separator: ",").map(String.init)
            return pool
        }
    }

    /// Usage of one pool, or of all when `pool` is empty.
    func usage(pool: String) async throws -> [Sigma_V1_PoolUsage] {
        let rows = try await store.query(
            """
            SELECT p.name, p.cidr::text AS cidr, count(a.address) AS total,
                   count(a.instance) AS used, count(*) FILTER (WHERE a.reserved) AS reserved
            FROM ip_pools p JOIN ip_addresses a ON a.pool = p.name
            WHERE $1 = '' OR p.name = $1
            GROUP BY p.name ORDER BY p.name
            """, pool)
        return try rows.map { row in
            var usage = Sigma_V1_PoolUsage()
            usage.pool = try row.decode(String.self, "name")
            usage.cidr = try row.decode(String.self, "cidr")
            usage.total = try row.decode(UInt64.self, "total")
            usage.used = try row.decode(UInt64.self, "used")
            usage.reserved = try row.decode(UInt64.self, "reserved")
            usage.free = usage.total - usage.used - usage.reserved
            return usage
        }
    }

    // MARK: Allocation

    /// The address of every instance, allocating for those without one: all or nothing, in one statement.
    /// Calls that arrive together are merged into one database call (see ``AllocationCoalescer``).
    func allocate(_ request: Sigma_V1_AllocateIPsRequest) async throws -> [Sigma_V1_IPAllocation] {
        let ids = try parseInstanceIDs(request.instanceIds, field: "instance_ids", limit: Self.maxBatch)
        return try await coalescer.allocate(ids, pool: request.pool)
    }

    static func allocate(_ ids: [UUID], pool: String, store: Store, logger: Logger) async throws -> [Sigma_V1_IPAllocation] {
        var attempt = 0
        while true {
            attempt += 1
            do {
                // `sigma_allocate_ips` (migration 3) does it all inside PostgreSQL, atomically.
                let rows = try await store.query(
                    """
                    SELECT instance::text AS instance, address, pool, prefix_length AS prefix, gateway, newly_allocated
                    FROM sigma_allocate_ips($1::uuid[], $2)
                    """, ids, pool)
                return try rows.map { row in
                    var allocation = try allocation(row)
                    allocation.newlyAllocated = try row.decode(Bool.self, "newly_allocated")
                    return allocation
                }
            } catch let error as StoreError where error.code == .uniqueViolation && attempt < 5 {
                // Another allocator gave one of these instances an address at the same moment: read it.
                logger.debug("concurrent allocation for the same instance; reading it", metadata: ["attempt": "\(attempt)"])
            }
        }
    }

    /// Frees the addresses of these instances; those without one are reported, not an error.
    func release(_ request: Sigma_V1_ReleaseIPsRequest) async throws -> Sigma_V1_ReleaseIPsResponse {
        let ids = try parseInstanceIDs(request.instanceIds, field: "instance_ids", limit: Self.maxBatch)
        let rows = try await store.query(
            """
            WITH old AS (
                SELECT address, instance FROM ip_addresses WHERE instance = ANY($1::uuid[]) FOR UPDATE
            )
            UPDATE ip_addresses AS a SET instance = NULL, allocated_at = NULL, released_at = clock_timestamp()
            FROM old WHERE a.address = old.address
            RETURNING old.instance::text AS instance, host(a.address) AS address, a.pool
            """, ids)
        var response = Sigma_V1_ReleaseIPsResponse()
        response.released = try rows.map { row in
            var allocation = Sigma_V1_IPAllocation()
            allocation.instanceID = try row.decode(String.self, "instance")
            allocation.address = try row.decode(String.self, "address")
            allocation.pool = try row.decode(String.self, "pool")
            logger.info("IP released", metadata: ["instance": "\(allocation.instanceID)", "address": "\(allocation.address)"])
            return allocation
        }
        let released = Set(response.released.map(\.instanceID))
        response.notAllocated = ids.map { $0.lowercasedText }.filter { !released.contains($0) }
        return response
    }

    /// Releases the addresses of instances that no longer exist (deleted without a ReleaseIPs), logging each.
    func reclaim() async throws -> [Sigma_V1_IPAllocation] {
        let rows = try await store.query(
            """
            WITH orphans AS (
                SELECT a.address, a.instance FROM ip_addresses a
                WHERE a.instance IS NOT NULL AND NOT EXISTS (SELECT 1 FROM instance_directory i WHERE i.id = a.instance)
                FOR UPDATE SKIP LOCKED
            )
            UPDATE ip_addresses AS a SET instance = NULL, allocated_at = NULL, released_at = clock_timestamp()
            FROM orphans WHERE a.address = orphans.address
            RETURNING orphans.instance::text AS instance, host(a.address) AS address, a.pool
            """)
        return try rows.map { row in
            var allocation = Sigma_V1_IPAllocation()
            allocation.instanceID = try row.decode(String.self, "instance")
            allocation.address = try row.decode(String.self, "address")
            allocation.pool = try row.decode(String.self, "pool")
            logger.notice("IP reclaimed from a deleted instance",
                          metadata: ["instance": "\(allocation.instanceID)", "address": "\(allocation.address)", "pool": "\(allocation.pool)"])
            return allocation
        }
    }

    func allocations(pool: String, instance: String) async throws -> [Sigma_V1_IPAllocation] {
        let instanceID: UUID? = instance.isEmpty ? nil : try parseInstanceID(instance, field: "instance_id")
        let rows = try await store.query(
            Self.selectAllocations + " WHERE a.instance IS NOT NULL AND ($1 = '' OR a.pool = $1) AND ($2::uuid IS NULL OR a.instance = $2::uuid) ORDER BY a.address",
            pool, instanceID)
        return try rows.map(Self.allocation)
    }

    // MARK: Helpers

    static let selectAllocations = """
        SELECT a.instance::text AS instance, host(a.address) AS address, a.pool, masklen(p.cidr) AS prefix,
               coalesce(host(p.gateway), '') AS gateway
        FROM ip_addresses a JOIN ip_pools p ON p.name = a.pool
        """

    static func allocation(_ row: Row) throws -> Sigma_V1_IPAllocation {
        var allocation = Sigma_V1_IPAllocation()
        allocation.instanceID = try row.decode(String.self, "instance")
        allocation.address = try row.decode(String.self, "address")
        allocation.pool = try row.decode(String.self, "pool")
        allocation.prefixLength = UInt32(try row.decode(Int.self, "prefix"))
        allocation.gateway = try row.decode(String.self, "gateway")
        return allocation
    }
}
