import ArgumentParser
import ClientKit
import Core
import Foundation
import Protocol
import RPC

/// `sigmactl rollout status|list|restart|pause|resume|promote|history|undo APP`.
struct RolloutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout", abstract: "Follow an app's rollouts, list its revisions or return to one.",
        subcommands: [Status.self, List.self, Restart.self, Pause.self, Resume.self, Promote.self, History.self, Undo.self])

    struct Restart: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give every instance a new generation with the same spec, through a rollout under the app's strategy.",
            discussion: Examples.discussion("rollout restart"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws { try await control(SchedulerMethods.restartRollout, app, endpoints) }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop the app's rollout from replacing more instances.",
            discussion: Examples.discussion("rollout pause"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws { try await control(SchedulerMethods.pauseRollout, app, endpoints) }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Let a paused rollout go on (one paused after its canaries needs promote).",
            discussion: Examples.discussion("rollout resume"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws { try await control(SchedulerMethods.resumeRollout, app, endpoints) }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Let the app's rollout replace the rest after its canaries.",
            discussion: Examples.discussion("rollout promote"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws { try await control(SchedulerMethods.promoteRollout, app, endpoints) }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Follow the app's newest rollout until it ends or pauses: exit 0 when it succeeded or waits paused, 4 when it failed, 3 on --wait-timeout.",
            discussion: Examples.discussion("rollout status"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @Option(help: "Seconds to wait for the rollout to end.") var waitTimeout: Double = 600
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            let client = try endpoints.client(.scheduler)
            let deadline = ContinuousClock.now + .milliseconds(Int(waitTimeout * 1000))
            var last = ""
            while true {
                guard let rollout = try await newestRollout(client, app: app) else {
                    print("app/\(app): no rollout (its template never changed)")
                    return
                }
                let line = rolloutLine(rollout)
                if line != last {
                    print(line)
                    fflush(nil)
                    last = line
                }
                switch rollout.state {
                case "Succeeded", "Paused": return
                case "Failed": throw CLIError(code: 4, message: "app/\(app): rollout to revision \(rollout.toRevision) failed: \(rollout.reason)")
                default: break
                }
                guard ContinuousClock.now < deadline else {
                    throw CLIError(code: 3, message: "app/\(app): rollout to revision \(rollout.toRevision) still progressing after \(Int(waitTimeout)) s")
                }
                try await Task.sleep(for: .milliseconds(300))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List rollouts, newest first (every app's without APP).",
            discussion: Examples.discussion("rollout list"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String = ""
        @Option(help: "At most this many.") var limit: Int32 = 20
        @Option(name: .shortAndLong, help: "Output: table, json or yaml.") var output: OutputFormat = .table
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_ListRolloutsRequest()
            request.app = app
            request.limit = limit
            let rollouts = try await endpoints.client(.scheduler).call(SchedulerMethods.listRollouts, request).rollouts
            if output.isStructured { return try printMessages(rollouts, as: output) }
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            printTable(["APP", "REVISION", "STATE", "STARTED", "BY", "NEW", "AVAILABLE", "OLD", "DURATION", "REASON"], rollouts.map {
                [$0.app, "\($0.fromRevision) → \($0.toRevision)", $0.state, timestamp($0.startedUnixMs), $0.startedBy, "\($0.newInstances)",
                 "\($0.availableInstances)", "\($0.oldInstances)", duration(($0.endedUnixMs > 0 ? $0.endedUnixMs : now) - $0.startedUnixMs),
                 $0.reason]
            })
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List an app's revisions; with --revision N, that revision's whole spec and its diff against the one before.",
            discussion: Examples.discussion("rollout history"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @Option(help: "Show this revision in full.") var revision: Int64?
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_AppRequest()
            request.name = app
            let revisions = try await endpoints.client(.scheduler).call(SchedulerMethods.rolloutHistory, request).revisions
            guard let revision else {
                return printTable(["REVISION", "TIME", "IMAGE", "REPLICAS", "BY", "CHANGE-CAUSE"], revisions.map {
                    ["\($0.revision)", timestamp($0.createdUnixMs), $0.spec.image, "\($0.spec.replicas)", $0.appliedBy, $0.changeCause]
                })
            }
            guard let shown = revisions.first(where: { $0.revision == revision }) else {
                throw CLIError(code: 1, message: "app/\(app) has no revision \(revision) (kept: \(revisions.map { "\($0.revision)" }.joined(separator: ", ")))")
            }
            let spec = try manifestText(shown.spec)
            print("# app/\(app) revision \(revision), \(timestamp(shown.createdUnixMs)) by \(shown.appliedBy): \(shown.changeCause)")
            print(spec, terminator: "")
            if let before = revisions.filter({ $0.revision < revision }).max(by: { $0.revision < $1.revision }) {
                let diff = TextDiff.unified(from: try manifestText(before.spec), to: spec, name: "app/\(app)")
                print("# against revision \(before.revision):")
                print(diff.isEmpty ? "# (the same spec)\n" : diff, terminator: "")
            }
        }
    }

    struct Undo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply an earlier revision again (default: the previous one).",
            discussion: Examples.discussion("rollout undo"))
        @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
        @Option(help: "Revision to return to.") var toRevision: Int64 = 0
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_RolloutUndoRequest()
            request.name = app
            request.toRevision = toRevision
            let answer = try await endpoints.client(.scheduler).call(SchedulerMethods.rolloutUndo, request)
            print("app/\(app) rolled back: now revision \(answer.app.revision) (\(answer.app.spec.image))")
        }
    }
}

/// The app's newest rollout, if it has one.
func newestRollout(_ client: RPCClient, app: String) async throws -> Sigma_V1_Rollout? {
    var request = Sigma_V1_ListRolloutsRequest()
    request.app = app
    request.limit = 1
    return try await client.call(SchedulerMethods.listRollouts, request).rollouts.first
}

/// "app/web: rollout 1 → 2 Progressing: 1 new (0 available), 2 old".
func rolloutLine(_ rollout: Sigma_V1_Rollout) -> String {
    var line = "app/\(rollout.app): rollout \(rollout.fromRevision) → \(rollout.toRevision) \(rollout.state)"
    if rollout.state == "Progressing" {
        line += ": \(rollout.newInstances) new (\(rollout.availableInstances) available), \(rollout.oldInstances) old"
    } else if !rollout.reason.isEmpty {
        line += ": \(rollout.reason)"
    }
    return line
}

/// Restart, pause, resume or promote: prints the rollout afterwards.
func control(_ method: RPCMethod<Sigma_V1_AppRequest, Sigma_V1_RolloutResponse>, _ app: String, _ endpoints: EndpointOptions) async throws {
    var request = Sigma_V1_AppRequest()
    request.name = app
    print(rolloutLine(try await endpoints.client(.scheduler).call(method, request).rollout))
}
