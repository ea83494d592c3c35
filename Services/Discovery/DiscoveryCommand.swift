import ArgumentParser
import Service

/// `sigma-discovery`: Sigma's discovery: the endpoints of each app, with a blocking watch, served from memory.
@main
struct DiscoveryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-discovery",
        abstract: "Sigma's discovery: the endpoints of each app, with a blocking watch, served from memory.")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let host = try ServiceHost(kind: .discovery, options: options)
        try await host.run(role: "replica")
    }
}
