import ArgumentParser
import Core
import Foundation
import Manifest
import Protocol
import RPC
import ClientKit
import SwiftProtobuf

/// `sigmactl apply -f app.yaml`: creates or updates apps, then waits until their instances run.
struct ApplyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply", abstract: "Create or update apps from YAML files.",
        discussion: Examples.discussion("apply", "A folder given to -f: every .yaml and .yml file in it."))
    @Option(name: .shortAndLong, help: "A YAML file with one or more app specs, a folder of them, or - for standard input; repeatable.")
    var file: [String]
    @Flag(help: "Return once applied, without waiting for the instances to run.") var noWait = false
    @Flag(help: "Check the specs and say what applying them would do (create, roll, apply live or nothing), changing nothing.") var dryRun = false
    @Option(help: "Seconds to wait for the instances to run.") var waitTimeout: Double = 300
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let manifests = try readManifests(file)
        let specs = manifests.map(\.spec)
        let client = try endpoints.client(.scheduler)
        var revisions: [Int64] = []
        for (source, spec) in manifests {
            var request = Sigma_V1_ApplyAppRequest()
            request.spec = spec.wire
            request.changeCause = "sigmactl apply -f \(source)"
            request.dryRun = dryRun
            let answer = try await client.call(SchedulerMethods.applyApp, request)
            print(dryRun ? "app/\(spec.name) \(wouldDo(answer)) (dry run)"
                         : "app/\(spec.name) \(answer.changed ? "applied (revision \(answer.app.revision))" : "unchanged")")
            revisions.append(answer.app.revision)
        }
        guard !noWait && !dryRun else { return }
        for (spec, revision) in zip(specs, revisions) {
            try await waitRunning(client, app: spec.name, replicas: spec.replicas, revision: revision, timeout: waitTimeout)
        }
    }
}

/// The app specs of manifest files, each with the file it came from: a folder stands for every `.yaml` and
/// `.yml` file in it (by name), `-` for standard input. Every file is read; any problem exits 2 with every
/// problem of every file listed, and an app named twice is one of them.
func readManifests(_ files: [String]) throws -> [(source: String, spec: AppSpec)] {
    var sources: [String] = []
    for file in files {
        var isFolder: ObjCBool = false
        if file != "-", FileManager.default.fileExists(atPath: file, isDirectory: &isFolder), isFolder.boolValue {
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: file)) ?? [])
                .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
            guard !names.isEmpty else { throw CLIError(code: 2, message: "\(file): no .yaml or .yml file in this folder") }
            sources += names.map { (file.hasSuffix("/") ? file : file + "/") + $0 }
        } else {
            sources.append(file)
        }
    }
    guard sources.filter({ $0 == "-" }).count <= 1 else { throw CLIError(code: 2, message: "-f -: standard input can be read only once") }
    var manifests: [(source: String, spec: AppSpec)] = []
    var problems: [String] = []
    for source in sources {
        let text: String
        if source == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            do {
                text = try String(contentsOfFile: source, encoding: .utf8)
            } catch {
                problems.append("\(source): cannot be read (\((error as NSError).localizedFailureReason ?? (error as NSError).localizedDescription))")
                continue
            }
        }
        do {
            manifests += try AppManifest.parse(text).map { (source, $0) }
        } catch {
            problems.append("\(source == "-" ? "(standard input)" : source):\n" + error.problems.map { "  \($0)" }.joined(separator: "\n"))
        }
    }
    for name in Set(manifests.map(\.spec.name)).sorted() where manifests.filter({ $0.spec.name == name }).count > 1 {
        problems.append("app \(name) is given more than once (\(manifests.filter { $0.spec.name == name }.map(\.source).joined(separator: ", ")))")
    }
    guard problems.isEmpty else { throw CLIError(code: 2, message: problems.joined(separator: "\n")) }
    return manifests
}

/// What a dry-run apply says it would do: "would be created", "would roll (revision 3 → 4)", ...
func wouldDo(_ answer: Sigma_V1_ApplyAppResponse) -> String {
    let next = answer.app.revision + 1
    switch answer.action {
    case "created": return "would be created"
    case "rolls": return "would roll its instances (revision \(answer.app.revision) → \(next): the template changed)"
    case "live": return "would apply live, no instance restarted (revision \(answer.app.revision) → \(next))"
    default: return "unchanged"
    }
}

