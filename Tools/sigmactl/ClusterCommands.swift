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
    static let configuration = CommandConfiguration(commandName: "apply", abstract: "Create or update apps from a YAML file.")
    @Option(name: .shortAndLong, help: "YAML file with one or more app specs (- for standard input).") var file: String
    @Flag(help: "Return once applied, without waiting for the instances to run.") var noWait = false
    @Option(help: "Seconds to wait for the instances to run.") var waitTimeout: Double = 300
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let text: String
        if file == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            guard let contents = try? String(contentsOfFile: file, encoding: .utf8) else { throw ValidationError("cannot read \(file)") }
            text = contents
        }
        let specs: [AppSpec]
        do {
            specs = try AppManifest.parse(text)
        } catch {
            throw CLIError(code: 2, message: "\(file):\n" + error.problems.map { "  \($0)" }.joined(separator: "\n"))
        }
        let client = try endpoints.client(.scheduler)
        for spec in specs {
            var request = Sigma_V1_ApplyAppRequest()
            request.spec = spec.wire
            request.changeCause = "sigmactl apply -f \(file)"
            let answer = try await client.call(SchedulerMethods.applyApp, request)
            print("app/\(spec.name) \(answer.changed ? "applied (revision \(answer.app.revision))" : "unchanged")")
        }
        guard !noWait else { return }
        for spec in specs {
            try await waitRunning(client, app: spec.name, replicas: spec.replicas, timeout: waitTimeout)
        }
    }
}

/// Waits until `replicas` instances of `app` run on the app's current revision, with a live progress line.
func waitRunning(_ client: RPCClient, app: String, replicas: Int, timeout: Double) async throws {
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
        var line = "app/\(app): \(running)/\(replicas) running"
        if let pending { line += "; pending: \(pending.pendingReason)" }
        if line != last {
            if terminal { print("\r\u{1B}[K" + line, terminator: "") } else { print(line) }
            fflush(nil)
            last = line
        }
        if running >= replicas && instances.count == replicas {
            if terminal { print("") }
            return
        }
        guard ContinuousClock.now < deadline else {
            if terminal { print("") }
            throw CLIError(code: 3, message: "app/\(app): not all instances running after \(Int(timeout)) s")
        }
        try await Task.sleep(for: .milliseconds(300))
    }
}

/// Prints `message` to standard error and ends with `code`: 2 bad input, 3 timed out waiting.
func CLIError(code: Int32, message: String) -> ExitCode {
    FileHandle.standardError.write(Data(("Error: " + message + "\n").utf8))
    return ExitCode(code)
}

