import CLibPQ
import Foundation

/// One libpq connection. Confined to the worker thread that owns it; every call here blocks.
final class PGConnection {
    private(set) var handle: OpaquePointer?
    let conninfo: String

    init(conninfo: String) {
        self.conninfo = conninfo
    }

    deinit { close() }

    /// Connects if not connected (or broken). Throws `.unavailable` when PostgreSQL cannot be reached.
    func ensureConnected(sessionSetup: [String]) throws {
        // Reading what is waiting on an idle socket notices a server that went away (its FATAL message,
        // or end of file) before a statement is sent into a dead connection.
        if let handle, PQconsumeInput(handle) == 1, PQstatus(handle) == CONNECTION_OK { return }
        close()
        guard let conn = PQconnectdb(conninfo) else { throw StoreError(.unavailable, "out of memory") }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = errorMessage(conn)
            PQfinish(conn)
            throw StoreError(.unavailable, message)
        }
        // Server notices (NOTICE, WARNING) are not errors; keep them off stderr.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
        handle = conn
        for statement in sessionSetup { _ = try execute(statement, []) }
    }

    func close() {
        if let handle { PQfinish(handle) }
        handle = nil
    }

    var socket: Int32 { handle.map { PQsocket($0) } ?? -1 }

    /// Runs one statement with its parameters bound apart from the SQL text.
    /// Returns the rows and the number of rows affected.
    func execute(_ sql: String, _ parameters: [PGEncodable?]) throws -> (rows: [Row], affected: Int) {
        guard let handle else { throw StoreError(.unavailable, "not connected") }
        let texts: [String?] = parameters.map { $0?.pgText ?? nil }
        if texts.contains(where: { $0?.utf8.contains(0) == true }) {
            throw StoreError(.invalidValue, "text values cannot hold NUL characters")
        }
        let result: OpaquePointer? = withCStrings(texts) { pointers in
            PQexecParams(handle, sql, Int32(pointers.count), nil, pointers, nil, nil, 0)
        }
        return try consume(result, handle)
    }

    /// Runs SQL text that may hold several statements and takes no parameters (migrations).
    func executeScript(_ sql: String) throws {
        guard let handle else { throw StoreError(.unavailable, "not connected") }
        _ = try consume(PQexec(handle, sql), handle)
    }

    private func consume(_ result: OpaquePointer?, _ handle: OpaquePointer) throws -> (rows: [Row], affected: Int) {
        guard let result else { throw brokenOrFailed(handle) }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK:
            return ([], Int(String(cString: PQcmdTuples(result))) ?? 0)
        case PGRES_TUPLES_OK:
            let rowCount = Int(PQntuples(result))
            let columnCount = Int(PQnfields(result))
            let columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
            var rows: [Row] = []
            rows.reserveCapacity(rowCount)
            for r in 0..<rowCount {
                var values: [String?] = []
                values.reserveCapacity(columnCount)
                for c in 0..<columnCount {
                    if PQgetisnull(result, Int32(r), Int32(c)) == 1 {
                        values.append(nil)
                    } else {
                        values.append(String(cString: PQgetvalue(result, Int32(r), Int32(c))))
                    }
                }
                rows.append(Row(columns: columns, values: values))
            }
            return (rows, rowCount)
        default:
            if let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))) {
                let message = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) } ?? ""
                throw StoreError.fromSQLState(String(cString: state), message: message)
            }
            throw brokenOrFailed(handle)
        }
    }

    private func brokenOrFailed(_ handle: OpaquePointer) -> StoreError {
        let message = errorMessage(handle)
        if PQstatus(handle) != CONNECTION_OK {
            close()
            return StoreError(.unavailable, message)
        }
        return StoreError(.query, message)
    }

    // MARK: LISTEN/NOTIFY

    /// Reads input that arrived on the socket and returns the notifications in it.
    func consumeNotifications() throws -> [StoreNotification] {
        guard let handle else { throw StoreError(.unavailable, "not connected") }
        guard PQconsumeInput(handle) == 1 else {
            let message = errorMessage(handle)
            close()
            throw StoreError(.unavailable, message)
        }
        var notifications: [StoreNotification] = []
        while let notify = PQnotifies(handle) {
            let n = notify.pointee
            notifications.append(.notification(channel: String(cString: n.relname), payload: String(cString: n.extra)))
            PQfreemem(notify)
        }
        return notifications
    }
}

private func errorMessage(_ conn: OpaquePointer) -> String {
    String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Calls `body` with C string pointers for `strings` (nil stays NULL), valid for the duration of the call.
private func withCStrings<R>(_ strings: [String?], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { $0.map { strdup($0) } ?? nil }
    defer { copies.forEach { free($0) } }
    return body(copies.map { UnsafePointer($0) })
}
