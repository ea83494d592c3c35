import ArgumentParser
import Service

/// `sigma-scheduler`: Sigma's scheduler: nodes, apps, instances, placement, failure detection and migration.
@main
struct SchedulerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-scheduler",
        abstract: "Sigma's scheduler: nodes, apps, instances, placement, failure detection and migration.")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let host = try ServiceHost(kind: .scheduler, options: options)
        try await host.run(role: "active")
    }
}
