import Core
import Foundation
import Protocol
import Store

/// The `instances` table, the scheduler's: every statement that writes it is here, each a function whose
/// parameters name the columns it sets (TableOwnershipTests fails on a write anywhere else). The listing's
/// columns and their decoding are in InstancesListing.swift. Other services read the table through `instance_directory`.
enum InstancesTable {
    // MARK: - Creating and removing rows

    /// Rows for ordinals 0..<replicas that do not exist yet, at `revision` with its resources.
    static func create(_ tx: Transaction, app: String, replicas: Int, revision: Int64,
                       resources: ResourceRequirements) async throws -> [(id: String, ordinal: Int)] {
        let rows = try await tx.query(
            """
            INSERT INTO instances (app, ordinal, revision, request_cpu_millis, request_memory_bytes, limit_cpu_millis, limit_memory_bytes)
            SELECT $1, g, $3, $4, $5, $6, $7 FROM generate_series(0, $2::int - 1) AS g
            ON CONFLICT (app, ordinal) DO NOTHING
            RETURNING id::text AS id, ordinal
            """, app, replicas, revision, resources.request.cpuMillis, resources.request.memoryBytes,
            resources.limit.cpuMillis, resources.limit.memoryBytes)
        return try rows.map { (try $0.decode(String.self, "id"), try $0.decode(Int.self, "ordinal")) }
    }

    /// Rows again for the ordinals of live `apps` that have none (their instance was removed), at each app's
    /// current revision and the resources of its spec. Returns the new ids.
    static func recreateFreedOrdinals(_ tx: Transaction, apps: [String]) async throws -> [String] {
        let path = AppSpec.StoredPath.self
        let rows = try await tx.query(
            """
            INSERT INTO instances (app, ordinal, revision, request_cpu_millis, request_memory_bytes, limit_cpu_millis, limit_memory_bytes)
            SELECT a.name, g, a.revision, (a.spec #>> \(path.requestCPU))::bigint, (a.spec #>> \(path.requestMemory))::bigint,
                   (a.spec #>> \(path.limitCPU))::bigint, (a.spec #>> \(path.limitMemory))::bigint
            FROM apps a, generate_series(0, (a.spec #>> \(path.replicas))::int - 1) AS g
            WHERE NOT a.deleted AND a.name IN (SELECT DISTINCT app FROM unnest($1::text[]) AS t(app))
            ON CONFLICT (app, ordinal) DO NOTHING
            RETURNING id::text AS id
            """, apps)
        return try rows.map { try $0.decode(String.self, "id") }
    }

    /// Removes the rows of `ids` that are Terminated. Returns (id, app) of each removed.
    static func deleteTerminated(_ tx: Transaction, ids: [String]) async throws -> [(id: String, app: String)] {
        let rows = try await tx.query(
            "DELETE FROM instances WHERE id = ANY($1::uuid[]) AND state = 'Terminated' RETURNING id::text AS id, app", ids)
        return try rows.map { (try $0.decode(String.self, "id"), try $0.decode(String.self, "app")) }
    }

    // MARK: - The scheduler's moves

    /// Instances of `app` from `fromOrdinal` up: bound live ones turn Terminating, the others Terminated.
    /// Returns (id, node) of each changed ("" for no node).
    static func terminate(_ tx: Transaction, app: String, fromOrdinal: Int, reason: String) async throws -> [(id: String, node: String)] {
        let rows = try await tx.query(
            """
            UPDATE instances SET state = CASE WHEN node IS NULL OR NOT state = ANY($4::text[]) THEN 'Terminated' ELSE 'Terminating' END,
                reason = $3, ready = false, ready_since = NULL, next_retry_at = NULL, updated_at = now()
            WHERE app = $1 AND ordinal >= $2 AND state NOT IN ('Terminating', 'Terminated')
            RETURNING id::text AS id, coalesce(node, '') AS node
            """, app, fromOrdinal, reason, InstanceState.names(InstanceState.live))
        return try rows.map { (try $0.decode(String.self, "id"), try $0.decode(String.self, "node")) }
    }

    /// Instances in `states` on `node` turn NeedMigration with `reason`. Returns their ids.
    static func needMigration(_ tx: Transaction, node: String, states: [String], reason: String) async throws -> [String] {
        let rows = try await tx.query(
            """
            UPDATE instances SET state = 'NeedMigration', reason = $2, ready = false, ready_since = NULL, next_retry_at = NULL, updated_at = now()
            WHERE node = $1 AND state = ANY($3::text[]) RETURNING id::text AS id
            """, node, reason, states)
        return try rows.map { try $0.decode(String.self, "id") }
    }

