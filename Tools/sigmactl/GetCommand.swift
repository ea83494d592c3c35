import ArgumentParser
import Core
import Foundation
import Manifest
import Protocol
import RPC
import ClientKit
import SwiftProtobuf

/// `sigmactl get nodes|apps|instances|pool|events`.
struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get", abstract: "List nodes, apps, instances, the pool or events.",
        discussion: Examples.discussion("get"))
    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case nodes, apps, instances, pool, events, quotas

        /// Singular, plural and short forms, as kubectl takes them: node, nodes, no; app, apps; inst,
        /// instance, instances; pool; event, events, ev; quota, quotas.
        init?(argument: String) {
            switch argument.lowercased() {
            case "node", "nodes", "no": self = .nodes
            case "app", "apps": self = .apps
            case "inst", "instance", "instances": self = .instances
            case "pool", "pools": self = .pool
            case "event", "events", "ev": self = .events
            case "quota", "quotas": self = .quotas
            default: return nil
            }
        }
    }
    @Argument(help: "nodes, apps, instances, pool, events or quotas.") var kind: Kind
    @Argument(help: "Only this one (a node, an app, an instance as APP-ORDINAL or its id, a team's quota).", completion: NameCompletion.ofKind) var name: String?
    @Option(help: "Instances of this app only; events of this app and its instances.") var app: String = ""
    @Option(help: "Instances on this node, or this node's events, only.") var node: String = ""
    @Option(help: "Pool grouped by these keys (comma-separated; default region,idc,isp).") var groupBy: String = ""
    @Option(help: "Events: only those since then: \(Since.help).") var since: String?
    @Option(help: "Events: at most this many, the newest (1-10000).") var limit: UInt32 = 200
    @Option(name: .shortAndLong, help: "Output: table, wide, json or yaml.") var output: OutputFormat = .table
    @Option(name: [.customShort("l"), .long], help: ArgumentHelp(
        "Only those whose labels match (nodes: their labels, region, idc, isp; apps: theirs; instances: their app's), "
            + "e.g. -l tier=web,env!=test,'zone in (a,b)',gpu,!spot.", valueName: "selector"))
    var selector: String?
    @Flag(name: [.customShort("w"), .long], help: "Keep watching: the listing, then every --watch-interval what changed.") var watch = false
    @Option(help: "Seconds between two looks of --watch.") var watchInterval: Double = 1
    @Option(help: "Stop watching after this many seconds (default: until interrupted).") var watchTimeout: Double?
    @OptionGroup var endpoints: EndpointOptions

    /// The parsed `-l`, nil without one.
    var labelSelector: LabelSelector? { selector.flatMap { try? LabelSelector(parsing: $0) } }

    func validate() throws {
        if name != nil && (kind == .pool || kind == .events) { throw ValidationError("get \(kind.rawValue) takes no name") }
        if let since, Since.unixMs(since) == nil { throw ValidationError("--since \(since): expected \(Since.help)") }
        guard (1...10_000).contains(limit) else { throw ValidationError("--limit \(limit): between 1 and 10000") }
        if watch {
            guard !output.isStructured else { throw ValidationError("--watch prints tables; for scripts, poll -o json") }
            guard watchInterval >= 0.1 else { throw ValidationError("--watch-interval: seconds, at least 0.1") }
        }
        if let selector {
            guard [.nodes, .apps, .instances].contains(kind) else { throw ValidationError("-l: only nodes, apps and instances have labels") }
            do { _ = try LabelSelector(parsing: selector) } catch { throw ValidationError("-l \(selector): \(error.reason)") }
        }
    }

    /// `items`, or the one named `name` (NOT_FOUND when there is none).
    func named<T>(_ items: [T], _ names: (T) -> [String]) throws -> [T] {
        guard let name else { return items }
        let found = items.filter { names($0).contains(name) }
        if found.isEmpty { throw RPCError.notFound("no \(kind.rawValue.dropLast()) \(name)") }
        return found
    }

    func run() async throws {
        let client = try endpoints.client(.scheduler)
        guard watch else { return try await list(client) }
        let deadline = watchTimeout.map { ContinuousClock.now + .milliseconds(Int($0 * 1000)) }
        let watching = TableWatch(keyedByRow: kind == .events)
        try await TableWatch.$current.withValue(watching) {
            while deadline.map({ ContinuousClock.now < $0 }) ?? true {
                try await list(client)
                try await Task.sleep(for: .milliseconds(Int(watchInterval * 1000)))
            }
        }
    }

    private func list(_ client: RPCClient) async throws {
        switch kind {
        case .nodes: try await nodes(client)
        case .apps: try await apps(client)
        case .instances: try await instances(client)
        case .pool: try await pool(client)
        case .events: try await events(client)
        case .quotas: try await quotas(client)
        }
    }

    private func nodes(_ client: RPCClient) async throws {
        let nodes = try named(try await client.call(SchedulerMethods.listNodes, .init()).nodes) { [$0.name] }
            .filter { node in labelSelector?.matches(node.value(forKey:)) ?? true }
        if output.isStructured { return try printMessages(nodes, as: output) }
        showTable(
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
    }

    private func apps(_ client: RPCClient) async throws {
        let apps = try named(try await client.call(SchedulerMethods.listApps, .init()).apps) { [$0.spec.name] }
            .filter { labelSelector?.matches($0.spec.labels) ?? true }
        // YAML is the manifest format, so it applies back (`sigmactl apply -f`); its status goes in comments.
        if output == .yaml {
            return print(try AppManifest.render(apps.map { AppSpec.from(wire: $0.spec).spec }, comments: apps.map { app in
                "revision \(app.revision), \(app.ready)/\(app.spec.replicas) ready"
            }), terminator: "")
        }
        if output.isStructured { return try printMessages(apps, as: output) }
        showTable(["NAME", "TEAM", "REVISION", "READY", "IMAGE"] + (output == .wide ? ["REQUEST", "LIMIT", "STATES", "LABELS"] : []), apps.map { app in
            [app.spec.name, app.spec.team.isEmpty ? "-" : app.spec.team, "\(app.revision)", "\(app.ready)/\(app.spec.replicas)", app.spec.image]
                + (output == .wide ? ["\(Resources(wire: app.spec.resources.request))", "\(Resources(wire: app.spec.resources.limit))",
                                      app.states.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","),
                                      app.spec.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")] : [])
        })
    }

    private func instances(_ client: RPCClient) async throws {
        var request = Sigma_V1_ListInstancesRequest()
        request.app = app
        request.node = node
        var instances = try named(try await client.call(SchedulerMethods.listInstances, request).instances) { [instanceName($0), $0.id] }
        if let labelSelector {
            let labels = Dictionary(try await client.call(SchedulerMethods.listApps, .init()).apps.map { ($0.spec.name, $0.spec.labels) },
                                    uniquingKeysWith: { first, _ in first })
            instances = instances.filter { labelSelector.matches(labels[$0.app] ?? [:]) }
        }
        if output.isStructured { return try printMessages(instances, as: output) }
        showTable(["NAME", "STATE", "RESTARTS", "NODE", "IP", "HOST PORTS", "REASON"] + (output == .wide ? ["ID", "GENERATION", "REVISION"] : []),
                   instances.map { instance in
                       [instanceName(instance), coloured(instance.state), "\(instance.restarts)", instance.node.isEmpty ? "-" : instance.node,
                        instance.ip.isEmpty ? "-" : instance.ip,
                        instance.hostPorts.isEmpty ? "-" : instance.hostPorts.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ","),
                        instance.pendingReason.isEmpty ? (instance.reason.isEmpty ? "-" : instance.reason) : instance.pendingReason]
                           + (output == .wide ? [instance.id, "\(instance.generation)", "\(instance.revision)"] : [])
                   })
    }

    private func pool(_ client: RPCClient) async throws {
        var request = Sigma_V1_GetPoolRequest()
        request.groupBy = groupBy.split(separator: ",").map(String.init)
        let pool = try await client.call(SchedulerMethods.getPool, request)
        if output.isStructured { return try printMessage(pool, as: output) }
        func row(_ label: String, _ value: String, _ f: Sigma_V1_PoolFigures) -> [String] {
            [label, value, "\(f.readyNodes)/\(f.nodes)", Quantity.formatCPU(f.capacity.cpuMillis), Quantity.formatCPU(f.requested.cpuMillis),
             Quantity.formatCPU(f.limits.cpuMillis), Quantity.formatCPU(f.usage.cpuMillis), Quantity.formatBytesRounded(f.capacity.memoryBytes),
             Quantity.formatBytesRounded(f.requested.memoryBytes), Quantity.formatBytesRounded(f.usage.memoryBytes), "\(f.instances)"]
        }
        showTable(["GROUP", "VALUE", "READY", "CPU", "CPU REQ", "CPU LIM", "CPU USED", "MEMORY", "MEM REQ", "MEM USED", "INSTANCES"],
                   [row("total", "-", pool.total)] + pool.groups.map { row($0.key, $0.value.isEmpty ? "-" : $0.value, $0.figures) }
                       + (output == .wide ? pool.nodes.map { row("node", $0.node, $0.figures) } : []))
    }

    private func events(_ client: RPCClient) async throws {
        var request = Sigma_V1_ListEventsRequest()
        request.limit = limit
        request.app = app
        if !node.isEmpty { (request.kind, request.name) = ("node", node) }
        if let since, let moment = Since.unixMs(since) { request.sinceUnixMs = moment }
        let answer = try await client.call(SchedulerMethods.listEvents, request)
        if answer.truncated {
            FileHandle.standardError.write(Data("(the newest \(limit) events shown; more matched: --limit or --since)\n".utf8))
        }
        if output.isStructured { return try printMessages(answer.events, as: output) }
        showTable(["TIME", "OBJECT", "REASON", "MESSAGE"], answer.events.map { event in
            [timestamp(event.atUnixMs), "\(event.kind)/\(event.object.isEmpty ? event.name : event.object)", event.reason, event.message]
        })
    }

    private func quotas(_ client: RPCClient) async throws {
        let quotas = try named(try await client.call(SchedulerMethods.listQuotas, .init()).quotas) { [$0.team] }
        if output.isStructured { return try printMessages(quotas, as: output) }
        showTable(["TEAM", "CPU USED/QUOTA", "MEMORY USED/QUOTA"], quotas.map { quota in
            [quota.team, "\(Quantity.formatCPU(quota.used.cpuMillis))/\(Quantity.formatCPU(quota.requests.cpuMillis))",
             "\(Quantity.formatBytesRounded(quota.used.memoryBytes))/\(Quantity.formatBytesRounded(quota.requests.memoryBytes))"]
        })
    }
}