/// One app's spec from the wire in the manifest format `apply -f` reads (what `diff` and `rollout history`
/// compare).
func manifestText(_ spec: Sigma_V1_AppSpec) throws -> String {
    try AppManifest.render([AppSpec.from(wire: spec).spec])
}

/// `sigmactl diff -f app.yaml`: each app's current spec against the file's, in the manifest format, and what
/// applying it would do; exit 0 when nothing differs, 1 when something does (as `diff` and `kubectl diff`).
struct DiffCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Show what applying a YAML file would change: exit 0 when nothing, 1 when something differs.",
        discussion: Examples.discussion("diff"))
    @Option(name: .shortAndLong, help: "A YAML file with one or more app specs, a folder of them, or - for standard input; repeatable.")
    var file: [String]
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let specs = try readManifests(file).map(\.spec)
        let client = try endpoints.client(.scheduler)
        var differs = false
        for spec in specs {
            var request = Sigma_V1_ApplyAppRequest()
            request.spec = spec.wire
            request.dryRun = true
            let answer = try await client.call(SchedulerMethods.applyApp, request)
            guard answer.action != "unchanged" else { continue }
            differs = true
            let current = answer.action == "created" ? "" : try manifestText(answer.app.spec)
            print(TextDiff.unified(from: current, to: try AppManifest.render([spec]), name: "app/\(spec.name)"), terminator: "")
            print("# app/\(spec.name) \(wouldDo(answer))")
        }
        if differs { throw ExitCode(1) }
    }
}

/// Waits until `replicas` instances of `app` run on the app's current revision, with a live progress line
/// that names an instance backing off and why; ends with exit code 4 as soon as the rollout to `revision`
/// (the one applied; a new app's too) fails, and with 3 at the timeout, naming an instance not running yet
/// and why.
func waitRunning(_ client: RPCClient, app: String, replicas: Int, revision applied: Int64, timeout: Double) async throws {
    let terminal = isatty(1) == 1
    let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
    var get = Sigma_V1_AppRequest()
    get.name = app
    var list = Sigma_V1_ListInstancesRequest()
    list.app = app
    var last = ""
    while true {
        let revision = try await client.call(SchedulerMethods.getApp, get).app.revision
        let instances = try await client.call(SchedulerMethods.listInstances, list).instances
        let running = instances.filter { $0.state == "Running" && $0.revision == revision }.count
        let pending = instances.first { !$0.pendingReason.isEmpty && $0.state == "Pending" }
        let failing = instances.first { $0.revision == revision && $0.state == "BackOff" }
        var line = "app/\(app): \(running)/\(replicas) running"
        if let pending { line += "; pending: \(pending.pendingReason)" }
        if let failing { line += "; \(app)-\(failing.ordinal) BackOff: \(failing.reason)" }
        if line != last {
            if terminal { print("\r\u{1B}[K" + line, terminator: "") } else { print(line) }
            fflush(nil)
            last = line
        }
        if let rollout = try await newestRollout(client, app: app), rollout.toRevision == applied {
            if rollout.state == "Failed" {
                if terminal { print("") }
                throw CLIError(code: 4, message: "app/\(app): rollout to revision \(applied) failed: \(rollout.reason)")
            }
            if rollout.state == "Paused" {
                if terminal { print("") }
                print("app/\(app): rollout to revision \(applied) paused: \(rollout.reason) (sigmactl rollout promote|resume \(app))")
                return
            }
        }
        if running >= replicas && instances.count == replicas {
            if terminal { print("") }
            return
        }
        guard ContinuousClock.now < deadline else {
            if terminal { print("") }
            let waiting = instances.sorted { $0.ordinal < $1.ordinal }.first { $0.state != "Running" || $0.revision != revision }.map {
                let why = $0.state == "Pending" ? $0.pendingReason : $0.reason
                return ": \(app)-\($0.ordinal) is \($0.state)" + ($0.revision != revision ? " at revision \($0.revision)" : "") + (why.isEmpty ? "" : " (\(why))")
            } ?? ""
            throw CLIError(code: 3, message: "app/\(app): not all instances running after \(Int(timeout)) s\(waiting)")
        }
        try await Task.sleep(for: .milliseconds(300))
    }
}

/// Prints `message` to standard error and ends with `code`: 2 bad input, 3 timed out waiting.
func CLIError(code: Int32, message: String) -> ExitCode {
    FileHandle.standardError.write(Data(("Error: " + message + "\n").utf8))
    return ExitCode(code)
}

