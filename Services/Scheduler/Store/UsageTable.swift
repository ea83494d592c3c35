import Core
import Store

/// The usage history's statements (table `usage_history`, migration 28): a sample of every Running instance
/// and every pool group in one statement each, the fold of finished hours, the prune, and the readings of an
/// app that `RecommendResources` sizes from.
enum UsageTable {
    /// One sample row per Running instance (APP-ORDINAL) and per IDC: use, requests, limits, capacity.
    static func record(_ tx: Transaction) async throws {
        try await tx.execute(
            """
            INSERT INTO usage_history (scope, name, app, resolution, at, cpu_millis, cpu_peak_millis, memory_bytes,
                                       memory_peak_bytes, request_cpu_millis, request_memory_bytes, limit_cpu_millis,
                                       limit_memory_bytes)
            SELECT 'instance', app || '-' || ordinal, app, 'sample', date_trunc('milliseconds', now()), usage_cpu_millis,
                   usage_cpu_millis, usage_memory_bytes, usage_memory_bytes, request_cpu_millis, request_memory_bytes,
                   limit_cpu_millis, limit_memory_bytes
            FROM instances WHERE state = 'Running'
            ON CONFLICT DO NOTHING
            """)
        try await tx.execute(
            """
            WITH held AS (
                SELECT node, sum(request_cpu_millis) AS rc, sum(request_memory_bytes) AS rm, sum(limit_cpu_millis) AS lc,
                       sum(limit_memory_bytes) AS lm
                FROM instances WHERE node IS NOT NULL AND state = ANY($1::text[]) GROUP BY node
            )
            INSERT INTO usage_history (scope, name, resolution, at, cpu_millis, cpu_peak_millis, memory_bytes, memory_peak_bytes,
                                       request_cpu_millis, request_memory_bytes, limit_cpu_millis, limit_memory_bytes,
                                       capacity_cpu_millis, capacity_memory_bytes)
            SELECT 'group', n.idc, 'sample', date_trunc('milliseconds', now()), sum(n.usage_cpu_millis), sum(n.usage_cpu_millis),
                   sum(n.usage_memory_bytes), sum(n.usage_memory_bytes), coalesce(sum(h.rc), 0), coalesce(sum(h.rm), 0),
                   coalesce(sum(h.lc), 0), coalesce(sum(h.lm), 0), sum(n.cpu_millis), sum(n.memory_bytes)
            FROM nodes n LEFT JOIN held h ON h.node = n.name GROUP BY n.idc
            ON CONFLICT DO NOTHING
            """, Nodes.holdingStates)
    }

