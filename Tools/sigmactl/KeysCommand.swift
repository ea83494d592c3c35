import ArgumentParser
import Foundation
import RPC

/// `sigmactl keys generate`: writes a CURVE key pair (NAME.key, mode 0600) and its public half (NAME.pub).
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage CURVE keys.", subcommands: [Generate.self])

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new key pair: NAME.key (secret, 0600) and NAME.pub (for allow-lists and --server-key).",
            discussion: Examples.discussion("keys generate"))

        @Argument(help: "Name of the key pair, e.g. scheduler, agent-node1, operator.") var name: String
        @Option(help: "Folder to write into.") var out: String = "."
        @Flag(help: "Replace existing files.") var force = false

        func run() throws {
            guard name.range(of: "^[A-Za-z0-9._-]+$", options: .regularExpression) != nil else {
                throw ValidationError("name may hold letters, digits, '.', '_' and '-' only")
            }
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            let secretPath = "\(out)/\(name).key"
            let publicPath = "\(out)/\(name).pub"
            if !force, FileManager.default.fileExists(atPath: secretPath) || FileManager.default.fileExists(atPath: publicPath) {
                throw ValidationError("\(secretPath) or \(publicPath) exists; pass --force to replace")
            }
            let pair = try CurveKeyPair.generate()
            FileManager.default.createFile(atPath: secretPath, contents: Data(pair.secretFileText.utf8),
                                           attributes: [.posixPermissions: 0o600])
            try pair.publicFileText.write(toFile: publicPath, atomically: true, encoding: .utf8)
            print("wrote \(secretPath) (secret) and \(publicPath)")
            print("public key: \(pair.publicKey)")
        }
    }
}