/// `sigmactl scale APP --replicas N`.
struct ScaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale", abstract: "Change an app's replica count.",
        discussion: Examples.discussion("scale"))
    @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
    @Option(help: "Replicas wanted.") var replicas: Int32
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        var request = Sigma_V1_ScaleAppRequest()
        request.name = app
        request.replicas = replicas
        let answer = try await endpoints.client(.scheduler).call(SchedulerMethods.scaleApp, request)
        print("app/\(app) scaled to \(answer.app.spec.replicas) (revision \(answer.app.revision))")
    }
}

/// `sigmactl set resources APP|--instance ID`: live limits (and requests, if they still fit).
struct SetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Change live settings.", subcommands: [SetResources.self])

    struct SetResources: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "resources", abstract: "Change requests and limits of an app or one instance without restarting it.",
            discussion: Examples.discussion("set resources"))
        @Argument(help: "App name (or use --instance).", completion: NameCompletion.apps) var app: String = ""
        @Option(help: "One instance: APP-ORDINAL or id.") var instance: String = ""
        @Option(help: "CPU request, e.g. 500m.") var requestCpu: String?
        @Option(help: "Memory request, e.g. 1Gi.") var requestMemory: String?
        @Option(help: "CPU limit (0 = unlimited).") var limitCpu: String?
        @Option(help: "Memory limit (0 = unlimited).") var limitMemory: String?
        @OptionGroup var endpoints: EndpointOptions

        func run() async throws {
            let client = try endpoints.client(.scheduler)
            var request = Sigma_V1_UpdateResourcesRequest()
            var current: ResourceRequirements
            if !instance.isEmpty {
                let found = try await resolveInstance(client, instance)
                request.instanceID = found.id
                current = ResourceRequirements(wire: found.resources)
            } else {
                guard !app.isEmpty else { throw ValidationError("name an app or --instance") }
                var get = Sigma_V1_AppRequest()
                get.name = app
                request.app = app
                current = ResourceRequirements(wire: try await client.call(SchedulerMethods.getApp, get).app.spec.resources)
            }
            func cpu(_ text: String?, _ old: Int64, _ flag: String) throws -> Int64 {
                guard let text else { return old }
                guard let value = Quantity.parseCPU(text) else { throw ValidationError("\(flag): \"\(text)\" is not a CPU quantity") }
                return value
            }
            func bytes(_ text: String?, _ old: Int64, _ flag: String) throws -> Int64 {
                guard let text else { return old }
                guard let value = Quantity.parseBytes(text) else { throw ValidationError("\(flag): \"\(text)\" is not a size") }
                return value
            }
            current.request.cpuMillis = try cpu(requestCpu, current.request.cpuMillis, "--request-cpu")
            current.request.memoryBytes = try bytes(requestMemory, current.request.memoryBytes, "--request-memory")
            current.limit.cpuMillis = try cpu(limitCpu, current.limit.cpuMillis, "--limit-cpu")
            current.limit.memoryBytes = try bytes(limitMemory, current.limit.memoryBytes, "--limit-memory")
            request.resources = current.wire
            let answer = try await client.call(SchedulerMethods.updateResources, request)
            print("resources set on \(answer.instances.count) instance(s): request \(current.request), limit \(current.limit)")
        }
    }
}

/// `sigmactl delete app NAME` / `sigmactl delete node NAME`.
struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete an app (its instances stop) or remove a drained node.",
        discussion: Examples.discussion("delete"))
    enum Kind: String, ExpressibleByArgument, CaseIterable { case app, node }
    @Argument(help: "app or node.") var kind: Kind
    @Argument(help: "Its name.") var name: String
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let client = try endpoints.client(.scheduler)
        switch kind {
        case .app:
            var request = Sigma_V1_AppRequest()
            request.name = name
            _ = try await client.call(SchedulerMethods.deleteApp, request)
            print("app/\(name) deleted; its instances are terminating")
        case .node:
            var request = Sigma_V1_NodeRequest()
            request.name = name
            _ = try await client.call(SchedulerMethods.removeNode, request)
            print("node/\(name) removed")
        }
    }
}

