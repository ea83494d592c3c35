import ClientKit
import Core
import Foundation
import Protocol
import Store

/// The `rollouts` table, the scheduler's: every statement that writes it is here. One record per changed
/// template of an app (migration 23); at most one active (Progressing or Paused) per app.
enum RolloutsTable {
    struct Record: Sendable {
        let id: Int64
        let app: String
        let from: Int64
        let to: Int64
        let cause: String
        let strategy: UpdateStrategy
        /// New instances that were available when it last made progress.
        let available: Int
        let paused: Bool
        let promoted: Bool
        /// Instances it replaced so far (not those it adopted).
        let replaced: Int
        /// A restart: it replaces every instance, adopting none.
        let restart: Bool
        let secondsSinceProgress: Double
        let secondsSinceStart: Double
    }

    /// SQL: the instance (columns of `instances`, prefixed by `prefix`) is available: Running, and ready for
    /// at least `minReadySeconds` (an SQL expression). The rollouts' one definition of it.
    static func available(_ prefix: String = "", minReadySeconds: String) -> String {
        "(\(prefix)state = 'Running' AND \(prefix)ready AND \(prefix)ready_since <= now() - \(minReadySeconds) * interval '1 second')"
    }

    /// The `strategy` column: an UpdateStrategy as JSON.
    static func json(_ strategy: UpdateStrategy) throws -> String { String(decoding: try JSONEncoder().encode(strategy), as: UTF8.self) }
    static func strategy(_ row: Row) throws -> UpdateStrategy {
        try JSONDecoder().decode(UpdateStrategy.self, from: Data(try row.decode(String.self, "strategy").utf8))
    }

    /// Starts a rollout of `app` from `from` to `to` for `requester` (a `restart` replaces every instance); one
    /// still Progressing is Superseded by it.
    static func start(_ tx: Transaction, app: String, from: Int64, to: Int64, cause: String, by requester: String,
                      strategy: UpdateStrategy, restart: Bool = false) async throws {
        try await supersede(tx, app: app, by: to)
        try await tx.execute(
            """
            INSERT INTO rollouts (app, from_revision, to_revision, cause, started_by, strategy, restart)
            VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
            """, app, from, to, cause, requester, try json(strategy), restart)
    }

    /// The states of a rollout that has not ended.
    static let active = ["Progressing", "Paused"]

    /// A rollout of `app` not ended yet ends Superseded (a later apply, or the app's delete).
    static func supersede(_ tx: Transaction, app: String, by revision: Int64?) async throws {
        try await tx.execute(
            """
            UPDATE rollouts SET state = 'Superseded', reason = $2, ended_at = now() WHERE app = $1 AND state = ANY($3::text[])
            """, app, revision.map { "superseded by revision \($0)" } ?? "the app was deleted", active)
    }

    /// `app`'s rollout under way, if any, now rolls to `revision` (the same template: only replicas,
    /// resources or the strategy changed), with `strategy`; what it did so far stands.
    static func retarget(_ tx: Transaction, app: String, to revision: Int64, strategy: UpdateStrategy) async throws {
        try await tx.execute(
            "UPDATE rollouts SET to_revision = $2, strategy = $3::jsonb WHERE app = $1 AND state = ANY($4::text[])",
            app, revision, try json(strategy), active)
    }

    static let recordColumns = """
        id, app, from_revision, to_revision, cause, strategy::text AS strategy, available, state = 'Paused' AS paused, promoted, replaced, restart,
        extract(epoch FROM now() - progressed_at)::float8 AS since_progress, extract(epoch FROM now() - started_at)::float8 AS since_start
        """

    /// The ids of every rollout not ended.
    static func activeIDs(_ store: Store) async throws -> [Int64] {
        try await store.query("SELECT id FROM rollouts WHERE state = ANY($1::text[]) ORDER BY app", active).map { try $0.decode(Int64.self, "id") }
    }

