import Foundation
import Protocol

/// Instance ids arrive as text; a malformed one is INVALID_ARGUMENT naming the field.
func parseInstanceID(_ text: String, field: String) throws -> UUID {
    guard let id = UUID(uuidString: text) else { throw RPCError.invalidArgument("\(field): '\(text.prefix(64))' is not a UUID") }
    return id
}

/// A non-empty list of at most `limit` ids, duplicates dropped, order kept.
func parseInstanceIDs(_ texts: [String], field: String, limit: Int = 10_000) throws -> [UUID] {
    guard !texts.isEmpty else { throw RPCError.invalidArgument("\(field): at least one instance") }
    guard texts.count <= limit else { throw RPCError.invalidArgument("\(field): at most \(limit) per call") }
    var seen = Set<UUID>()
    return try texts.compactMap { text in
        let id = try parseInstanceID(text, field: field)
        return seen.insert(id).inserted ? id : nil
    }
}
