import ArgumentParser
import Foundation
import Logging
import Protocol
import RPC
import ClientKit
import Yams

/// `sigmactl`: the operator's command line, with kubectl habits.
@main
struct Sigmactl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigmactl",
        abstract: "Operate a Sigma cluster.",
        subcommands: [
            ApplyCommand.self, DiffCommand.self, GetCommand.self, DescribeCommand.self, ScaleCommand.self, RolloutCommand.self, SetCommand.self,
            DeleteCommand.self, CordonCommand.self, UncordonCommand.self, DrainCommand.self, MigrateCommand.self, RestartCommand.self, QuotaCommand.self, PolicyCommand.self,
            LogsCommand.self, DiscoverCommand.self, ConfigCommand.self,
            AllocCommand.self, HealthCommand.self, MetricsCommand.self, KeysCommand.self, AccessCommand.self, AuditCommand.self,
            VersionCommand.self, TopCommand.self, RecommendCommand.self,
        ])

    /// `--context NAME` may come before the verb too (`sigmactl --context prod get apps`, as kubectl takes it):
    /// there it is moved behind the verbs, where every verb that calls a service reads it.
    static func globalFlagsMoved(_ arguments: [String]) -> [String] {
        var rest = arguments, moved: [String] = []
        while let first = rest.first, first.hasPrefix("--context") {
            if first == "--context", rest.count >= 2 {
                moved += rest.prefix(2)
                rest.removeFirst(2)
            } else if first.hasPrefix("--context=") {
                moved.append(rest.removeFirst())
            } else {
                break
            }
        }
        return rest + moved
    }

    /// ArgumentParser's runner, but misuse (an unknown flag, a missing argument, a bad value) exits 2 as
    /// README.md says, with the verb's usage (ArgumentParser's own code for it is 64). With SIGMACTL_PARSE_ONLY
    /// set, a command line is only parsed and validated, and the verb's type printed (the help examples' test).
    static func main() async {
        var parsed: ParsableCommand
        do {
            parsed = try await asyncParseAsRoot(Self.globalFlagsMoved(Array(CommandLine.arguments.dropFirst())))
        } catch {
            guard exitCode(for: error) == .validationFailure else { exit(withError: error) }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(2)
        }
        if ProcessInfo.processInfo.environment["SIGMACTL_PARSE_ONLY"] != nil { return print(String(reflecting: type(of: parsed))) }
        do {
            if var verb = parsed as? AsyncParsableCommand { try await verb.run() } else { try parsed.run() }
        } catch {
            guard exitCode(for: error) == .validationFailure else { exit(withError: error) }
            // A mistake found while running (a context that isn't there): the verb's usage, as for one found parsing.
            let usage = usageString(for: type(of: parsed))
            let verb = usage.split(separator: " ").prefix { !"<[-".contains($0.first ?? "-") }.joined(separator: " ")
            FileHandle.standardError.write(Data("Error: \(error)\nUsage: \(usage)\n  See '\(verb) --help' for more information.\n".utf8))
            Foundation.exit(2)
        }
    }
}

/// `sigmactl version`: this client's version and each service's (from its Health answer).
struct VersionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "version", abstract: "Show sigmactl's version and each service's.",
        discussion: Examples.discussion("version"))
    @Flag(help: "Only sigmactl's own.") var client = false
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        print("sigmactl \(sigmaVersion) (protocol \(sigmaProtocolVersion))")
        guard !client else { return }
        for kind in ServiceKind.allCases where kind != .agent {
            let version: String
            do {
                version = try await endpoints.client(kind).call(CommonMethods.health, .init()).version
            } catch let error as RPCError {
                version = "unreachable (\(error.code): \(error.message))"
            }
            print("\(kind.rawValue) \(version)")
        }
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, wide, json, yaml

    /// JSON or YAML: the same document, for scripts.
    var isStructured: Bool { self == .json || self == .yaml }
}

/// Prints rows as columns aligned under their headers (colour codes take no width).
func printTable(_ header: [String], _ rows: [[String]]) {
    let widths = header.indices.map { column in ([header] + rows).map { visibleWidth($0[column]) }.max() ?? 0 }
    for row in [header] + rows {
        let cells = row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell + String(repeating: " ", count: max(0, widths[index] - visibleWidth(cell)))
        }
        print(cells.joined(separator: "   "))
    }
}

/// A limit as tables show it: its quantity, or "none" for 0 (unlimited).
func limitText(_ value: Int64, _ format: (Int64) -> String) -> String { value > 0 ? format(value) : "none" }

func visibleWidth(_ text: String) -> Int {
    var width = 0, inEscape = false
    for character in text {
        if inEscape { if character == "m" { inEscape = false }; continue }
        if character == "\u{1B}" { inEscape = true; continue }
        width += 1
    }
    return width
}

/// Colour only on a terminal (and never with NO_COLOR set or TERM=dumb): states green, yellow or red.
let colourful: Bool = isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
    && ProcessInfo.processInfo.environment["TERM"] != "dumb"

func coloured(_ state: String) -> String {
    guard colourful else { return state }
    let code: String
    switch state.split(separator: ",").first.map(String.init) ?? state {
    case "Running", "Ready", "HEALTHY", "Succeeded": code = "32"
    case "Pending", "Scheduled", "Starting", "Suspect", "NeedMigration", "Terminating", "UNHEALTHY": code = "33"
    case "BackOff", "Failed", "OOMKilled", "Killed", "Broken", "UNREACHABLE": code = "31"
    default: return state
    }
    return "\u{1B}[\(code)m\(state)\u{1B}[0m"
}

/// Prints a JSON-shaped value (dictionaries, arrays, strings, numbers) as JSON or as YAML.
func printJSON(_ value: Any, as format: OutputFormat = .json) throws {
    if format == .yaml { return print(try Yams.serialize(node: yamlNode(value)), terminator: "") }
    let data = try JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

/// The boolean a JSONSerialization value holds, if it is one (it hands booleans over as numbers, told apart only
/// by their type code).
func jsonBool(_ value: Any) -> Bool? {
    guard let number = value as? NSNumber, String(cString: number.objCType) == "c" else { return nil }
    return number.boolValue
}

/// The YAML node of a value JSONSerialization made: keys sorted, booleans and numbers as plain scalars.
func yamlNode(_ value: Any) -> Yams.Node {
    switch value {
    case let dictionary as [String: Any]:
        return .mapping(.init(dictionary.sorted { $0.key < $1.key }.map { (Yams.Node($0.key), yamlNode($0.value)) }))
    case let array as [Any]:
        return .sequence(.init(array.map(yamlNode)))
    case let number as NSNumber:
        if let flag = jsonBool(number) { return Yams.Node(flag ? "true" : "false", Tag(.bool)) }
        return Yams.Node(number.stringValue, Tag(.float))
    case let string as String:
        return Yams.Node(string, Tag(.str), .plain)
    case is NSNull:
        return Yams.Node("null", Tag(.null))
    default:
        return Yams.Node("\(value)")
    }
}
