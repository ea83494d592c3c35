import Foundation
import Testing
import TestSupport

/// A newcomer reads a file at a sitting and a function on a screen: no source file outside the tests and the
/// generated code is over 400 lines, and no function over 60. The functions still over 60 are listed with
/// their length today; each may only shrink, and leaves the list once it is 60 or less (the test says so).
@Suite struct CodeSizeTests {
    static let folders = ["Shared", "Services", "Tools", "Benchmarks"]
    static let maxFileLines = 400
    static let maxFunctionLines = 60
    /// "path: first line of the declaration" → its length when it was listed. Shrink these; add none.
    static let longFunctions: [String: Int] = [
        "Benchmarks/sigma-bench/NetBench.swift: func measure() async throws -> Report {": 120,
        "Benchmarks/sigma-bench/BindBench.swift: func measure(nodes: Int, benchURL: String, logger: Logger) async throws -> Report {": 107,
        "Benchmarks/sigma-bench/ConfigBench.swift: func measure(url: String, logger: Logger) async throws -> Report {": 87,
        "Benchmarks/sigma-bench/AllocBench.swift: func measure(benchURL: String, logger: Logger) async throws -> Report {": 79,
        // An nft script literal, mostly.
        "Services/NodeAgent/Runtime/HostPorts.swift: private func makeTables() async throws {": 78,
        "Benchmarks/sigma-bench/DiscoveryBench.swift: func measure(url: String, logger: Logger) async throws -> Report {": 64,
    ]

    /// Every Swift file under `folders`, as its path from the package root and its text; the generated code
    /// only when asked. The source scans of CommentReferenceTests, TableOwnershipTests and ModuleGraphTests read
    /// through this too.
    static func swiftFiles(in folders: [String] = folders, generated: Bool = false) -> [(path: String, text: String)] {
        var found: [(String, String)] = []
        for folder in folders {
            let root = packageRoot.path + "/" + folder
            guard let walker = FileManager.default.enumerator(atPath: root) else { continue }
            for case let file as String in walker where file.hasSuffix(".swift") && (generated || !file.contains("Generated/")) {
                guard let text = try? String(contentsOfFile: root + "/" + file, encoding: .utf8) else { continue }
                found.append((folder + "/" + file, text))
            }
        }
        return found.sorted { $0.0 < $1.0 }
    }

    static func sources() -> [(path: String, lines: [Substring])] {
        swiftFiles().map { ($0.path, $0.text.split(separator: "\n", omittingEmptySubsequences: false)) }
    }

    /// Each function (`func`, `init`) of a file with its length in lines, from its declaration to the brace
    /// that closes its body; braces in string literals that balance do not matter.
    static func functions(_ lines: [Substring]) -> [(declaration: String, lines: Int)] {
        let declaration = try! NSRegularExpression(
            pattern: #"^\s*(@\w+(\([^)]*\))?\s+)*((public|private|fileprivate|internal|package|static|override|mutating|nonisolated|final|class|convenience|required)\s+)*(func\s|init[?(<])"#)
        var found: [(String, Int)] = []
        var index = 0
        while index < lines.count {
            let line = String(lines[index])
            guard declaration.firstMatch(in: line, range: NSRange(line.startIndex..., in: line)) != nil,
                  lines[index..<min(lines.count, index + 6)].contains(where: { $0.contains("{") }) else {
                index += 1
                continue
            }
            var depth = 0, opened = false, end = index
            scan: while end < lines.count {
                for character in lines[end] {
                    if character == "{" { depth += 1; opened = true }
                    if character == "}" { depth -= 1 }
                    if opened && depth <= 0 { break scan }
                }
                end += 1
            }
            found.append((line.trimmingCharacters(in: .whitespaces), end - index + 1))
            index = end + 1
        }
        return found
    }

    @Test func noSourceFileIsOver400Lines() {
        let sources = Self.sources()
        #expect(sources.count > 100, "sources not found under \(packageRoot.path)")
        for source in sources {
            #expect(source.lines.count <= Self.maxFileLines + 1, "\(source.path) has \(source.lines.count) lines; split it")
        }
    }

    @Test func noFunctionIsOver60LinesAndTheListedOnesOnlyShrink() {
        var seen: Set<String> = []
        var measured = 0
        for source in Self.sources() {
            // Functions declared alike in one file (two commands' `run`) count as their longest.
            var longest: [String: Int] = [:]
            for function in Self.functions(source.lines) {
                measured += 1
                let key = "\(source.path): \(function.declaration)"
                longest[key] = max(longest[key] ?? 0, function.lines)
            }
            for (key, lines) in longest.sorted(by: { $0.key < $1.key }) {
                let function = (declaration: key, lines: lines)
                seen.insert(key)
                guard function.lines > Self.maxFunctionLines else {
                    #expect(Self.longFunctions[key] == nil, "\(key) is \(function.lines) lines now: take it off the list")
                    continue
                }
                guard let listed = Self.longFunctions[key] else {
                    Issue.record("\(key) is \(function.lines) lines (at most \(Self.maxFunctionLines)): split it")
                    continue
                }
                #expect(function.lines <= listed, "\(key) grew from \(listed) to \(function.lines) lines")
            }
        }
        #expect(measured > 500, "only \(measured) functions found")
        for key in Set(Self.longFunctions.keys).subtracting(seen) {
            #expect(Self.longFunctions[key] == nil, "\(key) is listed but no longer found: take it off the list")
        }
    }
}