    /// One instance moved by hand: NeedMigration, to `targetNode` ("" for anywhere).
    static func migrate(_ tx: Transaction, id: String, targetNode: String) async throws {
        try await tx.execute(
            """
            UPDATE instances SET state = 'NeedMigration', reason = 'migrated', target_node = $2, updated_at = now()
            WHERE id = $1::uuid
            """, id, targetNode)
    }

    /// `RestartInstance`: the instance is to be bound again (at once onto its node, or by placement after it ended).
    static func restarting(_ tx: Transaction, id: String, reason: String) async throws {
        try await tx.execute(
            "UPDATE instances SET state = 'NeedMigration', reason = $2, target_node = '', updated_at = now() WHERE id = $1::uuid",
            id, reason)
    }

    /// Instances of a broken node that were being stopped: nobody is left to report them, so they end.
    static func endTerminating(_ tx: Transaction, node: String) async throws {
        try await tx.execute(
            "UPDATE instances SET state = 'Terminated', updated_at = now() WHERE node = $1 AND state = 'Terminating'", node)
    }

    /// Rows that still name a removed node (none of them holds anything on it, and no safe-mode instance waits
    /// for a copy there: `Nodes.remove`) forget it; so does the volumes table.
    static func forgetNode(_ tx: Transaction, node: String) async throws {
        try await VolumesTable.forgetNode(tx, node: node)
        try await tx.execute("UPDATE instances SET node = NULL WHERE node = $1", node)
        try await tx.execute("UPDATE instances SET prior_node = NULL, prior_generation = 0 WHERE prior_node = $1", node)
    }

    // MARK: - Revisions and resources

    /// Every live instance of `app` at revision `from` moves to `revision` in place (the template did not
    /// change), with its resources. Instances a rollout has not replaced yet stay where they are.
    static func setRevision(_ tx: Transaction, app: String, from: Int64, revision: Int64, resources: ResourceRequirements) async throws {
        try await tx.execute(
            """
            UPDATE instances SET revision = $2, request_cpu_millis = $3, request_memory_bytes = $4,
                limit_cpu_millis = $5, limit_memory_bytes = $6, updated_at = now()
            WHERE app = $1 AND revision = $7 AND state <> 'Terminating' AND state <> 'Terminated'
            """, app, revision, resources.request.cpuMillis, resources.request.memoryBytes,
            resources.limit.cpuMillis, resources.limit.memoryBytes, from)
    }

    /// Instances whose revision has the same template as `revision` move to it in place, with its resources
    /// (a rollout adopts them: they are not replaced).
    static func adopt(_ tx: Transaction, ids: [String], revision: Int64, resources: ResourceRequirements) async throws {
        try await tx.execute(
            """
            UPDATE instances SET revision = $2, request_cpu_millis = $3, request_memory_bytes = $4,
                limit_cpu_millis = $5, limit_memory_bytes = $6, updated_at = now()
            WHERE id = ANY($1::uuid[]) AND state <> 'Terminating' AND state <> 'Terminated'
            """, ids, revision, resources.request.cpuMillis, resources.request.memoryBytes,
            resources.limit.cpuMillis, resources.limit.memoryBytes)
    }

    /// One instance rolls to `revision`; a bound one (`replace`) is re-placed with it.
    static func roll(_ tx: Transaction, id: String, revision: Int64, resources: ResourceRequirements, replace: Bool) async throws {
        try await tx.execute(
            """
            UPDATE instances SET revision = $2, request_cpu_millis = $3, request_memory_bytes = $4, limit_cpu_millis = $5,
                limit_memory_bytes = $6, state = CASE WHEN $7::boolean THEN 'NeedMigration' ELSE state END,
                reason = CASE WHEN $7::boolean THEN 'rolling update' ELSE reason END, updated_at = now()
            WHERE id = $1::uuid
            """, id, revision, resources.request.cpuMillis, resources.request.memoryBytes,
            resources.limit.cpuMillis, resources.limit.memoryBytes, replace)
    }

    /// One instance's requests and limits, applied live by its agent.
    static func setResources(_ tx: Transaction, id: String, _ resources: ResourceRequirements) async throws {
        try await tx.execute(
            """
            UPDATE instances SET request_cpu_millis = $2, request_memory_bytes = $3, limit_cpu_millis = $4,
                limit_memory_bytes = $5, updated_at = now() WHERE id = $1::uuid
            """, id, resources.request.cpuMillis, resources.request.memoryBytes,
            resources.limit.cpuMillis, resources.limit.memoryBytes)
    }

