import Core
import Foundation
import Protocol
import Store

/// The `volumes` table, the scheduler's (migration 22): which nodes hold each ordinal's volumes (or its SSD's
/// data: an app with an SSD is followed the same way). A row is made
/// or refreshed when the ordinal is bound to a node (`InstancesTable.bind`, in the same statement), marked for
/// release when its app is deleted or scaled below it, and removed once the node's agent says the volumes are
/// gone. Placement prefers the node that held an ordinal's volumes last.
enum VolumesTable {
    /// SQL: the stored spec `spec` keeps data on its instances' nodes: volumes, or an SSD (whose data stays with
    /// the instance on each node it held one: the allocator keeps it for it).
    static func keepsData(_ spec: String) -> String { AppSpec.StoredPath.keepsDataOnNode(of: spec) }

    /// SQL: the team of the stored spec `spec` ("" for none).
    static func team(_ spec: String) -> String { "coalesce(\(spec) #>> \(AppSpec.StoredPath.team), '')" }

    /// A node holding an ordinal's data, and how many SSDs the ordinal's instance still holds there (the
    /// allocator's `held_ssds`).
    struct Home: Hashable, Sendable {
        let node: String
        let heldSSDs: Int
    }

    /// The nodes holding data of each ordinal of `apps` (for the app's current team), the most recently bound
    /// first, by "app NUL ordinal".
    static func homes(_ store: Store, apps: [String]) async throws -> [String: [Home]] {
        guard !apps.isEmpty else { return [:] }
        let rows = try await store.query(
            """
            SELECT v.app, v.ordinal, v.node, coalesce(h.held, 0)::bigint AS held
            FROM volumes v JOIN apps a ON a.name = v.app AND \(team("a.spec")) = v.team
            LEFT JOIN instances i ON i.app = v.app AND i.ordinal = v.ordinal
            LEFT JOIN held_ssds h ON h.node = v.node AND h.instance = i.id
            WHERE v.app = ANY($1::text[]) AND v.release_at IS NULL ORDER BY v.bound_at DESC
            """, apps)
        var homes: [String: [Home]] = [:]
        for row in rows {
            homes["\(try row.decode(String.self, "app"))\u{0}\(try row.decode(Int.self, "ordinal"))", default: []]
                .append(Home(node: try row.decode(String.self, "node"), heldSSDs: Int(try row.decode(Int64.self, "held"))))
        }
        return homes
    }

    /// Volumes whose ordinal no live app of their team has any more are released `retention` seconds from
    /// now; those whose ordinal came back (scaled up, applied again) are kept again. Returns how many changed.
    static func markReleases(_ tx: Transaction, retention: Double) async throws -> Int {
        let live = """
            EXISTS (SELECT 1 FROM apps a WHERE a.name = v.app AND NOT a.deleted AND \(team("a.spec")) = v.team
                    AND (a.spec #>> \(AppSpec.StoredPath.replicas))::int > v.ordinal AND \(keepsData("a.spec")))
            """
        let marked = try await tx.execute(
            "UPDATE volumes v SET release_at = now() + $1 * interval '1 millisecond' WHERE release_at IS NULL AND NOT \(live)",
            Int64(retention * 1000))
        let kept = try await tx.execute("UPDATE volumes v SET release_at = NULL WHERE release_at IS NOT NULL AND \(live)")
        return marked + kept
    }

    /// The volumes `node` should remove now.
    static func due(_ tx: Transaction, node: String) async throws -> [Sigma_V1_VolumeRef] {
        let rows = try await tx.query(
            "SELECT team, app, ordinal FROM volumes WHERE node = $1 AND release_at <= now() ORDER BY app, ordinal LIMIT 100", node)
        return try rows.map { row in
            var ref = Sigma_V1_VolumeRef()
            ref.team = try row.decode(String.self, "team")
            ref.app = try row.decode(String.self, "app")
            ref.ordinal = try row.decode(Int32.self, "ordinal")
            return ref
        }
    }

    /// `node` removed these volumes: their rows go (only while still due: a volume kept again stays).
    static func released(_ tx: Transaction, node: String, _ refs: [Sigma_V1_VolumeRef]) async throws {
        guard !refs.isEmpty else { return }
        try await tx.execute(
            """
            DELETE FROM volumes v USING unnest($2::text[], $3::text[], $4::int[]) AS r(team, app, ordinal)
            WHERE v.node = $1 AND v.team = r.team AND v.app = r.app AND v.ordinal = r.ordinal AND v.release_at <= now()
            """, node, refs.map(\.team), refs.map(\.app), refs.map { Int($0.ordinal) })
    }

    /// A removed node's volumes went with it.
    static func forgetNode(_ tx: Transaction, node: String) async throws {
        try await tx.execute("DELETE FROM volumes WHERE node = $1", node)
    }
}
