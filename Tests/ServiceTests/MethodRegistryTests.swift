import Foundation
import Fuzzing
import Protocol
import ClientKit
import ControlPlane
import Hosting
import Testing
import TestSupport

/// The methods of each service are declared once (Shared/Protocol/Status.swift) and listed in that enum's
/// `all`; from it the fuzzer picks what it sends, and against it the access rules and docs/protocol.md are
/// checked. A method added without the rest fails here.
@Suite struct MethodRegistryTests {
    static let registries: [(name: String, all: [String], served: [ServiceKind])] = [
        ("CommonMethods", CommonMethods.all, [.scheduler, .allocator, .config, .discovery]),
        ("AllocatorMethods", AllocatorMethods.all, [.allocator]),
        ("SchedulerMethods", SchedulerMethods.all, [.scheduler]),
        ("DiscoveryMethods", DiscoveryMethods.all, [.discovery]),
        ("ConfigMethods", ConfigMethods.all, [.config]),
        // The agent admits its --curve-allow keys alone (operators); it has no per-method policy.
        ("AgentMethods", AgentMethods.all, []),
        ("AccessMethods", AccessMethods.all, [.scheduler]),
    ]

    /// The names each `enum …Methods` of Status.swift declares, read from the source itself.
    static func declared() throws -> [String: [String]] {
        let source = try String(contentsOfFile: packageRoot.path + "/Shared/Protocol/Status.swift", encoding: .utf8)
        var found: [String: [String]] = [:]
        var current: String?
        for line in source.split(separator: "\n", omittingEmptySubsequences: false) {
            if let range = line.range(of: #"public enum (\w+Methods) \{"#, options: .regularExpression) {
                current = String(line[range].dropFirst("public enum ".count).dropLast(2))
                continue
            }
            if line == "}" { current = nil }
            guard let current else { continue }
            // A declaration may wrap: the name is the first string literal after `RPCMethod<` on this line or the next.
            if line.contains("RPCMethod<"), let name = line.range(of: #"\("(\w+)""#, options: .regularExpression) {
                found[current, default: []].append(String(line[name].dropFirst(2).dropLast()))
            } else if line.contains("RPCMethod<") {
                found[current, default: []].append("")  // filled from the next line
            } else if found[current]?.last == "", let name = line.range(of: #""(\w+)""#, options: .regularExpression) {
                found[current]![found[current]!.count - 1] = String(line[name].dropFirst().dropLast())
            }
        }
        return found
    }

    @Test func everyDeclaredMethodIsInItsEnumsList() throws {
        let declared = try Self.declared()
        #expect(Set(declared.keys) == Set(Self.registries.map(\.name)), "an enum of methods with no registry here")
        for registry in Self.registries {
            let names = declared[registry.name] ?? []
            #expect(!names.contains(""), "\(registry.name): a declaration whose name was not read")
            #expect(names == registry.all, "\(registry.name).all differs from its declarations: \(Set(names).symmetricDifference(registry.all))")
        }
    }

    @Test func everyMethodHasAnAccessRuleIsFuzzedAndDocumented() throws {
        let protocolDoc = try String(contentsOfFile: packageRoot.path + "/docs/protocol.md", encoding: .utf8)
        for registry in Self.registries {
            for method in registry.all {
                #expect(FrameFuzzer.knownMethods.contains(method), "\(method) is never fuzzed")
                #expect(protocolDoc.contains("`\(method)`"), "\(method) is not in docs/protocol.md")
                for kind in registry.served {
                    #expect(AccessPolicy.of(kind).names(method), "\(kind.rawValue) has no access rule for \(method)")
                }
            }
        }
        #expect(Set(FrameFuzzer.knownMethods).count == FrameFuzzer.knownMethods.count, "a method name twice")
    }
}
