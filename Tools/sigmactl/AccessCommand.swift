import ArgumentParser
import Foundation
import Protocol
import RPC
import ClientKit

/// `sigmactl access add|remove|list`: the principals every control-plane service admits, by CURVE key.
struct AccessCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "access", abstract: "Admit or revoke operators, services and agents by their CURVE key.",
        subcommands: [Add.self, Remove.self, List.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Admit a key (in force at every service within about a second); again to change its role.",
            discussion: Examples.discussion("access add"))
        @Argument(help: "The key: a .pub or .key file from `sigmactl keys generate`, or the Z85 text.") var key: String
        @Option(help: "operator, service or agent.") var role: String
        @Option(help: "Its name in the audit log (default: the key file's name).") var name: String?
        @Option(help: "The node an agent speaks for (agents only).") var node: String = ""
        @OptionGroup var endpoints: EndpointOptions

        func run() async throws {
            var request = Sigma_V1_AddPrincipalRequest()
            request.principal.publicKey = try CurveKeyFile.publicKey(fileOrKey: key)
            guard let label = name ?? (FileManager.default.fileExists(atPath: key)
                ? URL(fileURLWithPath: key).deletingPathExtension().lastPathComponent : nil)
            else { throw ValidationError("--name is needed when the key is given as text") }
            request.principal.name = label
            request.principal.role = role
            request.principal.node = node
            let answer = try await endpoints.client(.scheduler).call(AccessMethods.addPrincipal, request)
            let principal = answer.principal
            print("\(principal.role)/\(principal.name) \(answer.changed ? "admitted" : "unchanged")"
                + (principal.node.isEmpty ? "" : " (node \(principal.node))"))
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a key by its name or key (refused at every service within about a second).",
            discussion: Examples.discussion("access remove"))
        @Argument(help: "Name, Z85 key, or key file.") var nameOrKey: String
        @OptionGroup var endpoints: EndpointOptions

        func run() async throws {
            var request = Sigma_V1_RemovePrincipalRequest()
            request.nameOrKey = FileManager.default.fileExists(atPath: nameOrKey)
                ? try CurveKeyFile.publicKey(fileOrKey: nameOrKey) : nameOrKey
            let answer = try await endpoints.client(.scheduler).call(AccessMethods.removePrincipal, request)
            print(answer.removed ? "\(nameOrKey) revoked" : answer.message)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the admitted keys.",
            discussion: Examples.discussion("access list"))
        @Option(name: .shortAndLong, help: "table, json or yaml.") var output: OutputFormat = .table
        @OptionGroup var endpoints: EndpointOptions

        func run() async throws {
            let principals = try await endpoints.client(.scheduler).call(AccessMethods.listPrincipals, .init()).principals
            if output.isStructured { return try printMessages(principals, as: output) }
            printTable(["NAME", "ROLE", "NODE", "KEY", "ADDED"], principals.map {
                [$0.name, $0.role, $0.node.isEmpty ? "-" : $0.node, $0.publicKey, timestamp($0.addedAtUnixMs)]
            })
        }
    }
}

/// `sigmactl audit`: who called which write method, when, and how it ended (newest first).
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Show the audit log: write calls and refused calls, newest first.",
        discussion: Examples.discussion("audit"))
    @Option(help: "Only calls by this caller (a principal's name, or instance/<id>).") var caller: String = ""
    @Option(help: "Only this method, e.g. ApplyApp.") var method: String = ""
    @Option(help: "At most this many entries.") var limit: UInt32 = 50
    @Option(name: .shortAndLong, help: "table, json or yaml.") var output: OutputFormat = .table
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        var request = Sigma_V1_ListAuditRequest()
        request.caller = caller
        request.method = method
        request.limit = limit
        let entries = try await endpoints.client(.scheduler).call(AccessMethods.listAudit, request).entries
        if output.isStructured { return try printMessages(entries, as: output) }
        printTable(["TIME", "SERVICE", "METHOD", "CALLER", "ROLE", "SUBJECT", "STATUS", "CALLS", "MESSAGE"], entries.map {
            [timestamp($0.atUnixMs), $0.service, $0.method, $0.caller, $0.role.isEmpty ? "-" : $0.role,
             $0.subject.isEmpty ? "-" : $0.subject, $0.status, "\(max($0.repeats, 1))", $0.message]
        })
    }
}
