/// Which nodes an app may run on: every requirement must hold (Kubernetes' equality- and set-based selectors).
///
/// Keys are node labels plus the well-known topology keys `region`, `idc`, `isp` and `node` (the node's name), so
/// `idc in (hz-a, hz-b)` pins an app to two datacenters.
public struct LabelSelector: Hashable, Sendable, Codable, CustomStringConvertible {
    public var requirements: [Requirement]

    public init(_ requirements: [Requirement] = []) { self.requirements = requirements }

    /// `matchLabels`: each key must equal its value.
    public init(matchLabels: [String: String], expressions: [Requirement] = []) {
        requirements = matchLabels.sorted { $0.key < $1.key }.map { Requirement($0.key, .in, [$0.value]) } + expressions
    }

    public var isEmpty: Bool { requirements.isEmpty }

    public func matches(_ value: (String) -> String?) -> Bool {
        requirements.allSatisfy { $0.matches(value($0.key)) }
    }

    public func matches(_ labels: [String: String]) -> Bool { matches { labels[$0] } }

    public var description: String { requirements.map(\.description).joined(separator: ",") }

    public struct Requirement: Hashable, Sendable, Codable, CustomStringConvertible {
        public enum Operator: String, Hashable, Sendable, Codable, CaseIterable {
            case `in` = "In"
            case notIn = "NotIn"
            case exists = "Exists"
            case doesNotExist = "DoesNotExist"
        }

        public var key: String
        public var op: Operator
        public var values: [String]

        public init(_ key: String, _ op: Operator, _ values: [String] = []) {
            self.key = key
            self.op = op
            self.values = values
        }

        public func matches(_ value: String?) -> Bool {
            switch op {
            case .in: value.map(values.contains) ?? false
            case .notIn: !(value.map(values.contains) ?? false)
            case .exists: value != nil
            case .doesNotExist: value == nil
            }
        }

        public var description: String {
            switch op {
            case .in where values.count == 1: "\(key)=\(values[0])"
            case .in: "\(key) in (\(values.joined(separator: ",")))"
            case .notIn where values.count == 1: "\(key)!=\(values[0])"
            case .notIn: "\(key) notin (\(values.joined(separator: ",")))"
            case .exists: key
            case .doesNotExist: "!\(key)"
            }
        }

        func problems(field: String) -> [SpecProblem] {
            var problems: [SpecProblem] = []
            if !LabelSelector.isValidKey(key) {
                problems.append(SpecProblem(field: "\(field).key", reason: "\"\(key)\" is not a label key (letters, digits, - _ . /; 1-63 characters)"))
            }
            switch op {
            case .in, .notIn:
                if values.isEmpty { problems.append(SpecProblem(field: "\(field).values", reason: "\(op.rawValue) needs at least one value")) }
            case .exists, .doesNotExist:
                if !values.isEmpty { problems.append(SpecProblem(field: "\(field).values", reason: "\(op.rawValue) takes no values")) }
            }
            return problems
        }
    }

    /// Problems with this selector, each naming its field.
    public func problems(field: String) -> [SpecProblem] {
        requirements.enumerated().flatMap { index, requirement in requirement.problems(field: "\(field)[\(index)]") }
    }

    /// Label keys: letters, digits, '-', '_', '.', '/'; 1 to 63 characters.
    public static func isValidKey(_ key: String) -> Bool {
        !key.isEmpty && key.count <= 63
            && key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_./".contains($0)) }
    }

    /// Parses the text form: `disk=ssd,idc in (hz-a,hz-b),gpu,!spot,tier!=batch,zone notin (x)`.
    public init(parsing text: String) throws(SelectorParseError) {
        var requirements: [Requirement] = []
        for term in Self.splitTerms(text) {
            let term = term.trimmed
            if term.isEmpty { throw SelectorParseError(text: text, reason: "empty term") }
            requirements.append(try Self.parseTerm(term, in: text))
        }
        self.requirements = requirements
    }

    /// Splits at commas that are not inside parentheses.
    private static func splitTerms(_ text: String) -> [String] {
        guard !text.trimmed.isEmpty else { return [] }
        var terms: [String] = []
        var current = ""
        var depth = 0
        for character in text {
            switch character {
            case "(": depth += 1; current.append(character)
            case ")": depth -= 1; current.append(character)
            case "," where depth == 0: terms.append(current); current = ""
            default: current.append(character)
            }
        }
        terms.append(current)
        return terms
    }

    private static func parseTerm(_ term: String, in text: String) throws(SelectorParseError) -> Requirement {
        func fail(_ reason: String) -> SelectorParseError { SelectorParseError(text: text, reason: "\(reason) in \"\(term)\"") }
        func key(_ raw: Substring) throws(SelectorParseError) -> String {
            let key = raw.trimmed
            guard isValidKey(key) else { throw fail("bad key \"\(key)\"") }
            return key
        }
        for (word, op) in [(" notin ", Requirement.Operator.notIn), (" in ", .in)] {
            if let range = term.range(of: word) {
                let rest = term[range.upperBound...].trimmed
                guard rest.hasPrefix("("), rest.hasSuffix(")") else { throw fail("expected (values)") }
                let values = rest.dropFirst().dropLast().split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmed }
                guard !values.isEmpty, !values.contains("") else { throw fail("empty value list") }
                return Requirement(try key(term[..<range.lowerBound]), op, values)
            }
        }
        if let range = term.range(of: "!=") {
            let value = term[range.upperBound...].trimmed
            guard !value.isEmpty else { throw fail("missing value") }
            return Requirement(try key(term[..<range.lowerBound]), .notIn, [value])
        }
        if let range = term.range(of: "==") ?? term.range(of: "=") {
            let value = term[range.upperBound...].trimmed
            guard !value.isEmpty else { throw fail("missing value") }
            return Requirement(try key(term[..<range.lowerBound]), .in, [value])
        }
        if term.hasPrefix("!") { return Requirement(try key(term.dropFirst()), .doesNotExist) }
        return Requirement(try key(Substring(term)), .exists)
    }
}

public struct SelectorParseError: Error, Hashable, CustomStringConvertible {
    public let text: String
    public let reason: String
    public var description: String { "selector \"\(text)\": \(reason)" }
}

extension StringProtocol {
    /// The first occurrence of `needle` (Core does without Foundation).
    func range(of needle: String) -> Range<Index>? {
        var index = startIndex
        while index < endIndex {
            if self[index...].hasPrefix(needle) {
                return index..<self.index(index, offsetBy: needle.count)
            }
            index = self.index(after: index)
        }
        return nil
    }
}
