/// An amount of CPU and memory: a node's capacity, an instance's request or its limit.
public struct Resources: Hashable, Sendable, Codable, CustomStringConvertible {
    /// CPU in thousandths of a core ("500m" is half a core).
    public var cpuMillis: Int64
    public var memoryBytes: Int64

    /// Stored JSON keys (SQL reads them: `AppSpec.StoredPath`).
    public enum CodingKeys: String, CodingKey { case cpuMillis, memoryBytes }

    public init(cpuMillis: Int64 = 0, memoryBytes: Int64 = 0) {
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
    }

    public static let zero = Resources()

    public static func + (a: Resources, b: Resources) -> Resources { a.combined(with: b, +) }

    public static func - (a: Resources, b: Resources) -> Resources { a.combined(with: b, -) }

    public static func += (a: inout Resources, b: Resources) { a = a + b }
    public static func -= (a: inout Resources, b: Resources) { a = a - b }

    public static func * (a: Resources, n: Int64) -> Resources { a.combined(with: a) { value, _ in value * n } }

    /// Whether every dimension of `self` is at most the same dimension of `other`.
    public func fits(in other: Resources) -> Bool {
        ResourceName.every.allSatisfy { self[$0] <= other[$0] }
    }

    public var description: String {
        ResourceName.every.map { "\($0.rawValue) \($0.format(self[$0]))" }.joined(separator: ", ")
    }
}

/// What an instance asks for and what it may use. A request is subtracted from its node's capacity (never
/// overcommitted); a limit is enforced by cgroups and may exceed the request. A limit of 0 means unlimited.
public struct ResourceRequirements: Hashable, Sendable, Codable {
    public var request: Resources
    public var limit: Resources

    /// Stored JSON keys (SQL reads them: `AppSpec.StoredPath`).
    public enum CodingKeys: String, CodingKey { case request, limit }

    public init(request: Resources = .zero, limit: Resources = .zero) {
        self.request = request
        self.limit = limit
    }

    /// Problems with these values, each naming its field ("resources.limit.cpu: below the request ...").
    public func problems(field: String = "resources") -> [SpecProblem] {
        var problems: [SpecProblem] = []
        for (kind, resources) in [("request", request), ("limit", limit)] {
            for name in ResourceName.every where resources[name] < 0 {
                problems.append(SpecProblem(field: "\(field).\(kind).\(name.rawValue)", reason: "must not be negative"))
            }
        }
        for name in ResourceName.every where limit[name] > 0 && limit[name] < request[name] {
            problems.append(SpecProblem(
                field: "\(field).limit.\(name.rawValue)",
                reason: "\(name.format(limit[name])) is below the request \(name.format(request[name])) (0 means unlimited)"))
        }
        return problems
    }
}

/// Kubernetes-style quantities: CPU as "2", "0.5" or "500m"; memory as "512Mi", "2Gi", "1G" or plain bytes.
public enum Quantity {
    /// Millicores from "2", "1.5", "250m"; nil when the text is not a CPU quantity.
    public static func parseCPU(_ text: String) -> Int64? {
        let text = text.trimmed
        guard !text.isEmpty else { return nil }
        if text.hasSuffix("m") {
            guard let millis = Int64(text.dropLast()), millis >= 0 else { return nil }
            return millis
        }
        return decimal(text, scale: 1000)
    }

    /// Bytes from "512Mi", "2Gi", "1.5G", "1024"; nil when the text is not a memory quantity.
    public static func parseBytes(_ text: String) -> Int64? {
        let text = text.trimmed
        let units: [(String, Int64)] = [
            ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40),
            ("k", 1_000), ("K", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000),
        ]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            return decimal(String(text.dropLast(suffix.count)), scale: scale)
        }
        return decimal(text, scale: 1)
    }

    /// "500m", "2", "1.5".
    public static func formatCPU(_ millis: Int64) -> String {
        if millis % 1000 == 0 { return "\(millis / 1000)" }
        if millis > 1000 && millis % 100 == 0 { return "\(millis / 1000).\(millis % 1000 / 100)" }
        return "\(millis)m"
    }

    /// For people: exact when a binary unit divides evenly ("512Mi"), else one decimal in the largest unit that
    /// keeps the number at 1 or more ("70.6Gi", "1.9Mi"); bytes below 1 KiB as they are.
    public static func formatBytesRounded(_ bytes: Int64) -> String {
        for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] as [(String, Int64)] {
            let unit: Int64 = 1 << shift
            guard abs(bytes) >= unit else { continue }
            if bytes % unit == 0 { return "\(bytes / unit)\(suffix)" }
            let tenths = (bytes * 10 + unit / 2) / unit
            return tenths % 10 == 0 ? "\(tenths / 10)\(suffix)" : "\(tenths / 10).\(abs(tenths % 10))\(suffix)"
        }
        return "\(bytes)"
    }

    /// "512Mi", "2Gi", or bytes when no binary unit divides evenly.
    public static func formatBytes(_ bytes: Int64) -> String {
        for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] as [(String, Int64)] {
            let unit: Int64 = 1 << shift
            if bytes != 0 && bytes % unit == 0 { return "\(bytes / unit)\(suffix)" }
        }
        return "\(bytes)"
    }

    /// A non-negative decimal times `scale`, rounded down; nil on anything else or on overflow.
    private static func decimal(_ text: String, scale: Int64) -> Int64? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = parts.first, !whole.isEmpty || parts.count == 2,
            whole.allSatisfy(\.isASCIIDigitCharacter), parts.count == 1 || parts[1].allSatisfy(\.isASCIIDigitCharacter)
        else { return nil }
        let integer = whole.isEmpty ? 0 : Int64(whole)
        guard let integer else { return nil }
        let (product, overflow) = integer.multipliedReportingOverflow(by: scale)
        guard !overflow else { return nil }
        guard parts.count == 2 else { return product }
        var fraction: Int64 = 0
        var divisor: Int64 = 1
        for digit in parts[1].prefix(12) {
            fraction = fraction * 10 + Int64(digit.wholeNumberValue!)
            divisor *= 10
        }
        let (extra, overflow2) = fraction.multipliedReportingOverflow(by: scale)
        if overflow2 { return nil }
        let (sum, overflow3) = product.addingReportingOverflow(extra / divisor)
        return overflow3 ? nil : sum
    }
}

extension Character {
    fileprivate var isASCIIDigitCharacter: Bool { isASCII && isNumber }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs.
    var trimmed: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}

/// One thing wrong with a spec: the field's path and why.
public struct SpecProblem: Hashable, Sendable, CustomStringConvertible {
    public let field: String
    public let reason: String

    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    public var description: String { "\(field): \(reason)" }
}