    /// The rollout `id` as it is now, locked until `tx` ends (an operator's pause or promote waits for the
    /// step, or the step sees it), with the time since it started and since it last made progress; nil once
    /// it has ended.
    static func lock(_ tx: Transaction, id: Int64) async throws -> Record? {
        let rows = try await tx.query(
            "SELECT \(recordColumns) FROM rollouts WHERE id = $1 AND state = ANY($2::text[]) FOR UPDATE", id, active)
        return try rows.map { row in
            Record(
                id: try row.decode(Int64.self, "id"), app: try row.decode(String.self, "app"),
                from: try row.decode(Int64.self, "from_revision"), to: try row.decode(Int64.self, "to_revision"),
                cause: try row.decode(String.self, "cause"),
                strategy: try strategy(row), available: try row.decode(Int.self, "available"), paused: try row.decode(Bool.self, "paused"),
                promoted: try row.decode(Bool.self, "promoted"), replaced: try row.decode(Int.self, "replaced"),
                restart: try row.decode(Bool.self, "restart"), secondsSinceProgress: try row.decode(Double.self, "since_progress"),
                secondsSinceStart: try row.decode(Double.self, "since_start"))
        }.first
    }

    /// More new instances are available than at the last progress: the deadline counts from now.
    static func progressed(_ tx: Transaction, id: Int64, available: Int) async throws {
        try await tx.execute("UPDATE rollouts SET available = $2, progressed_at = now() WHERE id = $1 AND state = ANY($3::text[])", id, available, active)
    }

    /// Ends a rollout not ended yet as Succeeded or Failed, saying why. False when it had ended.
    static func finish(_ tx: Transaction, id: Int64, state: String, reason: String) async throws -> Bool {
        try await tx.execute(
            "UPDATE rollouts SET state = $2, reason = $3, ended_at = now() WHERE id = $1 AND state = ANY($4::text[])",
            id, state, reason, active) > 0
    }

    /// A Progressing rollout pauses (an operator's, or its canaries are available), saying why.
    static func pause(_ tx: Transaction, id: Int64, reason: String) async throws -> Bool {
        try await tx.execute("UPDATE rollouts SET state = 'Paused', reason = $2 WHERE id = $1 AND state = 'Progressing'", id, reason) > 0
    }

    /// `app`'s rollout goes on: `Paused` → `Progressing` (its deadline counts from now); `promote` also lets
    /// one with canaries past them. Returns the rollout's id, nil when none was in a state to go on.
    static func proceed(_ tx: Transaction, app: String, promote: Bool) async throws -> Int64? {
        try await tx.query(
            """
            UPDATE rollouts SET state = 'Progressing', reason = '', progressed_at = now(), promoted = promoted OR $2
            WHERE app = $1 AND (state = 'Paused'
                                OR ($2 AND state = 'Progressing' AND NOT promoted AND from_revision > 0 AND (strategy ->> 'canary')::int > 0))
            RETURNING id
            """, app, promote).first?.decode(Int64.self, "id")
    }

    /// The id of `app`'s Progressing rollout that replaces instances, if it has one (a new app's only
    /// watches its first instances: nothing to pause).
    static func progressingID(_ tx: Transaction, app: String) async throws -> Int64? {
        try await tx.query("SELECT id FROM rollouts WHERE app = $1 AND state = 'Progressing' AND from_revision > 0", app).first?.decode(Int64.self, "id")
    }

    /// It replaced `count` more instances.
    static func replaced(_ tx: Transaction, id: Int64, count: Int) async throws {
        try await tx.execute("UPDATE rollouts SET replaced = replaced + $2 WHERE id = $1", id, count)
    }

    /// Lets a rollout past its canaries by itself (autoPromote).
    static func promoted(_ tx: Transaction, id: Int64) async throws {
        try await tx.execute("UPDATE rollouts SET promoted = true WHERE id = $1", id)
    }

    /// Each app's newest this many rollouts outlive the retention.
    static let keptPerApp = 10