    // MARK: - Placement

    /// Why instances wait: set where it changed. Returns the ids whose reason changed.
    static func setPendingReason(_ tx: Transaction, ids: [String], reason: String) async throws -> [String] {
        let rows = try await tx.query(
            "UPDATE instances SET pending_reason = $2 WHERE id = ANY($1::uuid[]) AND pending_reason <> $2 RETURNING id::text AS id",
            ids, reason)
        return try rows.map { try $0.decode(String.self, "id") }
    }

    /// The IP of instances still waiting for a node (given ahead: see `Placement.addressAhead`). Only rows
    /// still Pending, unbound and without one are written. Returns how many were.
    static func address(_ tx: Transaction, ids: [String], ips: [String], prefixes: [Int], gateways: [String]) async throws -> Int {
        try await tx.execute(
            """
            UPDATE instances i SET ip = b.ip, prefix_length = b.prefix, gateway = b.gateway, updated_at = now()
            FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[]) AS b(id, ip, prefix, gateway)
            WHERE i.id = b.id AND i.node IS NULL AND i.state = 'Pending' AND i.ip = ''
            """, ids, ips, prefixes, gateways)
    }

    /// Binds a batch in one statement: node, a new generation, what the Allocator handed out; records a
    /// Scheduled event for each and notifies each node's feed on `channel` (at most 150 ids a notification).
    /// Only instances still unplaced or moving are bound. Returns how many were.
    static func bind(_ tx: Transaction, _ values: Placement.Allocated, channel: String) async throws -> Int {
        let rows = try await tx.query(
            """
            WITH bound AS (
                UPDATE instances i SET node = b.node, state = 'Scheduled', generation = i.generation + 1, ip = b.ip,
                    token_hash = NULL,
                    -- A copy may still run where a moving instance was: it is the prior copy, until its node says
                    -- it is gone (or its lease lapses). Back onto that node, the agent itself stops it first.
                    prior_node = CASE WHEN i.prior_node = b.node THEN NULL WHEN i.prior_node IS NOT NULL THEN i.prior_node
                                      WHEN i.state = 'NeedMigration' AND i.node IS NOT NULL AND i.node <> b.node THEN i.node END,
                    prior_generation = CASE WHEN i.prior_node = b.node THEN 0 WHEN i.prior_node IS NOT NULL THEN i.prior_generation
                                            WHEN i.state = 'NeedMigration' AND i.node IS NOT NULL AND i.node <> b.node THEN i.generation
                                            ELSE 0 END,
                    prefix_length = b.prefix, gateway = b.gateway, host_ports = b.ports::jsonb, ssds = b.ssds::jsonb,
                    pending_reason = '', target_node = '', ready = false, ready_since = NULL, exit_code = 0, restarts = 0, next_retry_at = NULL,
                    updated_at = now()
                FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[])
                     AS b(id, node, ip, prefix, gateway, ports, ssds)
                WHERE i.id = b.id AND ((i.node IS NULL AND i.state = 'Pending') OR i.state = 'NeedMigration')
                RETURNING i.id, i.node, i.generation, i.app, i.ordinal, i.revision
            ), homes AS (
                -- The ordinal's volumes are (or will be) on that node now.
                INSERT INTO volumes (team, app, ordinal, node)
                SELECT \(VolumesTable.team("r.spec")), b.app, b.ordinal, b.node FROM bound b
                JOIN app_revisions r ON r.app = b.app AND r.revision = b.revision WHERE \(VolumesTable.keepsData("r.spec"))
                ON CONFLICT (team, app, ordinal, node) DO UPDATE SET bound_at = now(), release_at = NULL
            ), recorded AS (
                INSERT INTO events (kind, name, reason, message)
                SELECT 'instance', id::text, 'Scheduled', 'on ' || node || ', generation ' || generation FROM bound
            ), chunks AS (
                SELECT node, id, (row_number() OVER (PARTITION BY node ORDER BY id) - 1) / 150 AS chunk FROM bound
            )
            SELECT (SELECT count(*) FROM (
                        SELECT pg_notify($8, node || ' ' || string_agg(id::text, ' ')) FROM chunks GROUP BY node, chunk) AS sent
                   )::bigint AS notifications,
                   (SELECT count(*) FROM bound)::bigint AS n
            """, values.ids, values.nodes, values.ips, values.prefixes, values.gateways, values.ports, values.ssds, channel)
        return try rows.first?.decode(Int.self, "n") ?? 0
    }

