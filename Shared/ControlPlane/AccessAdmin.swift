import ClientKit
import Foundation
import Protocol
import RPC
import Store

/// The principals table and the audit log as RPCs (served by the scheduler; operators only). A key added
/// or removed here is in force at every service within its refresh interval (a second).
public enum AccessAdmin {
    public static func register(_ handlers: inout RPCHandlers, store: Store) {
        handlers.register(AccessMethods.addPrincipal) { request, _ in try await add(request.principal, store: store) }
        handlers.register(AccessMethods.removePrincipal) { request, _ in try await remove(request.nameOrKey, store: store) }
        handlers.register(AccessMethods.listPrincipals) { _, _ in try await list(store: store) }
        handlers.register(AccessMethods.listAudit) { request, _ in try await audit(request, store: store) }
    }

    static func validate(_ principal: Sigma_V1_Principal) throws {
        var problems: [String] = []
        if !CurveKeyFile.isValidZ85Key(principal.publicKey) {
            problems.append("public_key must be a Z85 CURVE public key of 40 characters")
        }
        if principal.name.isEmpty || principal.name.utf8.count > 128 || principal.name.contains(where: { $0.isWhitespace || $0.isNewline }) {
            problems.append("name must be 1–128 characters without spaces")
        }
        switch principal.role {
        case "operator", "service":
            if !principal.node.isEmpty { problems.append("node is only for agents") }
        case "agent":
            if principal.node.isEmpty { problems.append("an agent needs the node it speaks for") }
        default:
            problems.append("role must be operator, service or agent (business instances use tokens)")
        }
        if !problems.isEmpty { throw RPCError.invalidArgument(problems.joined(separator: "; ")) }
    }

    static let columns = "public_key, name, role, coalesce(node, '') AS node, (extract(epoch FROM added_at) * 1000)::bigint AS added_ms"

    static func principal(_ row: Row) throws -> Sigma_V1_Principal {
        var principal = Sigma_V1_Principal()
        principal.publicKey = try row.decode(String.self, "public_key")
        principal.name = try row.decode(String.self, "name")
        principal.role = try row.decode(String.self, "role")
        principal.node = try row.decode(String.self, "node")
        principal.addedAtUnixMs = try row.decode(Int64.self, "added_ms")
        return principal
    }

    static func add(_ wanted: Sigma_V1_Principal, store: Store) async throws -> Sigma_V1_AddPrincipalResponse {
        try validate(wanted)
        let node: String? = wanted.node.isEmpty ? nil : wanted.node
        return try await store.transaction { tx in
            let taken = try await tx.query("SELECT public_key FROM principals WHERE name = $1 AND public_key <> $2",
                                           wanted.name, wanted.publicKey)
            if !taken.isEmpty { throw RPCError.alreadyExists("the name \(wanted.name) belongs to another key") }
            let rows = try await tx.query(
                """
                WITH before AS (SELECT name, role, node FROM principals WHERE public_key = $1),
                upserted AS (
                    INSERT INTO principals (public_key, name, role, node) VALUES ($1, $2, $3, $4)
                    ON CONFLICT (public_key) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role, node = EXCLUDED.node
                    RETURNING \(columns)
                )
                SELECT u.*, NOT EXISTS (SELECT 1 FROM before b WHERE b.name = $2 AND b.role = $3 AND b.node IS NOT DISTINCT FROM $4) AS changed
                FROM upserted u
                """, wanted.publicKey, wanted.name, wanted.role, node)
            guard let row = rows.first else { throw RPCError.internal("the principal was not written") }
            var response = Sigma_V1_AddPrincipalResponse()
            response.principal = try principal(row)
            response.changed = try row.decode(Bool.self, "changed")
            return response
        }
    }

    static func remove(_ nameOrKey: String, store: Store) async throws -> Sigma_V1_RemovePrincipalResponse {
        guard !nameOrKey.isEmpty else { throw RPCError.invalidArgument("name_or_key is empty") }
        let removed = try await store.execute("DELETE FROM principals WHERE name = $1 OR public_key = $1", nameOrKey)
        var response = Sigma_V1_RemovePrincipalResponse()
        response.removed = removed > 0
        if removed == 0 { response.message = "no principal is named \(nameOrKey) or has that key; nothing removed" }
        return response
    }

    static func list(store: Store) async throws -> Sigma_V1_ListPrincipalsResponse {
        var response = Sigma_V1_ListPrincipalsResponse()
        response.principals = try await store.query("SELECT \(columns) FROM principals ORDER BY role, name").map(principal)
        return response
    }

    static func audit(_ request: Sigma_V1_ListAuditRequest, store: Store) async throws -> Sigma_V1_ListAuditResponse {
        let limit = request.limit == 0 ? 100 : Int(min(request.limit, 10_000))
        let rows = try await store.query(
            """
            SELECT id, (extract(epoch FROM at) * 1000)::bigint AS at_ms, service, method, caller, role, caller_key, status,
                   subject, message, repeats
            FROM audit_log
            WHERE ($1 = '' OR caller = $1) AND ($2 = '' OR method = $2) AND ($3 = 0 OR id < $3)
            ORDER BY id DESC LIMIT $4
            """, request.caller, request.method, request.beforeID, limit)
        var response = Sigma_V1_ListAuditResponse()
        response.entries = try rows.map { row in
            var entry = Sigma_V1_AuditEntry()
            entry.id = try row.decode(Int64.self, "id")
            entry.atUnixMs = try row.decode(Int64.self, "at_ms")
            entry.service = try row.decode(String.self, "service")
            entry.method = try row.decode(String.self, "method")
            entry.caller = try row.decode(String.self, "caller")
            entry.role = try row.decode(String.self, "role")
            entry.callerKey = try row.decode(String.self, "caller_key")
            entry.status = try row.decode(String.self, "status")
            entry.subject = try row.decode(String.self, "subject")
            entry.message = try row.decode(String.self, "message")
            entry.repeats = UInt32(clamping: try row.decode(Int64.self, "repeats"))
            return entry
        }
        return response
    }
}
