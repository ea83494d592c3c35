import ArgumentParser
import Foundation
import Protocol
import RPC
import ClientKit

/// `sigmactl config ...`: an app's config files and startup script on sigma-config. Secret files are never shown.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Publish, inspect, gray-release and roll back an app's config; choose the cluster (contexts).",
        subcommands: [Publish.self, Get.self, History.self, Diff.self, Rollback.self, Gray.self, Promote.self, Abandon.self, Delete.self,
                      UseContext.self, CurrentContext.self, GetContexts.self, SetContext.self])

    static func client(_ endpoints: EndpointOptions) throws -> RPCClient { try endpoints.client(.config) }

    static func release(_ release: Sigma_V1_ConfigRelease) -> String {
        var text = "app/\(release.app): current version \(release.current)"
        if release.grayVersion > 0 {
            let targets = release.grayOrdinals.map { "ordinal \($0)" } + release.grayInstances
            text += "; gray version \(release.grayVersion) on \(targets.joined(separator: ", "))"
        }
        return text
    }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish a new version: --file PATH=LOCAL (a Mustache template), --secret PATH=LOCAL, --raw PATH=LOCAL.",
            discussion: Examples.discussion("config publish"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @Option(name: .customLong("file"), help: "A template file: path in the instance = local file.") var files: [String] = []
        @Option(name: .customLong("secret"), help: "A secret file (never shown again): path = local file.") var secrets: [String] = []
        @Option(name: .customLong("raw"), help: "A file delivered as it is (not a template): path = local file.") var raws: [String] = []
        @Option(help: "Local file holding the startup script (a template too).") var script: String?
        @Option(name: .shortAndLong, help: "Why.") var message: String = ""
        @Option(help: "Release to these ordinals only (gray), e.g. --gray 0 --gray 1.") var gray: [Int32] = []
        @OptionGroup var endpoints: EndpointOptions

        func run() async throws {
            var request = Sigma_V1_PublishConfigRequest()
            request.app = app
            request.author = ProcessInfo.processInfo.environment["USER"] ?? "sigmactl"
            request.message = message
            request.grayOrdinals = gray
            for (specs, secret, raw) in [(files, false, false), (secrets, true, false), (raws, false, true)] {
                for spec in specs {
                    let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
                    guard parts.count == 2 else { throw ValidationError("\(spec): give PATH=LOCAL_FILE") }
                    guard let content = FileManager.default.contents(atPath: parts[1]) else { throw ValidationError("cannot read \(parts[1])") }
                    var file = Sigma_V1_ConfigFile()
                    file.path = parts[0]
                    file.content = content
                    file.secret = secret
                    file.raw = raw
                    request.files.append(file)
                }
            }
            if let script {
                guard let text = try? String(contentsOfFile: script, encoding: .utf8) else { throw ValidationError("cannot read \(script)") }
                request.script = text
            }
            let answer = try await ConfigCommand.client(endpoints).call(ConfigMethods.publish, request)
            print("published version \(answer.version.version) (sha256 \(answer.version.checksum.prefix(12)))")
            print(ConfigCommand.release(answer.release))
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a version (default: the current one); secrets stay hidden.",
            discussion: Examples.discussion("config get"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @Option(help: "Version (0: the current one).") var version: Int64 = 0
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_GetConfigRequest()
            request.app = app
            request.version = version
            let answer = try await ConfigCommand.client(endpoints).call(ConfigMethods.get, request)
            print(ConfigCommand.release(answer.release))
            print("version \(answer.version.version) by \(answer.version.author) at \(timestamp(answer.version.createdUnixMs)): \(answer.version.message)")
            for file in answer.version.files {
                print("\n== \(file.path) (mode \(String(file.mode, radix: 8))\(file.secret ? ", secret" : "")\(file.raw ? ", raw" : ""))")
                print(file.raw ? "<\(file.content.count) bytes>" : String(decoding: file.content, as: UTF8.self))
            }
            if !answer.version.script.isEmpty { print("\n== startup script\n\(answer.version.script)") }
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the versions.",
            discussion: Examples.discussion("config history"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_ConfigHistoryRequest()
            request.app = app
            let answer = try await ConfigCommand.client(endpoints).call(ConfigMethods.history, request)
            print(ConfigCommand.release(answer.release))
            printTable(["VERSION", "TIME", "AUTHOR", "FILES", "SHA256", "MESSAGE"], answer.versions.map {
                ["\($0.version)", timestamp($0.createdUnixMs), $0.author, "\($0.files.count)", String($0.checksum.prefix(12)), $0.message]
            })
        }
    }

    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "What changed between two versions (secret files: only that they changed).",
            discussion: Examples.discussion("config diff"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @Argument(help: "From version.") var from: Int64
        @Argument(help: "To version.") var to: Int64
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_DiffConfigRequest()
            request.app = app
            request.from = from
            request.to = to
            let answer = try await ConfigCommand.client(endpoints).call(ConfigMethods.diff, request)
            for file in answer.files {
                print("\(file.change): \(file.path)")
                if !file.diff.isEmpty { print(file.diff, terminator: file.diff.hasSuffix("\n") ? "" : "\n") }
            }
            if answer.scriptChanged { print("changed: startup script\n\(answer.scriptDiff)", terminator: answer.scriptDiff.hasSuffix("\n") ? "" : "\n") }
            if answer.files.isEmpty && !answer.scriptChanged { print("no differences") }
        }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish a copy of an earlier version as the current one.",
            discussion: Examples.discussion("config rollback"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @Option(help: "The version to return to.") var to: Int64
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_RollbackConfigRequest()
            request.app = app
            request.to = to
            request.author = ProcessInfo.processInfo.environment["USER"] ?? "sigmactl"
            let answer = try await ConfigCommand.client(endpoints).call(ConfigMethods.rollback, request)
            print("version \(answer.version.version) published as a copy of \(to)")
            print(ConfigCommand.release(answer.release))
        }
    }

    struct Gray: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Release a published version to some instances first.",
            discussion: Examples.discussion("config gray"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @Option(help: "The version.") var version: Int64
        @Option(help: "Ordinals that get it.") var ordinal: [Int32] = []
        @Option(help: "Instance ids that get it.") var instance: [String] = []
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_GrayConfigRequest()
            request.app = app
            request.version = version
            request.ordinals = ordinal
            request.instanceIds = instance
            print(ConfigCommand.release(try await ConfigCommand.client(endpoints).call(ConfigMethods.gray, request).release))
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make the gray version current for every instance.",
            discussion: Examples.discussion("config promote"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_ConfigAppRequest()
            request.app = app
            print(ConfigCommand.release(try await ConfigCommand.client(endpoints).call(ConfigMethods.promote, request).release))
        }
    }

    struct Abandon: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Drop the gray version; its instances return to the current one.",
            discussion: Examples.discussion("config abandon"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_ConfigAppRequest()
            request.app = app
            print(ConfigCommand.release(try await ConfigCommand.client(endpoints).call(ConfigMethods.abandon, request).release))
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete every version of an app's config; refused while the app runs with it.",
            discussion: Examples.discussion(
                "config delete", "Once no app runs with it (deleted, or its spec has no config). A set published again goes on "
                    + "with the next version number."))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_ConfigAppRequest()
            request.app = app
            let deleted = try await ConfigCommand.client(endpoints).call(ConfigMethods.delete, request)
            print("config/\(app) deleted (\(deleted.versions) version(s); the next publish is version \(deleted.lastVersion + 1))")
        }
    }
}