/// `sigmactl describe node|app|instance NAME`: everything about one object, with its events; an app as a
/// summary: its state, its spec in the manifest form, its instances, revisions, newest rollout and the events
/// of it and its instances.
struct DescribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "describe", abstract: "Show one node, app or instance with its events.",
        discussion: Examples.discussion("describe"))
    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case node, app, instance

        /// Singular, plural and short forms, as `get` takes them.
        init?(argument: String) {
            switch GetCommand.Kind(argument: argument) {
            case .nodes: self = .node
            case .apps: self = .app
            case .instances: self = .instance
            default: return nil
            }
        }
    }
    @Argument(help: "node, app or instance.") var kind: Kind
    @Argument(help: "Its name (an instance: APP-ORDINAL or its id).", completion: NameCompletion.ofKind) var name: String
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let client = try endpoints.client(.scheduler)
        if kind == .app { return try await describeApp(client) }
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

/// A span of time as a table shows it: "850ms", "42s", "3m05s", "2h07m".
func duration(_ millis: Int64) -> String {
    let seconds = max(0, millis) / 1000
    switch seconds {
    case 0: return "\(max(0, millis))ms"
    case ..<60: return "\(seconds)s"
    case ..<3600: return "\(seconds / 60)m" + String(format: "%02ds", seconds % 60)
    default: return "\(seconds / 3600)h" + String(format: "%02dm", seconds / 60 % 60)
    }
}