/// `sigmactl get nodes|apps|instances|pool|events`.
struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "List nodes, apps, instances, the pool or events.")
    enum Kind: String, ExpressibleByArgument, CaseIterable { case nodes, apps, instances, pool, events, quotas }
    @Argument(help: "nodes, apps, instances, pool, events or quotas.") var kind: Kind
    @Option(help: "Instances or events of this app only.") var app: String = ""
    @Option(help: "Instances on this node, or this node's events, only.") var node: String = ""
    @Option(help: "Pool grouped by these keys (comma-separated; default region,idc,isp).") var groupBy: String = ""
    @Option(name: .shortAndLong, help: "Output: table, wide, json or yaml.") var output: OutputFormat = .table
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let client = try endpoints.client(.scheduler)
        switch kind {
        case .nodes:
            let nodes = try await client.call(SchedulerMethods.listNodes, .init()).nodes
            if output.isStructured { return try printMessages(nodes, as: output) }
            printTable(
                ["NAME", "STATUS", "IDC", "CPU REQ/CAP", "MEM REQ/CAP", "INSTANCES"] + (output == .wide ? ["HOST IP", "REGION", "ISP", "CPU USED", "LABELS"] : []),
                nodes.map { node in
                    var status = node.health
                    if node.draining { status += ",Draining" } else if node.cordoned { status += ",Cordoned" }
                    return [node.name, coloured(status), node.idc,
                            "\(Quantity.formatCPU(node.requested.cpuMillis))/\(Quantity.formatCPU(node.capacity.cpuMillis))",
                            "\(Quantity.formatBytesRounded(node.requested.memoryBytes))/\(Quantity.formatBytesRounded(node.capacity.memoryBytes))",
                            "\(node.instances)"]
                        + (output == .wide ? [node.hostIp, node.region, node.isp, Quantity.formatCPU(node.usage.cpuMillis),
                                              node.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")] : [])
                })
        case .apps:
            let apps = try await client.call(SchedulerMethods.listApps, .init()).apps
            if output.isStructured { return try printMessages(apps, as: output) }
            printTable(["NAME", "TEAM", "REVISION", "READY", "IMAGE"] + (output == .wide ? ["REQUEST", "LIMIT", "STATES"] : []), apps.map { app in
                [app.spec.name, app.spec.team.isEmpty ? "-" : app.spec.team, "\(app.revision)", "\(app.ready)/\(app.spec.replicas)", app.spec.image]
                    + (output == .wide ? ["\(Resources(wire: app.spec.resources.request))", "\(Resources(wire: app.spec.resources.limit))",
                                          app.states.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")] : [])
            })
        case .instances:
            var request = Sigma_V1_ListInstancesRequest()
            request.app = app
            request.node = node
            let instances = try await client.call(SchedulerMethods.listInstances, request).instances
            if output.isStructured { return try printMessages(instances, as: output) }
            printTable(["NAME", "STATE", "RESTARTS", "NODE", "IP", "HOST PORTS", "REASON"] + (output == .wide ? ["ID", "GENERATION", "REVISION"] : []),
                       instances.map { instance in
                           [instanceName(instance), coloured(instance.state), "\(instance.restarts)", instance.node.isEmpty ? "-" : instance.node,
                            instance.ip.isEmpty ? "-" : instance.ip,
                            instance.hostPorts.isEmpty ? "-" : instance.hostPorts.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ","),
                            instance.pendingReason.isEmpty ? (instance.reason.isEmpty ? "-" : instance.reason) : instance.pendingReason]
                               + (output == .wide ? [instance.id, "\(instance.generation)", "\(instance.revision)"] : [])
                       })
        case .pool:
            var request = Sigma_V1_GetPoolRequest()
            request.groupBy = groupBy.split(separator: ",").map(String.init)
            let pool = try await client.call(SchedulerMethods.getPool, request)
            if output.isStructured { return try printStructured(json: try pool.jsonString(), as: output) }
            func row(_ label: String, _ value: String, _ f: Sigma_V1_PoolFigures) -> [String] {
                [label, value, "\(f.readyNodes)/\(f.nodes)", Quantity.formatCPU(f.capacity.cpuMillis), Quantity.formatCPU(f.requested.cpuMillis),
                 Quantity.formatCPU(f.limits.cpuMillis), Quantity.formatCPU(f.usage.cpuMillis), Quantity.formatBytesRounded(f.capacity.memoryBytes),
                 Quantity.formatBytesRounded(f.requested.memoryBytes), Quantity.formatBytesRounded(f.usage.memoryBytes), "\(f.instances)"]
            }
            printTable(["GROUP", "VALUE", "READY", "CPU", "CPU REQ", "CPU LIM", "CPU USED", "MEMORY", "MEM REQ", "MEM USED", "INSTANCES"],
                       [row("total", "-", pool.total)] + pool.groups.map { row($0.key, $0.value.isEmpty ? "-" : $0.value, $0.figures) }
                           + (output == .wide ? pool.nodes.map { row("node", $0.node, $0.figures) } : []))
        case .events:
            var request = Sigma_V1_ListEventsRequest()
            request.limit = 200
            if !app.isEmpty { (request.kind, request.name) = ("app", app) }
            if !node.isEmpty { (request.kind, request.name) = ("node", node) }
            let events = try await client.call(SchedulerMethods.listEvents, request).events
            if output.isStructured { return try printMessages(events, as: output) }
            printTable(["TIME", "OBJECT", "REASON", "MESSAGE"], events.map { event in
                [timestamp(event.atUnixMs), "\(event.kind)/\(event.name)", event.reason, event.message]
            })
        case .quotas:
            let quotas = try await client.call(SchedulerMethods.listQuotas, .init()).quotas
            if output.isStructured { return try printMessages(quotas, as: output) }
            printTable(["TEAM", "CPU USED/QUOTA", "MEMORY USED/QUOTA"], quotas.map { quota in
                [quota.team, "\(Quantity.formatCPU(quota.used.cpuMillis))/\(Quantity.formatCPU(quota.requests.cpuMillis))",
                 "\(Quantity.formatBytesRounded(quota.used.memoryBytes))/\(Quantity.formatBytesRounded(quota.requests.memoryBytes))"]
            })
        }
    }
}

/// `sigmactl describe node|app|instance NAME`: everything about one object, with its events.
struct DescribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "describe", abstract: "Show one node, app or instance with its events.")
    enum Kind: String, ExpressibleByArgument, CaseIterable { case node, app, instance }
    @Argument(help: "node, app or instance.") var kind: Kind
    @Argument(help: "Its name (an instance: APP-ORDINAL or its id).") var name: String
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let client = try endpoints.client(.scheduler)
        var object: any SwiftProtobuf.Message
        var eventName = name
        switch kind {
        case .node:
            guard let node = try await client.call(SchedulerMethods.listNodes, .init()).nodes.first(where: { $0.name == name }) else {
                throw RPCError.notFound("no node \(name)")
            }
            object = node
        case .app:
            var request = Sigma_V1_AppRequest()
            request.name = name
            object = try await client.call(SchedulerMethods.getApp, request).app
        case .instance:
            let instance = try await resolveInstance(client, name)
            eventName = instance.id
            if !instance.pendingReason.isEmpty { print("Pending: \(instance.pendingReason)") }
            object = instance
        }
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        let fields = try JSONSerialization.jsonObject(with: Data(try object.jsonString(options: options).utf8))
        for line in flatten(fields, prefix: "") { print(line) }
        var events = Sigma_V1_ListEventsRequest()
        events.kind = kind.rawValue
        events.name = eventName
        events.limit = 50
        print("\nEvents:")
        printTable(["TIME", "REASON", "MESSAGE"], try await client.call(SchedulerMethods.listEvents, events).events.map {
            [timestamp($0.atUnixMs), $0.reason, $0.message]
        })
    }
}

