import ArgumentParser
import Logging
import Protocol
import RPC
import Service

/// `sigma-agent`: runs on every server. It never touches PostgreSQL; it talks to the scheduler.
@main
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-agent",
        abstract: "Sigma's node agent: runs this server's instances and reports to the scheduler.")

    @OptionGroup var options: ServiceOptions
    @OptionGroup var client: ClientOptions

    @Option(help: "Scheduler endpoints, comma-separated. [SIGMA_SCHEDULER]")
    var scheduler: String?

    func run() async throws {
        let host = try ServiceHost(kind: .agent, options: options)
        let endpoints = scheduler ?? ServiceOptions.environment(ServiceKind.scheduler.endpointVariable)
            ?? ServiceKind.scheduler.defaultEndpoint
        let schedulerClient = try client.client(endpoints: endpoints, timeout: .seconds(2), logger: host.logger)
        let reachScheduler = HealthCheck(name: "scheduler") {
            do {
                let answer = try await schedulerClient.call(CommonMethods.health, .init(), timeout: .seconds(1))
                return (true, "\(endpoints) (\(answer.role), \(answer.version))")
            } catch {
                return (false, "\(endpoints): \(error)")
            }
        }
        try await host.run(checks: [reachScheduler], role: "agent")
    }
}
