import Foundation
import Protocol
import SwiftProtobuf

/// sigmactl's `-o json` and `-o yaml` (docs/sigmactl-output.schema.json, docs/operations.md "sigmactl's JSON"):
/// the .proto's field names, every field present (its zero value when unset, null for an unset proto3
/// `optional`), 64-bit integers as numbers, enums by name, and each `*_unix_ms` as `*_at`, an RFC 3339 UTC time
/// with milliseconds (null when 0). `OutputFields` (written from the .proto files by scripts/proto-schema)
/// says which fields each message has.
enum Output {
    /// `message` as a JSON value (what JSONSerialization takes).
    static func value(_ message: any SwiftProtobuf.Message) throws -> Any {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        options.alwaysPrintInt64sAsNumbers = true
        let object = try JSONSerialization.jsonObject(with: Data(try message.jsonString(options: options).utf8))
        return complete(object, as: .message(type(of: message).protoMessageName))
    }

    static func complete(_ value: Any?, as kind: OutputFields.Kind) -> Any {
        switch kind {
        case .integer: return value ?? 0
        case .number: return value ?? 0.0
        case .boolean: return value ?? false
        case .string, .bytes: return value ?? ""
        case .enumeration(let zero): return value ?? zero
        case .time:
            let millis = (value as? NSNumber)?.int64Value ?? (value as? String).flatMap { Int64($0) } ?? 0
            return millis == 0 ? NSNull() : time(millis)
        case .message(let name):
            let object = value as? [String: Any] ?? [:]
            var printed: [String: Any] = [:]
            for field in OutputFields.messages[name] ?? [] { printed[field.printed] = complete(object[field.name], as: field.kind) }
            return printed
        case .list(let element): return (value as? [Any] ?? []).map { complete($0, as: element) }
        case .map(let element): return (value as? [String: Any] ?? [:]).mapValues { complete($0, as: element) }
        case .optional(let wrapped): return value == nil ? NSNull() : complete(value, as: wrapped)
        }
    }

    /// "2026-12-03T18:21:04.512Z".
    static func time(_ millis: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
    }
}

/// Messages as a JSON array (or YAML sequence) in sigmactl's output form.
func printMessages<M: SwiftProtobuf.Message>(_ messages: [M], as format: OutputFormat = .json) throws {
    try printJSON(try messages.map(Output.value), as: format)
}

/// One message in sigmactl's output form.
func printMessage(_ message: any SwiftProtobuf.Message, as format: OutputFormat) throws {
    try printJSON(try Output.value(message), as: format)
}