/// `sigmactl cordon|uncordon|drain NODE`.
func changeNode(_ method: RPCMethod<Sigma_V1_NodeRequest, Sigma_V1_NodeResponse>, _ name: String, _ endpoints: EndpointOptions, _ verb: String) async throws {
    var request = Sigma_V1_NodeRequest()
    request.name = name
    _ = try await endpoints.client(.scheduler).call(method, request)
    print("node/\(name) \(verb)")
}

struct CordonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cordon", abstract: "Stop placing new instances on a node.",
        discussion: Examples.discussion("cordon"))
    @Argument(help: "Node name.", completion: NameCompletion.nodes) var node: String
    @OptionGroup var endpoints: EndpointOptions
    func run() async throws { try await changeNode(SchedulerMethods.cordonNode, node, endpoints, "cordoned") }
}

struct UncordonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uncordon", abstract: "Place instances on a node again.",
        discussion: Examples.discussion("uncordon"))
    @Argument(help: "Node name.", completion: NameCompletion.nodes) var node: String
    @OptionGroup var endpoints: EndpointOptions
    func run() async throws { try await changeNode(SchedulerMethods.uncordonNode, node, endpoints, "uncordoned") }
}

struct DrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain", abstract: "Cordon a node and move its instances elsewhere (same IPs).",
        discussion: Examples.discussion("drain"))
    @Argument(help: "Node name.", completion: NameCompletion.nodes) var node: String
    @OptionGroup var endpoints: EndpointOptions
    func run() async throws { try await changeNode(SchedulerMethods.drainNode, node, endpoints, "draining") }
}

/// `sigmactl policy TEAM [--allow-seccomp-unconfined | --deny-seccomp-unconfined]`.
struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Show or change what a team's apps may do beyond the defaults (seccomp Unconfined).",
        discussion: Examples.discussion("policy"))
    @Argument(help: "Team.") var team: String
    @Flag(help: "Let the team's apps run without the seccomp filter (security.seccomp: Unconfined).")
    var allowSeccompUnconfined = false
    @Flag(help: "Take that leave back (apps already applied keep running until their next apply).")
    var denySeccompUnconfined = false
    @OptionGroup var endpoints: EndpointOptions

    func validate() throws {
        if allowSeccompUnconfined && denySeccompUnconfined {
            throw ValidationError("give --allow-seccomp-unconfined or --deny-seccomp-unconfined, not both")
        }
    }

    func run() async throws {
        let seccompUnconfined: Bool? = allowSeccompUnconfined ? true : denySeccompUnconfined ? false : nil
        let client = try endpoints.client(.scheduler)
        var policy = try await client.call(SchedulerMethods.listTeamPolicies, .init()).policies.first { $0.team == team } ?? {
            var none = Sigma_V1_TeamPolicy()
            none.team = team
            return none
        }()
        if let seccompUnconfined {
            var request = Sigma_V1_SetTeamPolicyRequest()
            request.policy = policy
            request.policy.allowSeccompUnconfined = seccompUnconfined
            policy = try await client.call(SchedulerMethods.setTeamPolicy, request).policy
        }
        print("team \(team): seccomp Unconfined \(policy.allowSeccompUnconfined ? "allowed" : "not allowed")")
    }
}

/// `sigmactl quota TEAM --cpu N --memory SIZE`.
struct QuotaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quota", abstract: "Cap a team's summed requests (0 and 0 remove the cap).",
        discussion: Examples.discussion("quota"))
    @Argument(help: "Team.") var team: String
    @Option(help: "CPU, e.g. 64.") var cpu: String
    @Option(help: "Memory, e.g. 256Gi.") var memory: String
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        guard let cpuMillis = Quantity.parseCPU(cpu) else { throw ValidationError("--cpu: \"\(cpu)\" is not a CPU quantity") }
        guard let bytes = Quantity.parseBytes(memory) else { throw ValidationError("--memory: \"\(memory)\" is not a size") }
        var request = Sigma_V1_SetQuotaRequest()
        request.quota.team = team
        request.quota.requests = Resources(cpuMillis: cpuMillis, memoryBytes: bytes).wire
        let quota = try await endpoints.client(.scheduler).call(SchedulerMethods.setQuota, request).quota
        print("team \(team): quota cpu \(Quantity.formatCPU(quota.requests.cpuMillis)), memory \(Quantity.formatBytesRounded(quota.requests.memoryBytes)); in use cpu \(Quantity.formatCPU(quota.used.cpuMillis)), memory \(Quantity.formatBytesRounded(quota.used.memoryBytes))")
    }
}