    /// Deletes at most `limit` rollouts that ended more than `millis` ago, but never one of an app's newest
    /// `keptPerApp` nor its newest that succeeded (an automatic revert returns to it). Returns how many went.
    static func prune(_ store: Store, endedBefore millis: Int64, limit: Int) async throws -> Int {
        try await store.query(
            """
            DELETE FROM rollouts WHERE id IN (
                SELECT id FROM (
                    SELECT id, ended_at, row_number() OVER (PARTITION BY app ORDER BY id DESC) AS newer,
                           max(id) FILTER (WHERE state = 'Succeeded') OVER (PARTITION BY app) AS last_succeeded
                    FROM rollouts) r
                WHERE ended_at < now() - $1 * interval '1 millisecond' AND newer > $2 AND id IS DISTINCT FROM last_succeeded
                ORDER BY ended_at LIMIT $3)
            RETURNING id
            """, millis, keptPerApp, limit).count
    }

    /// The revision of `app`'s last rollout that succeeded before `revision`, if any, since the app was last
    /// created (never one of an app of the same name deleted before).
    static func lastSucceeded(_ store: Store, app: String, before revision: Int64) async throws -> Int64? {
        try await store.query(
            """
            SELECT max(to_revision) AS revision FROM rollouts WHERE app = $1 AND state = 'Succeeded' AND to_revision < $2
              AND to_revision >= coalesce((SELECT max(to_revision) FROM rollouts WHERE app = $1 AND from_revision = 0 AND to_revision <= $2), 0)
            """, app, revision
        ).first?.decode(Int64?.self, "revision")
    }

    /// Rollouts of `app` (every app when empty), newest first; the app's newest one with its instances' counts
    /// now (0 for earlier ones).
    static func list(_ store: Store, app: String, limit: Int) async throws -> [Sigma_V1_Rollout] {
        let rows = try await store.query(
            """
            SELECT r.id, r.app, r.from_revision, r.to_revision, r.cause, r.started_by, r.strategy::text AS strategy, r.state, r.reason, r.promoted,
                   (extract(epoch FROM r.started_at) * 1000)::bigint AS started_ms,
                   coalesce((extract(epoch FROM r.ended_at) * 1000)::bigint, 0) AS ended_ms,
                   c.new_count, c.available_count, c.old_count
            FROM rollouts r CROSS JOIN LATERAL (
                -- Counted for the app's newest rollout only: the others' rows count nothing.
                SELECT count(*) FILTER (WHERE i.revision = r.to_revision)::int AS new_count,
                       count(*) FILTER (WHERE i.revision = r.to_revision
                                        AND \(available("i.", minReadySeconds: "(r.strategy ->> 'minReadySeconds')::int")))::int AS available_count,
                       count(*) FILTER (WHERE i.revision <> r.to_revision)::int AS old_count
                FROM instances i WHERE i.app = r.app AND i.state NOT IN ('Terminating', 'Terminated')
                  AND r.id = (SELECT max(l.id) FROM rollouts l WHERE l.app = r.app)) c
            WHERE $1 = '' OR r.app = $1 ORDER BY r.id DESC LIMIT $2
            """, app, limit)
        return try rows.map { row in
            var rollout = Sigma_V1_Rollout()
            rollout.id = try row.decode(Int64.self, "id")
            rollout.app = try row.decode(String.self, "app")
            rollout.fromRevision = try row.decode(Int64.self, "from_revision")
            rollout.toRevision = try row.decode(Int64.self, "to_revision")
            rollout.cause = try row.decode(String.self, "cause")
            rollout.startedBy = try row.decode(String.self, "started_by")
            rollout.strategy = try strategy(row).wire
            rollout.state = try row.decode(String.self, "state")
            rollout.reason = try row.decode(String.self, "reason")
            rollout.promoted = try row.decode(Bool.self, "promoted")
            rollout.startedUnixMs = try row.decode(Int64.self, "started_ms")
            rollout.endedUnixMs = try row.decode(Int64.self, "ended_ms")
            rollout.newInstances = try row.decode(Int32.self, "new_count")
            rollout.availableInstances = try row.decode(Int32.self, "available_count")
            rollout.oldInstances = try row.decode(Int32.self, "old_count")
            return rollout
        }
    }
}