    // MARK: - Prior copies

    /// The copies `node` may still run of instances now placed elsewhere: (id, generation of that copy).
    static func priors(_ tx: Transaction, node: String) async throws -> [(id: String, generation: Int64)] {
        let rows = try await tx.query(
            "SELECT id::text AS id, prior_generation FROM instances WHERE prior_node = $1 FOR UPDATE", node)
        return try rows.map { (try $0.decode(String.self, "id"), try $0.decode(Int64.self, "prior_generation")) }
    }

    /// A prior copy that is gone, and where its instance is placed now (for the notification and the event).
    struct GoneCopy: Sendable {
        let id: String, node: String, priorNode: String, priorGeneration: Int64
    }

    /// `node`'s copies in `gone` (id, generation) are no longer prior copies.
    static func clearPriors(_ tx: Transaction, node: String, _ gone: [(id: String, generation: Int64)]) async throws -> [GoneCopy] {
        guard !gone.isEmpty else { return [] }
        let rows = try await tx.query(
            """
            UPDATE instances i SET prior_node = NULL, prior_generation = 0
            FROM unnest($2::uuid[], $3::bigint[]) AS g(id, generation)
            WHERE i.id = g.id AND i.prior_node = $1 AND i.prior_generation = g.generation
            RETURNING i.id::text AS id, coalesce(i.node, '') AS node, g.generation
            """, node, gone.map(\.id), gone.map(\.generation))
        return try rows.map {
            GoneCopy(id: try $0.decode(String.self, "id"), node: try $0.decode(String.self, "node"), priorNode: node,
                     priorGeneration: try $0.decode(Int64.self, "generation"))
        }
    }

    /// SQL: node row `n`'s lease has certainly lapsed (`NodeLease`: its TTL stretched by the drift `$1`, plus
    /// the margin `$2` milliseconds, after the last grant).
    static let leaseLapsed = """
        (n.lease_renewed_at IS NULL OR n.lease_renewed_at < now() - (ceil(n.lease_ttl_ms * (1 + $1::float8)) + $2) * interval '1 millisecond')
        """

    /// Prior copies on nodes that are Broken and whose lease has certainly lapsed: none of them runs any more.
    static func clearLapsedPriors(_ tx: Transaction, drift: Double, marginMillis: Int64) async throws -> [GoneCopy] {
        let rows = try await tx.query(
            """
            WITH lapsed AS (
                SELECT i.id, i.prior_node, i.prior_generation FROM instances i JOIN nodes n ON n.name = i.prior_node
                WHERE i.prior_node IS NOT NULL AND n.state = 'Broken' AND \(leaseLapsed)
                FOR UPDATE OF i
            )
            UPDATE instances i SET prior_node = NULL, prior_generation = 0 FROM lapsed l WHERE i.id = l.id
            RETURNING i.id::text AS id, coalesce(i.node, '') AS node, l.prior_node, l.prior_generation
            """, drift, marginMillis)
        return try rows.map {
            GoneCopy(id: try $0.decode(String.self, "id"), node: try $0.decode(String.self, "node"),
                     priorNode: try $0.decode(String.self, "prior_node"), priorGeneration: try $0.decode(Int64.self, "prior_generation"))
        }
    }

    // MARK: - The agents' reports

    /// What one heartbeat says of the instances its node owns at their generation, one column each.
    struct Reports: Sendable {
        var ids: [String] = [], states: [String] = [], cpu: [Int64] = [], memory: [Int64] = []
        var appliedCPU: [Int64?] = [], appliedMemory: [Int64?] = [], codes: [Int] = [], reasons: [String] = []
        var ready: [Bool] = [], restarts: [Int] = [], retries: [Int64] = []

        /// One row: what it becomes, the reason as the agent gave it (the write applies the keeping rule), its usage.
        mutating func add(id: String, _ row: Reported, reportedReason: String, usage: Sigma_V1_NodeUsage) {
            ids.append(id)
            states.append(row.state.rawValue)
            cpu.append(usage.cpuMillis)
            memory.append(usage.memoryBytes)
            appliedCPU.append(row.appliedCPU)
            appliedMemory.append(row.appliedMemory)
            codes.append(row.exitCode)
            reasons.append(reportedReason)
            ready.append(row.ready)
            restarts.append(row.restarts)
            retries.append(row.retryMs)
        }
    }

