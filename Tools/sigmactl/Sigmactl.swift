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
