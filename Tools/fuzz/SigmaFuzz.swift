import ArgumentParser
import Foundation
import Fuzzing

/// `sigma-fuzz`: hostile requests against running services (`make fuzz` runs it against every one).
@main
struct SigmaFuzz: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-fuzz",
        abstract: "Send seeded hostile requests to Sigma services; every one must get a typed answer, none INTERNAL.")

    @Argument(help: "Endpoints to fuzz, e.g. tcp://127.0.0.1:7101.") var endpoints: [String]
    @Option(help: "Inputs per endpoint.") var count = 1_000_000
    @Option(help: "Seed (the same seed sends the same inputs).") var seed: UInt64 = 1

    func run() async throws {
        var failed = false
        for endpoint in endpoints {
            let started = ContinuousClock.now
            let report = try await fuzzService(endpoint: endpoint, seed: seed, count: count) { done in
                if done > 0 { FileHandle.standardError.write(Data("\(endpoint): \(done) sent\n".utf8)) }
            }
            let seconds = Double((ContinuousClock.now - started).components.seconds)
            let statuses = report.statuses.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            print("\(endpoint): \(report.sent) inputs in \(Int(seconds)) s, \(report.problems.count) problems; answers: \(statuses)")
            for problem in report.problems.prefix(20) { print("  \(problem)") }
            failed = failed || !report.problems.isEmpty
        }
        if failed { throw ExitCode(1) }
    }
}