    /// An instance as a heartbeat compares it with its report: what the report may change.
    struct Reported: Sendable, Equatable {
        var generation: Int64, state: InstanceState, ready: Bool
        var appliedCPU: Int64?, appliedMemory: Int64?, exitCode: Int, reason: String, restarts: Int, retryMs: Int64
    }

    /// The instances among `ids` that `node` owns, as stored; `forUpdate` locks their rows.
    static func reported(_ tx: Transaction, ids: [String], node: String, forUpdate: Bool = false) async throws -> [String: Reported] {
        let rows = try await tx.query(
            """
            SELECT id::text AS id, generation, state, ready, applied_cpu_millis, applied_memory_bytes, exit_code, reason, restarts,
                   coalesce((extract(epoch FROM next_retry_at) * 1000)::bigint, 0) AS retry_ms
            FROM instances WHERE id = ANY($1::uuid[]) AND node = $2\(forUpdate ? " FOR UPDATE" : "")
            """, ids, node)
        var current: [String: Reported] = [:]
        for row in rows {
            current[try row.decode(String.self, "id")] = Reported(
                generation: try row.decode(Int64.self, "generation"),
                state: InstanceState(rawValue: try row.decode(String.self, "state")) ?? .pending, ready: try row.decode(Bool.self, "ready"),
                appliedCPU: try row.decode(Int64?.self, "applied_cpu_millis"), appliedMemory: try row.decode(Int64?.self, "applied_memory_bytes"),
                exitCode: try row.decode(Int.self, "exit_code"), reason: try row.decode(String.self, "reason"),
                restarts: try row.decode(Int.self, "restarts"), retryMs: try row.decode(Int64.self, "retry_ms"))
        }
        return current
    }

    /// Usage samples of instances whose rows heartbeats left alone, in one statement (a replica's buffer).
    static func writeUsage(_ store: Store, ids: [String], cpu: [Int64], memory: [Int64]) async throws {
        try await store.execute(
            """
            UPDATE instances i SET usage_cpu_millis = u.cpu, usage_memory_bytes = u.memory
            FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS u(id, cpu, memory)
            WHERE i.id = u.id AND (i.usage_cpu_millis, i.usage_memory_bytes) IS DISTINCT FROM (u.cpu, u.memory)
            """, ids, cpu, memory)
    }

    /// One statement for the whole report, however many instances the node runs.
    static func apply(_ tx: Transaction, _ reports: Reports) async throws {
        guard !reports.ids.isEmpty else { return }
        try await tx.execute(
            """
            UPDATE instances i SET state = u.state, usage_cpu_millis = u.cpu, usage_memory_bytes = u.memory,
                applied_cpu_millis = u.applied_cpu, applied_memory_bytes = u.applied_memory, exit_code = u.code,
                -- An agent's reason replaces the last one; an empty one keeps the scheduler's (e.g. "migrated"),
                -- but not a readiness complaint once the instance is ready.
                reason = CASE WHEN u.reason <> '' THEN u.reason WHEN u.ready AND i.reason LIKE 'not ready: %' THEN ''
                              ELSE i.reason END,
                ready = u.ready, ready_since = CASE WHEN NOT u.ready THEN NULL ELSE coalesce(i.ready_since, now()) END,
                restarts = u.restarts,
                next_retry_at = CASE WHEN u.retry > 0 THEN to_timestamp(u.retry / 1000.0) END, updated_at = now()
            FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::int[], $8::text[],
                        $9::boolean[], $10::int[], $11::bigint[])
                 AS u(id, state, cpu, memory, applied_cpu, applied_memory, code, reason, ready, restarts, retry)
            WHERE i.id = u.id
            """, reports.ids, reports.states, reports.cpu, reports.memory, reports.appliedCPU, reports.appliedMemory,
            reports.codes, reports.reasons, reports.ready, reports.restarts, reports.retries)
    }

    /// A fresh token for an instance bound on `node` at `generation` in a state that may hold one: only its
    /// SHA-256 is kept, and it replaces the one before. False when the instance is not so.
    static func setToken(_ store: Store, _ token: String, id: String, node: String, generation: Int64) async throws -> Bool {
        let rows = try await store.query(
            """
            UPDATE instances SET token_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')
            WHERE id = $2::uuid AND node = $3 AND generation = $4 AND state = ANY($5::text[])
            RETURNING id
            """, token, id, node, generation, InstanceState.names(InstanceState.tokenValid))
        return !rows.isEmpty
    }
}
