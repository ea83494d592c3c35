import Foundation
import Testing
import TestSupport

/// docker-compose/: no Docker engine runs here, so the compose file is validated against the Compose
/// Specification's JSON schema and its commands against the built executables' own --help.
@Suite struct ComposeTests {
    static let folder = packageRoot.path + "/docker-compose"

    static func check(_ compose: String) async throws -> (status: Int32, output: String) {
        try await runProgramStatus("/usr/bin/python3", [folder + "/check.py", "--bin", ServiceProcess.binDirectory, compose])
    }

    @Test func theComposeFileIsValidAndNamesRealExecutablesAndFlags() async throws {
        let result = try await Self.check(Self.folder + "/docker-compose.yml")
        #expect(result.status == 0, "\(result.output)")
        // Each service on its own, two Discovery replicas, the agent privileged on the host's network.
        let text = try String(contentsOfFile: Self.folder + "/docker-compose.yml", encoding: .utf8)
        for service in ["postgres:", "allocator:", "scheduler:", "config:", "discovery-1:", "discovery-2:", "agent:"] {
            #expect(text.contains("\n  \(service)\n"), "\(service)")
        }
        #expect(text.contains("privileged: true") && text.contains("network_mode: host"))
    }

    @Test func aBrokenComposeFileIsRefusedNamingEachProblem() async throws {
        var text = try String(contentsOfFile: Self.folder + "/docker-compose.yml", encoding: .utf8)
        text = text.replacingOccurrences(of: "      - --allocator\n", with: "      - --no-such-flag\n      - --allocator\n")
        text = text.replacingOccurrences(of: "    privileged: true\n", with: "    privileged: true\n    privilegd: true\n")
        text = text.replacingOccurrences(of: "command: [sigma-allocator,", with: "command: [sigma-nope,")
        let path = NSTemporaryDirectory() + "sigma-compose-\(UUID().uuidString.prefix(8)).yml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await Self.check(path)
        #expect(result.status == 1)
        #expect(result.output.contains("sigma-scheduler has no flag --no-such-flag"), "\(result.output)")
        #expect(result.output.contains("privilegd"), "\(result.output)")
        #expect(result.output.contains("sigma-nope is not an executable the build makes"), "\(result.output)")
    }
}
