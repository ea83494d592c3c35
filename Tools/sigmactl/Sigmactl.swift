import ArgumentParser
import Foundation
import Logging
import RPC
import Service

/// `sigmactl`: the operator's command line, with kubectl habits.
@main
struct Sigmactl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigmactl",
        abstract: "Operate a Sigma cluster.",
        subcommands: [
            ApplyCommand.self, GetCommand.self, DescribeCommand.self, ScaleCommand.self, RolloutCommand.self, SetCommand.self,
            DeleteCommand.self, CordonCommand.self, UncordonCommand.self, DrainCommand.self, MigrateCommand.self, QuotaCommand.self,
            LogsCommand.self, DiscoverCommand.self, ConfigCommand.self,
            AllocCommand.self, HealthCommand.self, MetricsCommand.self, KeysCommand.self,
        ])
}

/// Where the services are: flags, then SIGMA_<SERVICE> variables, then ~/.sigma/config, then the defaults.
struct EndpointOptions: ParsableArguments {
    @Option(help: "Scheduler endpoints (comma-separated replicas). [SIGMA_SCHEDULER]") var scheduler: String?
    @Option(help: "Allocator endpoints. [SIGMA_ALLOCATOR]") var allocator: String?
    @Option(help: "Agent endpoints. [SIGMA_AGENT]") var agent: String?
    @Option(help: "Config center endpoints. [SIGMA_CONFIG]") var config: String?
    @Option(help: "Discovery endpoints. [SIGMA_DISCOVERY]") var discovery: String?
    @Option(help: "Per-call timeout in seconds.") var timeout: Double = 5
    @OptionGroup var keys: ClientOptions

    func endpoints(_ kind: ServiceKind) -> String {
        let flag: String? = switch kind {
        case .scheduler: scheduler
        case .allocator: allocator
        case .agent: agent
        case .config: config
        case .discovery: discovery
        }
        return flag ?? ServiceOptions.environment(kind.endpointVariable) ?? ConfigFile.load()[kind.rawValue]
            ?? kind.defaultEndpoint
    }

    /// A client for `kind`'s endpoints with the per-call timeout and CURVE keys given; its logs stay quiet
    /// (sigmactl reports errors itself).
    func client(_ kind: ServiceKind) throws -> RPCClient {
        var logger = Logger(label: "sigmactl")
        logger.logLevel = .critical
        return try keys.client(endpoints: endpoints(kind), timeout: .milliseconds(Int(timeout * 1000)), logger: logger)
    }
}

/// `~/.sigma/config`: `key = value` lines, e.g. `scheduler = tcp://10.0.0.1:7101,tcp://10.0.0.2:7101`.
enum ConfigFile {
    static func load() -> [String: String] {
        let path = (ServiceOptions.environment("HOME") ?? "/root") + "/.sigma/config"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
        var values: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 { values[parts[0]] = parts[1] }
        }
        return values
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, wide, json
}

/// Prints rows as columns aligned under their headers.
func printTable(_ header: [String], _ rows: [[String]]) {
    let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
    for row in [header] + rows {
        let cells = row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }
        print(cells.joined(separator: "   "))
    }
}

func printJSON(_ value: Any) throws {
    let data = try JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}