    /// The samples of every hour that is over become one `hour` row each (merged into one there already):
    /// the average, the highest reading, requests and limits as last seen, and how many samples it holds.
    static func fold(_ tx: Transaction) async throws -> Int {
        let rows = try await tx.query(
            """
            WITH gone AS (
                DELETE FROM usage_history WHERE resolution = 'sample' AND at < date_trunc('hour', now()) RETURNING *
            ), hours AS (
                SELECT scope, name, max(app) AS app, date_trunc('hour', at) AS hour, count(*)::int AS samples,
                       avg(cpu_millis) AS cpu, max(cpu_peak_millis) AS cpu_peak, avg(memory_bytes) AS memory,
                       max(memory_peak_bytes) AS memory_peak,
                       (array_agg(request_cpu_millis ORDER BY at DESC))[1] AS rc, (array_agg(request_memory_bytes ORDER BY at DESC))[1] AS rm,
                       (array_agg(limit_cpu_millis ORDER BY at DESC))[1] AS lc, (array_agg(limit_memory_bytes ORDER BY at DESC))[1] AS lm,
                       max(capacity_cpu_millis) AS cc, max(capacity_memory_bytes) AS cm
                FROM gone GROUP BY scope, name, date_trunc('hour', at)
            ), written AS (
                INSERT INTO usage_history AS u (scope, name, app, resolution, at, samples, cpu_millis, cpu_peak_millis, memory_bytes,
                                                memory_peak_bytes, request_cpu_millis, request_memory_bytes, limit_cpu_millis,
                                                limit_memory_bytes, capacity_cpu_millis, capacity_memory_bytes)
                SELECT scope, name, app, 'hour', hour, samples, round(cpu)::bigint, cpu_peak, round(memory)::bigint, memory_peak,
                       rc, rm, lc, lm, cc, cm FROM hours
                ON CONFLICT (scope, name, resolution, at) DO UPDATE SET
                    cpu_millis = (u.cpu_millis * u.samples + excluded.cpu_millis * excluded.samples) / (u.samples + excluded.samples),
                    memory_bytes = (u.memory_bytes * u.samples + excluded.memory_bytes * excluded.samples) / (u.samples + excluded.samples),
                    samples = u.samples + excluded.samples,
                    cpu_peak_millis = greatest(u.cpu_peak_millis, excluded.cpu_peak_millis),
                    memory_peak_bytes = greatest(u.memory_peak_bytes, excluded.memory_peak_bytes),
                    request_cpu_millis = excluded.request_cpu_millis, request_memory_bytes = excluded.request_memory_bytes,
                    limit_cpu_millis = excluded.limit_cpu_millis, limit_memory_bytes = excluded.limit_memory_bytes,
                    capacity_cpu_millis = excluded.capacity_cpu_millis, capacity_memory_bytes = excluded.capacity_memory_bytes
                RETURNING 1
            ) SELECT count(*)::bigint AS n FROM written
            """)
        return try rows.first?.decode(Int.self, "n") ?? 0
    }

    /// Hour rows older than `retention` seconds go, at most 10,000 a pass.
    static func prune(_ tx: Transaction, retention: Double) async throws {
        try await tx.execute(
            """
            DELETE FROM usage_history WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM usage_history WHERE resolution = 'hour' AND at < now() - make_interval(secs => $1) LIMIT 10000))
            """, retention)
    }

    struct Readings: Sendable {
        var readings: Int64 = 0, instances: Int64 = 0, fromMillis: Int64 = 0, toMillis: Int64 = 0
        var observed = Recommendation.Observed(cpuP95Millis: 0, cpuPeakMillis: 0, memoryP95Bytes: 0, memoryPeakBytes: 0)
    }

    /// An app's instance readings of the last `hours`: each row one reading (a sample, or an hour's average),
    /// the 95th percentile of those and the highest reading of all.
    static func readings(_ store: Store, app: String, hours: Int) async throws -> Readings {
        let rows = try await store.query(
            """
            SELECT count(*)::bigint AS readings, count(DISTINCT name)::bigint AS instances,
                   coalesce((extract(epoch FROM min(at)) * 1000)::bigint, 0) AS from_ms,
                   coalesce((extract(epoch FROM max(at)) * 1000)::bigint, 0) AS to_ms,
                   coalesce(percentile_disc(0.95) WITHIN GROUP (ORDER BY cpu_millis), 0)::bigint AS cpu_p95,
                   coalesce(max(cpu_peak_millis), 0)::bigint AS cpu_peak,
                   coalesce(percentile_disc(0.95) WITHIN GROUP (ORDER BY memory_bytes), 0)::bigint AS memory_p95,
                   coalesce(max(memory_peak_bytes), 0)::bigint AS memory_peak
            FROM usage_history WHERE scope = 'instance' AND app = $1 AND at >= now() - make_interval(hours => $2)
            """, app, hours)
        guard let row = rows.first else { return Readings() }
        var found = Readings()
        found.readings = try row.decode(Int64.self, "readings")
        found.instances = try row.decode(Int64.self, "instances")
        found.fromMillis = try row.decode(Int64.self, "from_ms")
        found.toMillis = try row.decode(Int64.self, "to_ms")
        found.observed = .init(cpuP95Millis: try row.decode(Int64.self, "cpu_p95"), cpuPeakMillis: try row.decode(Int64.self, "cpu_peak"),
                               memoryP95Bytes: try row.decode(Int64.self, "memory_p95"), memoryPeakBytes: try row.decode(Int64.self, "memory_peak"))
        return found
    }
}