/// An instance by id or by APP-ORDINAL.
func resolveInstance(_ client: RPCClient, _ name: String) async throws -> Sigma_V1_Instance {
    var request = Sigma_V1_GetInstanceRequest()
    if UUID(uuidString: name) != nil {
        request.id = name
    } else if let dash = name.lastIndex(of: "-"), let ordinal = Int32(name[name.index(after: dash)...]) {
        request.app = String(name[..<dash])
        request.ordinal = ordinal
    } else {
        throw ValidationError("\(name): give an instance id or APP-ORDINAL, e.g. web-0")
    }
    return try await client.call(SchedulerMethods.getInstance, request).instance
}

/// `a.b.c: value` lines from a JSON object, keys sorted.
func flatten(_ value: Any, prefix: String) -> [String] {
    switch value {
    case let object as [String: Any]:
        return object.keys.sorted().flatMap { flatten(object[$0]!, prefix: prefix.isEmpty ? $0 : "\(prefix).\($0)") }
    case let list as [Any]:
        if list.allSatisfy({ !($0 is [String: Any]) && !($0 is [Any]) }) {
            return ["\(prefix): \(list.map(scalarText).joined(separator: ", "))"]
        }
        return list.enumerated().flatMap { flatten($1, prefix: "\(prefix)[\($0)]") }
    default:
        return ["\(prefix): \(scalarText(value))"]
    }
}

/// A JSON scalar as text: booleans as true/false.
func scalarText(_ value: Any) -> String {
    if let flag = jsonBool(value) { return flag ? "true" : "false" }
    return "\(value)"
}

func instanceName(_ instance: Sigma_V1_Instance) -> String { "\(instance.app)-\(instance.ordinal)" }