extension DescribeCommand {
    /// An app for people: what it is and how it is doing, then what it runs, its history and its events.
    func describeApp(_ client: RPCClient) async throws {
        var request = Sigma_V1_AppRequest()
        request.name = name
        let app = try await client.call(SchedulerMethods.getApp, request).app
        var list = Sigma_V1_ListInstancesRequest()
        list.app = name
        let instances = try await client.call(SchedulerMethods.listInstances, list).instances.sorted { $0.ordinal < $1.ordinal }
        let revisions = try await client.call(SchedulerMethods.rolloutHistory, request).revisions
        let rollout = try await newestRollout(client, app: name)
        var events = Sigma_V1_ListEventsRequest()
        events.app = name
        events.limit = 20
        let recent = try await client.call(SchedulerMethods.listEvents, events)

        let states = app.states.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        for (field, value) in [
            ("Name:", app.spec.name), ("Team:", app.spec.team.isEmpty ? "-" : app.spec.team),
            ("Revision:", "\(app.revision), created \(timestamp(app.createdUnixMs)), updated \(timestamp(app.updatedUnixMs))"),
            ("Ready:", "\(app.ready)/\(app.spec.replicas)" + (states.isEmpty ? "" : " (\(states))")),
            ("Rollout:", rollout.map { rolloutLine($0).replacingOccurrences(of: "app/\(name): ", with: "") } ?? "-"),
        ] {
            print(field.padding(toLength: 10, withPad: " ", startingAt: 0) + value)
        }
        print("\nSpec:")
        print(try manifestText(app.spec).split(separator: "\n", omittingEmptySubsequences: false).map { $0.isEmpty ? "" : "  " + $0 }
            .joined(separator: "\n"), terminator: "")
        print("\nInstances:")
        printTable(["NAME", "STATE", "READY", "RESTARTS", "REVISION", "NODE", "IP", "HOST PORTS", "REASON"], instances.map { instance in
            [instanceName(instance), coloured(instance.state), instance.ready ? "yes" : "no", "\(instance.restarts)", "\(instance.revision)",
             instance.node.isEmpty ? "-" : instance.node, instance.ip.isEmpty ? "-" : instance.ip,
             instance.hostPorts.isEmpty ? "-" : instance.hostPorts.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ","),
             instance.pendingReason.isEmpty ? (instance.reason.isEmpty ? "-" : instance.reason) : instance.pendingReason]
        })
        print("\nRevisions:")
        printTable(["REVISION", "TIME", "BY", "CHANGE-CAUSE"], revisions.suffix(10).map {
            ["\($0.revision)", timestamp($0.createdUnixMs), $0.appliedBy, $0.changeCause]
        })
        print("\nEvents (of the app and its instances\(recent.truncated ? ", the newest 20" : "")):")
        printTable(["TIME", "OBJECT", "REASON", "MESSAGE"], recent.events.map {
            [timestamp($0.atUnixMs), "\($0.kind)/\($0.object.isEmpty ? $0.name : $0.object)", $0.reason, $0.message]
        })
    }
}
