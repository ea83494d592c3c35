import Foundation
import Testing
import TestSupport

/// docs/protocol.md is enough to call Sigma from another language: every example of its last section is run,
/// in order, with `docs/examples/sigma_call.py` (pyzmq and protobuf only) against a real control plane, and
/// the reply it shows must be contained in the real one.
@Suite struct ProtocolExamplesTests {
    struct Example {
        let command: String
        let expected: Any
        let line: Int
    }

    /// The `$ docs/examples/sigma_call.py ...` lines of the section and the reply line after each.
    static func examples() throws -> [Example] {
        let document = try String(contentsOfFile: packageRoot.path + "/docs/protocol.md", encoding: .utf8)
        let lines = document.components(separatedBy: "\n")
        guard let section = lines.firstIndex(where: { $0.hasPrefix("## Examples, as `docs/examples/sigma_call.py`") }) else {
            throw TestSetupError("docs/protocol.md has no examples section")
        }
        var examples: [Example] = []
        var index = section
        while index < lines.count - 1 {
            defer { index += 1 }
            guard lines[index].hasPrefix("$ docs/examples/sigma_call.py ") else { continue }
            let reply = try JSONSerialization.jsonObject(with: Data(lines[index + 1].utf8))
            examples.append(Example(command: String(lines[index].dropFirst(2)), expected: reply, line: index + 1))
        }
        return examples
    }

    /// Whether `expected` is contained in `actual`: an object's keys a subset with contained values, a list
    /// item by item, anything else equal.
    static func contains(_ actual: Any?, _ expected: Any) -> Bool {
        switch expected {
        case let object as [String: Any]:
            guard let actual = actual as? [String: Any] else { return false }
            return object.allSatisfy { key, value in contains(actual[key], value) }
        case let list as [Any]:
            guard let actual = actual as? [Any], actual.count >= list.count else { return false }
            return zip(actual, list).allSatisfy { contains($0, $1) }
        default:
            guard let actual else { return false }
            return json(actual) == json(expected)
        }
    }

    /// A scalar as JSON text: "web", 1, true.
    static func json(_ value: Any) -> String? {
        (try? JSONSerialization.data(withJSONObject: [value])).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func everyExampleOfTheProtocolDocumentAnswersAsShown() async throws {
        let examples = try Self.examples()
        #expect(examples.count >= 15, "\(examples.count) examples")
        try await SchedulerCluster.with(discoveries: 1, configs: 1) { cluster in
            let variables = [
                "SCHEDULER": cluster.endpoints[0], "CONFIG": cluster.configEndpoints[0],
                "DISCOVERY": cluster.discoveryEndpoints[0], "ALLOCATOR": cluster.allocatorEndpoint,
            ]
            // Debian's python3 (with python3-zmq and python3-protobuf) first, as a user's shell would find it.
            let prelude = "cd '\(packageRoot.path)' && export PATH=/usr/bin:$PATH "
                + variables.map { "\($0.key)='\($0.value)'" }.sorted().joined(separator: " ") + " && "
            for example in examples {
                // Discovery follows the database within about a second (docs/protocol.md): a Resolve is asked
                // again until it answers as shown, for at most 10 s.
                let deadline = ContinuousClock.now + .seconds(example.command.contains(" Resolve ") ? 10 : 0)
                var output = ""
                while true {
                    let (status, printed) = try await runProgramStatus("/bin/sh", ["-c", prelude + example.command])
                    output = printed
                    let reply = status == 0 ? try? JSONSerialization.jsonObject(with: Data(printed.utf8)) : nil
                    if Self.contains(reply, example.expected) || ContinuousClock.now >= deadline { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                let reply = try? JSONSerialization.jsonObject(with: Data(output.utf8))
                #expect(Self.contains(reply, example.expected), "docs/protocol.md:\(example.line): \(example.command)\n  answered \(output)")
            }
        }
    }
}
