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
        let rows = try await store.query(
            """
            SELECT * FROM (
                SELECT id, kind, name, reason, message, (extract(epoch FROM at) * 1000)::bigint AS at_ms FROM events
                WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR name = $2)
                ORDER BY id DESC LIMIT $3) AS newest
            ORDER BY id
            """, kind, name, limit)
        return try rows.map(event)
    }

    static func event(_ row: Row) throws -> Sigma_V1_Event {
        var event = Sigma_V1_Event()
        event.id = try row.decode(Int64.self, "id")
        event.kind = try row.decode(String.self, "kind")
        event.name = try row.decode(String.self, "name")
        event.reason = try row.decode(String.self, "reason")
        event.message = try row.decode(String.self, "message")
        event.atUnixMs = try row.decode(Int64.self, "at_ms")
        return event
    }
}
