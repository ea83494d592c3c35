import Foundation

/// A Swift value that can be sent as a query parameter (in PostgreSQL's text format).
/// Parameters always travel apart from the SQL text: nothing is ever pasted into a statement.
public protocol PGEncodable: Sendable {
    /// The text form, or nil for NULL.
    var pgText: String? { get }
}

/// A Swift value that a column (in PostgreSQL's text format) decodes into.
public protocol PGDecodable {
    init(pgText: String) throws
}

extension String: PGEncodable, PGDecodable {
    public var pgText: String? { self }
    public init(pgText: String) { self = pgText }
}

extension Int: PGEncodable, PGDecodable {
    public var pgText: String? { String(self) }
    public init(pgText: String) throws { self = try parse(pgText, Int.init, "Int") }
}

extension Int64: PGEncodable, PGDecodable {
    public var pgText: String? { String(self) }
    public init(pgText: String) throws { self = try parse(pgText, Int64.init, "Int64") }
}

extension Int32: PGEncodable, PGDecodable {
    public var pgText: String? { String(self) }
    public init(pgText: String) throws { self = try parse(pgText, Int32.init, "Int32") }
}

extension UInt64: PGEncodable, PGDecodable {
    public var pgText: String? { String(self) }
    public init(pgText: String) throws { self = try parse(pgText, UInt64.init, "UInt64") }
}

extension Double: PGEncodable, PGDecodable {
    public var pgText: String? { String(self) }
    public init(pgText: String) throws { self = try parse(pgText, Double.init, "Double") }
}

extension Bool: PGEncodable, PGDecodable {
    public var pgText: String? { self ? "t" : "f" }
    public init(pgText: String) throws {
        switch pgText {
        case "t", "true": self = true
        case "f", "false": self = false
        default: throw StoreError(.decoding, "'\(pgText.prefix(40))' is not a boolean")
        }
    }
}

extension UUID: PGEncodable, PGDecodable {
    public var pgText: String? { lowercasedText }
    public init(pgText: String) throws { self = try parse(pgText, UUID.init(uuidString:), "UUID") }
}

/// bytea, in hex form.
extension Data: PGEncodable, PGDecodable {
    public var pgText: String? { "\\x" + map { String(format: "%02x", $0) }.joined() }
    public init(pgText: String) throws {
        guard pgText.hasPrefix("\\x"), pgText.utf8.count % 2 == 0 else {
            throw StoreError(.decoding, "bytea is not in hex form")
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(pgText.utf8.count / 2 - 1)
        var high: UInt8?
        for c in pgText.utf8.dropFirst(2) {
            let nibble: UInt8
            switch c {
            case 48...57: nibble = c - 48
            case 97...102: nibble = c - 87
            case 65...70: nibble = c - 55
            default: throw StoreError(.decoding, "bytea holds a non-hex character")
            }
            if let h = high { bytes.append(h << 4 | nibble); high = nil } else { high = nibble }
        }
        self = Data(bytes)
    }
}

/// timestamptz. Sessions run with TimeZone UTC, so the text is "2026-11-25 11:34:53.123456+00".
extension Date: PGEncodable, PGDecodable {
    public var pgText: String? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: self)
    }

    public init(pgText: String) throws {
        var text = pgText.replacingOccurrences(of: " ", with: "T")
        if text.hasSuffix("+00") { text = String(text.dropLast(3)) + "Z" }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = text.contains(".") ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
        guard let date = formatter.date(from: text) else { throw StoreError(.decoding, "'\(pgText)' is not a timestamptz") }
        self = date
    }
}

extension Optional: PGEncodable where Wrapped: PGEncodable {
    public var pgText: String? { self?.pgText ?? nil }
}

extension UUID {
    /// `uuidString.lowercased()` without Foundation's string machinery (PostgreSQL's own form of a uuid).
    public var lowercasedText: String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes = [UInt8]()
        bytes.reserveCapacity(36)
        withUnsafeBytes(of: uuid) { raw in
            for (index, byte) in raw.enumerated() {
                if index == 4 || index == 6 || index == 8 || index == 10 { bytes.append(UInt8(ascii: "-")) }
                bytes.append(digits[Int(byte >> 4)])
                bytes.append(digits[Int(byte & 0x0f)])
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

private func parse<T>(_ text: String, _ make: (String) -> T?, _ name: String) throws -> T {
    guard let value = make(text) else { throw StoreError(.decoding, "'\(text.prefix(40))' is not a valid \(name)") }
    return value
}

/// One row of a result, its columns by name or position.
public struct Row: Sendable {
    let columns: [String]
    let values: [String?]

    init(columns: [String], values: [String?]) {
        self.columns = columns
        self.values = values
    }

    /// The value of `column`, decoded as `T`. A NULL or a missing column is an error; ask for an Optional to allow NULL.
    public func decode<T: PGDecodable>(_ type: T.Type = T.self, _ column: String) throws -> T {
        guard let text = try raw(column) else { throw StoreError(.decoding, "column \(column) is NULL") }
        return try T(pgText: text)
    }

    /// The value of `column`, or nil when it is NULL.
    public func decode<T: PGDecodable>(_ type: T?.Type, _ column: String) throws -> T? {
        try raw(column).map { try T(pgText: $0) }
    }

    /// A json/jsonb column (select it as `::text`) decoded as `T`.
    public func decodeJSON<T: Decodable>(_ type: T.Type = T.self, _ column: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(try decode(String.self, column).utf8))
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.decoding, "column \(column) is not JSON of \(T.self): \(error)")
        }
    }

    private func raw(_ column: String) throws -> String? {
        guard let index = columns.firstIndex(of: column) else {
            throw StoreError(.decoding, "no column \(column) in the result (has \(columns.joined(separator: ", ")))")
        }
        return values[index]
    }
}

/// A row type that knows how to read itself.
public protocol RowDecodable {
    init(row: Row) throws
}

/// A PostgreSQL array in text form, `{"a","b",NULL}`: pass it as one parameter and cast it (`$1::uuid[]`).
/// Built byte by byte: the allocator and the audit log send arrays of thousands of elements many times a second.
extension Array: PGEncodable where Element: PGEncodable {
    public var pgText: String? {
        var bytes: [UInt8] = [UInt8(ascii: "{")]
        bytes.reserveCapacity(2 + count * 40)
        for (index, element) in enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            guard let text = element.pgText else {
                bytes.append(contentsOf: "NULL".utf8)
                continue
            }
            bytes.append(UInt8(ascii: "\""))
            for byte in text.utf8 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { bytes.append(UInt8(ascii: "\\")) }
                bytes.append(byte)
            }
            bytes.append(UInt8(ascii: "\""))
        }
        bytes.append(UInt8(ascii: "}"))
        return String(decoding: bytes, as: UTF8.self)
    }
}
