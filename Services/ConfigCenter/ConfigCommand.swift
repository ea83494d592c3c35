import ArgumentParser
import Service

/// `sigma-config`: Sigma's config center: versioned config files and startup scripts, gray release and push.
@main
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-config",
        abstract: "Sigma's config center: versioned config files and startup scripts, gray release and push.")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let host = try ServiceHost(kind: .config, options: options)
        try await host.run(role: "replica")
    }
}