func timestamp(_ unixMs: Int64) -> String {
    let formatter = DateFormatter()
    formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
    formatter.timeZone = TimeZone(identifier: "UTC")
    return formatter.string(from: Date(timeIntervalSince1970: Double(unixMs) / 1000))
}

func printMessages<M: SwiftProtobuf.Message>(_ messages: [M], as format: OutputFormat = .json) throws {
    var options = JSONEncodingOptions()
    options.preserveProtoFieldNames = true
    try printStructured(json: "[" + (try messages.map { try $0.jsonString(options: options) }).joined(separator: ",\n") + "]", as: format)
}

/// `sigmactl scale APP --replicas N`.
struct ScaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "scale", abstract: "Change an app's replica count.")
    @Argument(help: "App name.") var app: String
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

/// `sigmactl rollout history|undo APP`.
struct RolloutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout", abstract: "List an app's revisions or return to one.", subcommands: [History.self, Undo.self])

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an app's revisions.")
        @Argument(help: "App name.") var app: String
        @OptionGroup var endpoints: EndpointOptions
        func run() async throws {
            var request = Sigma_V1_AppRequest()
            request.name = app
            let revisions = try await endpoints.client(.scheduler).call(SchedulerMethods.rolloutHistory, request).revisions
            printTable(["REVISION", "TIME", "IMAGE", "REPLICAS", "CHANGE-CAUSE"], revisions.map {
                ["\($0.revision)", timestamp($0.createdUnixMs), $0.spec.image, "\($0.spec.replicas)", $0.changeCause]
            })
        }
    }

    struct Undo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Apply an earlier revision again (default: the previous one).")
        @Argument(help: "App name.") var app: String
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

/// `sigmactl set resources APP|--instance ID`: live limits (and requests, if they still fit).
struct SetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Change live settings.", subcommands: [SetResources.self])

    struct SetResources: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "resources", abstract: "Change requests and limits of an app or one instance without restarting it.")
        @Argument(help: "App name (or use --instance).") var app: String = ""
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
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete an app (its instances stop) or remove a drained node.")
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
    static let configuration = CommandConfiguration(commandName: "cordon", abstract: "Stop placing new instances on a node.")
    @Argument(help: "Node name.") var node: String
    @OptionGroup var endpoints: EndpointOptions
    func run() async throws { try await changeNode(SchedulerMethods.cordonNode, node, endpoints, "cordoned") }
}

struct UncordonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "uncordon", abstract: "Place instances on a node again.")
    @Argument(help: "Node name.") var node: String
    @OptionGroup var endpoints: EndpointOptions
    func run() async throws { try await changeNode(SchedulerMethods.uncordonNode, node, endpoints, "uncordoned") }
}

struct DrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "drain", abstract: "Cordon a node and move its instances elsewhere (same IPs).")
    @Argument(help: "Node name.") var node: String
    @OptionGroup var endpoints: EndpointOptions
    func run() async throws { try await changeNode(SchedulerMethods.drainNode, node, endpoints, "draining") }
}

/// `sigmactl migrate INSTANCE [--to NODE]`.
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "migrate", abstract: "Move one instance to another node, keeping its IP.")
    @Argument(help: "APP-ORDINAL or instance id.") var instance: String
    @Option(help: "Target node (default: wherever placement says).") var to: String = ""
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let client = try endpoints.client(.scheduler)
        var request = Sigma_V1_MigrateInstanceRequest()
        request.instanceID = try await resolveInstance(client, instance).id
        request.toNode = to
        let answer = try await client.call(SchedulerMethods.migrateInstance, request)
        print("instance \(instanceName(answer.instance)) needs migration off \(answer.instance.node)\(to.isEmpty ? "" : " to \(to)")")
    }
}

/// `sigmactl policy TEAM [--allow-seccomp-unconfined | --deny-seccomp-unconfined]`.
struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Show or change what a team's apps may do beyond the defaults (seccomp Unconfined).")
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
    static let configuration = CommandConfiguration(commandName: "quota", abstract: "Cap a team's summed requests (0 and 0 remove the cap).")
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
