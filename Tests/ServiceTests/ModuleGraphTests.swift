import Foundation
import Testing
import TestSupport

/// The module graph enforces who may touch what: only the four control-plane services link the store (and
/// with it libpq); the agent, sigmactl and the console are built from the client side (ClientKit, Hosting).
/// Read from Package.swift and the sources themselves, and from the built executables.
@Suite struct ModuleGraphTests {
    struct Target {
        let name: String
        let dependencies: [String]
        let path: String
    }

    /// Every target of Package.swift: its name, the modules it depends on (targets and products) and its folder.
    static func targets() throws -> [Target] {
        let manifest = try String(contentsOfFile: packageRoot.path + "/Package.swift", encoding: .utf8)
        var found: [Target] = []
        var rest = Substring(manifest)
        while let start = rest.range(of: #"\.(target|executableTarget|testTarget|systemLibrary)\("#, options: .regularExpression) {
            // The call runs to its balancing parenthesis.
            var depth = 0
            var end = start.upperBound
            for index in rest[start.lowerBound...].indices {
                if rest[index] == "(" { depth += 1 }
                if rest[index] == ")" { depth -= 1; if depth == 0 { end = rest.index(after: index); break } }
            }
            let call = String(rest[start.lowerBound..<end])
            rest = rest[end...]
            guard let name = firstCapture(#"name: "([^"]+)""#, in: call),
                  let path = firstCapture(#"path: "([^"]+)""#, in: call) else { continue }
            var dependencies: [String] = []
            if let list = firstCapture(#"dependencies: \[([^\]]*)\]"#, in: call) {
                let products = allCaptures(#"\.product\(name: "([^"]+)""#, in: list)
                let withoutProducts = list.replacingOccurrences(of: #"\.product\([^)]*\)"#, with: "", options: .regularExpression)
                dependencies = allCaptures(#""([^"]+)""#, in: withoutProducts) + products
            }
            found.append(Target(name: name, dependencies: dependencies, path: path))
        }
        return found
    }

    static func firstCapture(_ pattern: String, in text: String) -> String? { allCaptures(pattern, in: text).first }

    static func allCaptures(_ pattern: String, in text: String) -> [String] {
        let expression = try! NSRegularExpression(pattern: pattern)
        return expression.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { match in
            Range(match.range(at: 1), in: text).map { String(text[$0]) }
        }
    }

    /// The modules the Swift files under `path` import.
    static func imports(under path: String) -> Set<String> {
        var modules: Set<String> = []
        for file in CodeSizeTests.swiftFiles(in: [path], generated: true) {
            modules.formUnion(allCaptures(#"(?m)^(?:@[\w()]+ )*import (\w+)"#, in: file.text))
        }
        return modules
    }

    /// Every module a target links, directly or through the targets it depends on.
    static func closure(of name: String, in targets: [String: Target]) -> Set<String> {
        var seen: Set<String> = []
        var queue = [name]
        while let next = queue.popLast() {
            for dependency in targets[next]?.dependencies ?? [] where seen.insert(dependency).inserted {
                queue.append(dependency)
            }
        }
        return seen
    }

    @Test func theClientSideNeverLinksTheStore() throws {
        let targets = Dictionary(uniqueKeysWithValues: try Self.targets().map { ($0.name, $0) })
        #expect(targets.count > 20, "Package.swift was not read: \(targets.keys.sorted())")
        for client in ["NodeAgent", "sigmactl", "Console", "ClientKit", "Hosting", "NodeRuntime", "DiscoveryClient"] {
            let linked = Self.closure(of: client, in: targets)
            #expect(targets[client] != nil, "no target \(client)")
            #expect(!linked.contains("Store") && !linked.contains("CLibPQ") && !linked.contains("ControlPlane"),
                    "\(client) links \(linked.intersection(["Store", "CLibPQ", "ControlPlane"]).sorted())")
        }
        // And the control plane does, or this test would pass on a misread manifest.
        for service in ["Scheduler", "Allocator", "ConfigCenter", "Discovery"] {
            #expect(Self.closure(of: service, in: targets).contains("Store"), "\(service) does not link the store")
        }
    }

    /// Only RPC imports libzmq and only Store libpq (the benchmark's raw-libzmq baseline is the one exception).
    @Test func theCLibrariesHaveOneUserEach() throws {
        for target in try Self.targets() {
            let imported = Self.imports(under: target.path)
            if imported.contains("CZeroMQ") { #expect(["RPC", "SigmaBench"].contains(target.name), "\(target.name) imports CZeroMQ") }
            if imported.contains("CLibPQ") { #expect(target.name == "Store", "\(target.name) imports CLibPQ") }
        }
    }

    /// A dependency no file of the target imports is a dependency to drop (it costs build time and widens
    /// what the target could reach).
    @Test func everyDeclaredDependencyIsImported() throws {
        let targets = try Self.targets()
        #expect(targets.contains { $0.name == "RPCTests" })
        for target in targets where !target.dependencies.isEmpty {
            let imported = Self.imports(under: target.path)
            let unused = target.dependencies.filter { !imported.contains($0) }
            #expect(unused.isEmpty, "\(target.name) declares \(unused) and imports none of them")
        }
    }

    /// What the executables link, as the dynamic loader sees it.
    @Test func theAgentSigmactlAndTheConsoleDoNotLoadLibpq() throws {
        func libraries(_ executable: String) throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/ldd")
            process.arguments = [ServiceProcess.binDirectory + "/" + executable]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "ldd \(executable) failed")
            return String(decoding: data, as: UTF8.self)
        }
        for executable in ["sigma-agent", "sigmactl", "sigma-console", "sigma-monitor"] {
            let linked = try libraries(executable)
            #expect(linked.contains("libc.so"), "ldd \(executable) printed no libraries: \(linked)")
            #expect(!linked.contains("libpq"), "\(executable) loads libpq:\n\(linked)")
        }
        #expect(try libraries("sigma-scheduler").contains("libpq"), "the scheduler should load libpq; is ldd's output read right?")
    }
}
