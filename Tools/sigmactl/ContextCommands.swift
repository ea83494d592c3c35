import ArgumentParser
import ClientKit
import Foundation

/// Contexts of ~/.sigma/config: one per cluster (docs/operations.md, "sigmactl and several clusters").
extension ConfigCommand {
    struct UseContext: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "use-context", abstract: "Make a context of ~/.sigma/config the current one.",
            discussion: Examples.discussion(
                "config use-context", "--context NAME (before or after the verb) or SIGMA_CONTEXT=NAME choose another for one call."))
        @Argument(help: "Context name.") var name: String
        func run() async throws {
            try ConfigFile.check(context: name)
            try ConfigFile.setCurrent(name)
            print("current context: \(name)")
        }
    }

    struct CurrentContext: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "current-context", abstract: "Print the current context.",
            discussion: Examples.discussion("config current-context"))
        func run() async throws {
            guard let current = ConfigFile.read().current else { throw ValidationError("no current context in \(ConfigFile.path)") }
            print(current)
        }
    }

    struct GetContexts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "get-contexts", abstract: "List the contexts of ~/.sigma/config; the current one is marked *.",
            discussion: Examples.discussion("config get-contexts"))
        func run() async throws {
            let contents = ConfigFile.read()
            printTable(["CURRENT", "NAME", "SCHEDULER"], contents.names.map { name in
                [contents.current == name ? "*" : "", name, contents.contexts[name]?["scheduler"] ?? contents.top["scheduler"] ?? ""]
            })
        }
    }

    struct SetContext: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-context", abstract: "Write a context of ~/.sigma/config: where one cluster's services are, its keys.",
            discussion: Examples.discussion(
                "config set-context", "A context replaces one of the same name; keys it leaves out come from the file's top-level lines."))
        @Argument(help: "Context name.") var name: String
        @Option(help: "Scheduler endpoints.") var scheduler: String?
        @Option(help: "Allocator endpoints.") var allocator: String?
        @Option(help: "Config center endpoints.") var config: String?
        @Option(help: "Discovery endpoints.") var discovery: String?
        @Option(help: "Agent endpoints.") var agent: String?
        @Option(help: "This client's CURVE key pair (file).") var clientKey: String?
        @Option(help: "The servers' public key (file or Z85 text).") var serverKey: String?
        @Flag(help: "Make it the current context too.") var use = false

        func validate() throws {
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                throw ValidationError("\"\(name)\" is not a context name (letters, digits, '-', '_', '.')")
            }
            for case let value? in [scheduler, allocator, config, discovery, agent] { _ = try EndpointList.parse(value) }
        }

        func run() async throws {
            let values = [("scheduler", scheduler), ("allocator", allocator), ("config", config), ("discovery", discovery), ("agent", agent),
                          ("client-key", clientKey), ("server-key", serverKey)].compactMap { key, value in value.map { (key, $0) } }
            try ConfigFile.setContext(name, values)
            if use { try ConfigFile.setCurrent(name) }
            print("context \(name) written to \(ConfigFile.path)\(use ? "; it is the current one" : "")")
        }
    }
}
