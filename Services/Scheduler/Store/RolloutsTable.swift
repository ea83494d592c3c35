import ClientKit
import Core
import Foundation
import Protocol
import Store

/// The `rollouts` table, the scheduler's: every statement that writes it is here. One record per changed
/// template of an app (migration 23); at most one Progressing per app.
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
        let secondsSinceProgress: Double
        let secondsSinceStart: Double
    }

    /// Starts a rollout of `app` from `from` to `to`; one still Progressing is Superseded by it.
    static func start(_ tx: Transaction, app: String, from: Int64, to: Int64, cause: String, strategy: UpdateStrategy) async throws {
        try await supersede(tx, app: app, by: to)
        let json = String(decoding: try JSONEncoder().encode(strategy), as: UTF8.self)
        try await tx.execute(
            "INSERT INTO rollouts (app, from_revision, to_revision, cause, strategy) VALUES ($1, $2, $3, $4, $5::jsonb)",
            app, from, to, cause, json)
    }

    /// A rollout of `app` still Progressing ends Superseded (a later apply, or the app's delete).
    static func supersede(_ tx: Transaction, app: String, by revision: Int64?) async throws {
        try await tx.execute(
            """
            UPDATE rollouts SET state = 'Superseded', reason = $2, ended_at = now() WHERE app = $1 AND state = 'Progressing'
            """, app, revision.map { "superseded by revision \($0)" } ?? "the app was deleted")
    }

    /// Every Progressing rollout, with the time since it started and since it last made progress.
    static func progressing(_ store: Store) async throws -> [Record] {
        let rows = try await store.query(
            """
            SELECT id, app, from_revision, to_revision, cause, strategy::text AS strategy, available,
                   extract(epoch FROM now() - progressed_at)::float8 AS since_progress,
                   extract(epoch FROM now() - started_at)::float8 AS since_start
            FROM rollouts WHERE state = 'Progressing' ORDER BY app
            """)
        return try rows.map { row in
            Record(
                id: try row.decode(Int64.self, "id"), app: try row.decode(String.self, "app"),
                from: try row.decode(Int64.self, "from_revision"), to: try row.decode(Int64.self, "to_revision"),
                cause: try row.decode(String.self, "cause"),
                strategy: try JSONDecoder().decode(UpdateStrategy.self, from: Data(try row.decode(String.self, "strategy").utf8)),
                available: try row.decode(Int.self, "available"), secondsSinceProgress: try row.decode(Double.self, "since_progress"),
                secondsSinceStart: try row.decode(Double.self, "since_start"))
        }
    }

    /// More new instances are available than at the last progress: the deadline counts from now.
    static func progressed(_ tx: Transaction, id: Int64, available: Int) async throws {
        try await tx.execute("UPDATE rollouts SET available = $2, progressed_at = now() WHERE id = $1 AND state = 'Progressing'", id, available)
    }

    /// Ends a Progressing rollout as Succeeded or Failed, saying why. False when it was no longer Progressing.
    static func finish(_ tx: Transaction, id: Int64, state: String, reason: String) async throws -> Bool {
        try await tx.execute(
            "UPDATE rollouts SET state = $2, reason = $3, ended_at = now() WHERE id = $1 AND state = 'Progressing'", id, state, reason) > 0
    }

    /// The revision of `app`'s last rollout that succeeded before `revision`, if any.
    static func lastSucceeded(_ store: Store, app: String, before revision: Int64) async throws -> Int64? {
        try await store.query(
            "SELECT max(to_revision) AS revision FROM rollouts WHERE app = $1 AND state = 'Succeeded' AND to_revision < $2", app, revision
        ).first?.decode(Int64?.self, "revision")
    }

    /// Rollouts of `app` (every app when empty), newest first; the app's newest one with its instances' counts
    /// now (0 for earlier ones).
    static func list(_ store: Store, app: String, limit: Int) async throws -> [Sigma_V1_Rollout] {
        let rows = try await store.query(
            """
            SELECT r.id, r.app, r.from_revision, r.to_revision, r.cause, r.strategy::text AS strategy, r.state, r.reason,
                   (extract(epoch FROM r.started_at) * 1000)::bigint AS started_ms,
                   coalesce((extract(epoch FROM r.ended_at) * 1000)::bigint, 0) AS ended_ms,
                   CASE WHEN r.id = (SELECT max(l.id) FROM rollouts l WHERE l.app = r.app) THEN c.new_count ELSE 0 END AS new_count,
                   CASE WHEN r.id = (SELECT max(l.id) FROM rollouts l WHERE l.app = r.app) THEN c.available_count ELSE 0 END AS available_count,
                   CASE WHEN r.id = (SELECT max(l.id) FROM rollouts l WHERE l.app = r.app) THEN c.old_count ELSE 0 END AS old_count
            FROM rollouts r CROSS JOIN LATERAL (
                SELECT count(*) FILTER (WHERE i.revision = r.to_revision)::int AS new_count,
                       count(*) FILTER (WHERE i.revision = r.to_revision AND i.state = 'Running' AND i.ready
                                        AND i.ready_since <= now() - (r.strategy ->> 'minReadySeconds')::int * interval '1 second')::int AS available_count,
                       count(*) FILTER (WHERE i.revision <> r.to_revision)::int AS old_count
                FROM instances i WHERE i.app = r.app AND i.state NOT IN ('Terminating', 'Terminated')) c
            WHERE $1 = '' OR r.app = $1 ORDER BY r.id DESC LIMIT $2
            """, app, limit)
        return try rows.map { row in
            var rollout = Sigma_V1_Rollout()
            rollout.id = try row.decode(Int64.self, "id")
            rollout.app = try row.decode(String.self, "app")
            rollout.fromRevision = try row.decode(Int64.self, "from_revision")
            rollout.toRevision = try row.decode(Int64.self, "to_revision")
            rollout.cause = try row.decode(String.self, "cause")
            rollout.strategy = try JSONDecoder().decode(UpdateStrategy.self, from: Data(try row.decode(String.self, "strategy").utf8)).wire
            rollout.state = try row.decode(String.self, "state")
            rollout.reason = try row.decode(String.self, "reason")
            rollout.startedUnixMs = try row.decode(Int64.self, "started_ms")
            rollout.endedUnixMs = try row.decode(Int64.self, "ended_ms")
            rollout.newInstances = try row.decode(Int32.self, "new_count")
            rollout.availableInstances = try row.decode(Int32.self, "available_count")
            rollout.oldInstances = try row.decode(Int32.self, "old_count")
            return rollout
        }
    }
}
