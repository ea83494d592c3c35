import ArgumentParser
import Service

/// `sigma-allocator`: Sigma's allocator: instance IPs, host ports and SSDs, each exactly once.
@main
struct AllocatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-allocator",
        abstract: "Sigma's allocator: instance IPs, host ports and SSDs, each exactly once.")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let host = try ServiceHost(kind: .allocator, options: options)
        try await host.run(role: "replica")
    }
}
