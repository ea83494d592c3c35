import Foundation
import Logging
import Protocol
import Store

/// The event log: every state change of a node, app or instance, with time, reason and message, listable per
/// object (`sigmactl describe`). Events are written in the transaction that makes the change.
enum Events {
    enum Kind: String {
        case node, app, instance
    }

    static func record(_ tx: Transaction, _ kind: Kind, _ name: String, _ reason: String, _ message: String = "") async throws {
        try await tx.execute("INSERT INTO events (kind, name, reason, message) VALUES ($1, $2, $3, $4)", kind.rawValue, name, reason, message)
    }

    /// Records the same reason for many objects of one kind in one statement.
    static func record(_ tx: Transaction, _ kind: Kind, _ names: [String], _ reason: String, _ messages: [String]) async throws {
        guard !names.isEmpty else { return }
        try await tx.execute(
            "INSERT INTO events (kind, name, reason, message) SELECT $1, n, $3, m FROM unnest($2::text[], $4::text[]) AS t(n, m)",
            kind.rawValue, names, reason, messages)
    }

    static func list(store: Store, kind: String, name: String, limit: Int) async throws -> [Sigma_V1_Event] {
        try await list(store: store, kind: kind, name: name, app: "", sinceMillis: 0, limit: limit).events
    }

    /// The newest `limit` events that match, newest last: of one kind and object (either may be empty: all),
    /// or of an app and its instances (`app`), at or after `sinceMillis` (0: all); `truncated` when more
    /// matched. Each names its object as people do (an instance APP-ORDINAL while its row is there).
    static func list(store: Store, kind: String, name: String, app: String, sinceMillis: Int64, limit: Int) async throws
        -> (events: [Sigma_V1_Event], truncated: Bool)
    {
        let rows = try await store.query(
            """
            SELECT * FROM (
                SELECT e.id, e.kind, e.name, e.reason, e.message, (extract(epoch FROM e.at) * 1000)::bigint AS at_ms,
                       CASE WHEN e.kind = 'instance' AND i.id IS NOT NULL THEN i.app || '-' || i.ordinal ELSE e.name END AS object
                FROM events e LEFT JOIN instances i ON e.kind = 'instance' AND i.id::text = e.name
                WHERE CASE WHEN $3 = '' THEN ($1 = '' OR e.kind = $1) AND ($2 = '' OR e.name = $2)
                           ELSE (e.kind = 'app' AND e.name = $3) OR (e.kind = 'instance' AND i.app = $3) END
                  AND ($4::bigint = 0 OR e.at >= to_timestamp($4::bigint / 1000.0))
                ORDER BY e.id DESC LIMIT $5) AS newest
            ORDER BY id
            """, kind, name, app, sinceMillis, limit + 1)
        let events = try rows.map(event)
        return (Array(events.suffix(limit)), events.count > limit)
    }

    static func event(_ row: Row) throws -> Sigma_V1_Event {
        var event = Sigma_V1_Event()
        event.id = try row.decode(Int64.self, "id")
        event.kind = try row.decode(String.self, "kind")
        event.name = try row.decode(String.self, "name")
        event.reason = try row.decode(String.self, "reason")
        event.message = try row.decode(String.self, "message")
        event.atUnixMs = try row.decode(Int64.self, "at_ms")
        event.object = (try? row.decode(String.self, "object")) ?? event.name
        return event
    }
}
