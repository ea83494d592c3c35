import Foundation
import Testing
import TestSupport

/// Every verb's help ends in an "Examples:" block (Tools/sigmactl/Examples.swift): each line shorter than the 80
/// columns help wraps at, each example a command line the parser accepts as it stands.
@Suite struct SigmactlHelpTests {
    static let sigmactl = ServiceProcess.binDirectory + "/sigmactl"

    /// The subcommands a help text lists (the names in its SUBCOMMANDS section).
    static func subcommands(_ help: String) -> [String] {
        guard let section = help.components(separatedBy: "SUBCOMMANDS:\n").dropFirst().first else { return [] }
        return section.components(separatedBy: "\n\n")[0].split(separator: "\n").compactMap { line in
            guard line.hasPrefix("  "), !line.hasPrefix("   ") else { return nil }
            return line.split(separator: " ").first.map(String.init)
        }
    }

    /// The verbs sigmactl has, as paths ("get", "config publish"), found from its help.
    static func verbs(_ path: [String] = []) async throws -> [[String]] {
        let help = try await runProgram(sigmactl, path + ["--help"])
        let below = subcommands(help)
        if below.isEmpty { return [path] }
        var found: [[String]] = []
        for name in below { found += try await verbs(path + [name]) }
        return found
    }

    /// The examples of a help text, continuation lines (after a trailing backslash) joined, comments cut.
    static func examples(_ help: String) throws -> [String] {
        let block = try #require(help.components(separatedBy: "\nExamples:\n").dropFirst().first, "no Examples block")
        var examples: [String] = []
        var continues = false
        for line in block.components(separatedBy: "\n\n")[0].split(separator: "\n").map(String.init) {
            #expect(line.count < 80, "as long as help's 80 columns, where it wraps: \(line)")
            #expect(line.hasPrefix(continues ? "      " : "  sigmactl "), "not an example (a wrapped line?): \(line)")
            let text = line.components(separatedBy: " # ")[0].trimmingCharacters(in: .whitespaces)
            if continues { examples[examples.count - 1] += " " + text } else { examples.append(text) }
            continues = text.hasSuffix("\\")
            if continues { examples[examples.count - 1].removeLast() }
        }
        return examples
    }

    /// An example's words, with "double quotes" holding spaces.
    static func words(_ command: String) -> [String] {
        var words: [String] = [], current = "", quoted = false, started = false
        for character in command {
            if character == "\"" { quoted.toggle(); started = true } else if character == " " && !quoted {
                if started { words.append(current) }
                (current, started) = ("", false)
            } else { current.append(character); started = true }
        }
        if started { words.append(current) }
        return words
    }

    @Test func everyVerbHasExamplesThatParse() async throws {
        // The contexts the examples name exist, in a home of the test's own.
        let home = NSTemporaryDirectory() + "sigma-help-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: home) }
        for context in ["prod", "staging"] {
            _ = try await runProgram("/usr/bin/env", ["HOME=\(home)", Self.sigmactl, "config", "set-context", context, "--scheduler", "127.0.0.1:1"])
        }
        let verbs = try await Self.verbs()
        #expect(verbs.count >= 55, "\(verbs)")
        #expect(verbs.contains(["config", "publish"]) && verbs.contains(["get"]))
        for verb in verbs {
            let help = try await runProgram(Self.sigmactl, verb + ["--help"])
            let examples = try Self.examples(help)
            let name = (["sigmactl"] + verb).joined(separator: " ")
            #expect(examples.contains { $0.hasPrefix(name + " ") || $0 == name }, "\(name): no example of it")
            for example in examples {
                for command in example.components(separatedBy: " | ") {
                    let words = Self.words(command)
                    guard words.first == "sigmactl" else { continue }
                    let parsed = try await runProgramStatus(
                        "/usr/bin/env", ["HOME=\(home)", "SIGMACTL_PARSE_ONLY=1", Self.sigmactl] + words.dropFirst())
                    #expect(parsed.status == 0, "\(name): \(command) does not parse: \(parsed.output)")
                }
            }
        }
    }
}
