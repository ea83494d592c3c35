import Foundation
import Logging
import Protocol
import RPC
import ClientKit
import SwiftProtobuf
import Synchronization

/// What the console shows, read through the services' own RPCs (the scheduler for the pool, nodes, apps,
/// instances and events; every service for its metrics).
final class ClusterReader: Sendable {
    let scheduler: RPCClient
    /// Each replica of each control-plane service on its own, for its metrics.
    let replicas: [(kind: ServiceKind, endpoint: String, client: RPCClient)]
    let endpoints: EndpointOptions
    /// For the clients: the console reports what they could not reach itself.
    let quiet: Logger
    /// Every node's agent, by endpoint: made on the first scrape that finds the node, closed when it is gone.
    let agents = Mutex<[String: RPCClient]>([:])

    init(endpoints: EndpointOptions, logger: Logger) throws {
        self.endpoints = endpoints
        var quiet = logger
        quiet.logLevel = .critical
        self.quiet = quiet
        scheduler = try endpoints.keys.client(endpoints: endpoints.endpoints(.scheduler), timeout: .seconds(3), file: endpoints.settings, logger: quiet)
        var replicas: [(ServiceKind, String, RPCClient)] = []
        for kind in [ServiceKind.scheduler, .allocator, .config, .discovery] {
            for endpoint in endpoints.endpoints(kind).split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                replicas.append((kind, endpoint, try endpoints.keys.client(endpoints: endpoint, timeout: .seconds(2), file: endpoints.settings, logger: quiet)))
            }
        }
        self.replicas = replicas
    }

    /// One JSON document for the page: `{"at", "pool", "nodes", "apps", "instances", "events", "rollouts"}`,
    /// each part as the protobuf JSON mapping of its RPC answer (the same as `sigmactl get pool -o json`);
    /// `rollouts` the newest 20 records of every app.
    func overview() async throws -> String {
        var eventsRequest = Sigma_V1_ListEventsRequest()
        eventsRequest.limit = 30
        async let pool = scheduler.call(SchedulerMethods.getPool, Self.poolRequest)
        async let nodes = scheduler.call(SchedulerMethods.listNodes, .init())
        async let apps = scheduler.call(SchedulerMethods.listApps, .init())
        async let instances = scheduler.call(SchedulerMethods.listInstances, .init())
        async let events = scheduler.call(SchedulerMethods.listEvents, eventsRequest)
        var rolloutsRequest = Sigma_V1_ListRolloutsRequest()
        rolloutsRequest.limit = 20
        async let rollouts = scheduler.call(SchedulerMethods.listRollouts, rolloutsRequest)
        let at = Int64(Date().timeIntervalSince1970 * 1000)
        return """
            {"at":\(at),"pool":\(try await pool.jsonString()),"nodes":\(try Self.array(try await nodes.nodes)),\
            "apps":\(try Self.array(try await apps.apps)),"instances":\(try Self.array(try await instances.instances)),\
            "events":\(try Self.array(try await events.events)),"rollouts":\(try Self.array(try await rollouts.rollouts))}
            """
    }

    /// The pool as the page and /metrics show it: whole, per IDC, per ISP.
    static var poolRequest: Sigma_V1_GetPoolRequest {
        var request = Sigma_V1_GetPoolRequest()
        request.groupBy = ["idc", "isp"]
        return request
    }

    static func array<M: SwiftProtobuf.Message>(_ messages: [M]) throws -> String {
        "[" + (try messages.map { try $0.jsonString() }).joined(separator: ",") + "]"
    }

    /// Prometheus text: every replica's per-method calls and latency, whether it answered, every node's agent
    /// too, and the pool's figures.
    func prometheus() async -> String {
        var text = Prometheus()
        let agents = await agentClients()
        let targets = replicas.map { ($0.kind.rawValue, $0.endpoint, $0.client) } + agents.map { ("agent", $0.0, $0.1) }
        let answers = await withTaskGroup(of: (Int, Sigma_V1_MetricsResponse?).self) { group in
            for (index, target) in targets.enumerated() {
                group.addTask { (index, try? await target.2.call(CommonMethods.metrics, .init(), timeout: .seconds(2))) }
            }
            var answers = [Sigma_V1_MetricsResponse?](repeating: nil, count: targets.count)
            for await (index, answer) in group { answers[index] = answer }
            return answers
        }
        for (index, target) in targets.enumerated() {
            let labels = [("service", target.0), ("instance", target.1)]
            text.sample("sigma_up", "Whether the service answered the console's Metrics call.", "gauge", labels, answers[index] == nil ? 0 : 1)
            guard let metrics = answers[index] else { continue }
            for method in metrics.methods {
                let labels = labels + [("method", method.method)]
                for (status, count) in method.callsByStatus.sorted(by: { $0.key < $1.key }) {
                    text.sample("sigma_rpc_calls_total", "Completed calls per method and status.", "counter", labels + [("status", status)], Double(count))
                }
                for bucket in method.latencyBuckets {
                    text.sample("sigma_rpc_latency_seconds_bucket", "Call latency.", "histogram", labels + [("le", Prometheus.number(bucket.upperBoundSeconds))], Double(bucket.count), family: "sigma_rpc_latency_seconds")
                }
                text.sample("sigma_rpc_latency_seconds_bucket", "Call latency.", "histogram", labels + [("le", "+Inf")], Double(method.calls), family: "sigma_rpc_latency_seconds")
                text.sample("sigma_rpc_latency_seconds_sum", "Call latency.", "histogram", labels, method.latencySumSeconds, family: "sigma_rpc_latency_seconds")
                text.sample("sigma_rpc_latency_seconds_count", "Call latency.", "histogram", labels, Double(method.calls), family: "sigma_rpc_latency_seconds")
            }
        }
        if let pool = try? await scheduler.call(SchedulerMethods.getPool, Self.poolRequest) {
            let groups = [([("group", "total"), ("value", "")], pool.total)] + pool.groups.map { ([("group", $0.key), ("value", $0.value)], $0.figures) }
            for (labels, figures) in groups {
                text.sample("sigma_pool_nodes", "Nodes in the pool.", "gauge", labels, Double(figures.nodes))
                text.sample("sigma_pool_ready_nodes", "Ready nodes in the pool.", "gauge", labels, Double(figures.readyNodes))
                text.sample("sigma_pool_instances", "Instances bound to the pool's nodes.", "gauge", labels, Double(figures.instances))
                for (what, cpu, memory) in [
                    ("capacity", figures.capacity.cpuMillis, figures.capacity.memoryBytes),
                    ("requested", figures.requested.cpuMillis, figures.requested.memoryBytes),
                    ("limits", figures.limits.cpuMillis, figures.limits.memoryBytes),
                    ("used", figures.usage.cpuMillis, figures.usage.memoryBytes),
                ] {
                    text.sample("sigma_pool_cpu_millis", "CPU of the pool in millicores: capacity, requested, limits and used.", "gauge", labels + [("kind", what)], Double(cpu))
                    text.sample("sigma_pool_memory_bytes", "Memory of the pool in bytes: capacity, requested, limits and used.", "gauge", labels + [("kind", what)], Double(memory))
                }
            }
        }
        return text.render()
    }
}

extension ClusterReader {
    /// A client for each node's agent now registered, kept between scrapes; none when the scheduler does not
    /// answer.
    func agentClients() async -> [(String, RPCClient)] {
        guard let nodes = try? await scheduler.call(SchedulerMethods.listNodes, .init()).nodes else { return [] }
        let wanted = Set(nodes.map(\.agentEndpoint).filter { !$0.isEmpty })
        let (current, gone) = agents.withLock { known -> ([(String, RPCClient)], [RPCClient]) in
            let gone = known.filter { !wanted.contains($0.key) }
            for endpoint in gone.keys { known[endpoint] = nil }
            for endpoint in wanted where known[endpoint] == nil {
                known[endpoint] = try? endpoints.keys.client(endpoints: endpoint, timeout: .seconds(1), file: endpoints.settings, logger: quiet)
            }
            return (known.sorted { $0.key < $1.key }, Array(gone.values))
        }
        gone.forEach { $0.close() }
        return current
    }
}

/// The Prometheus text exposition format: one HELP and TYPE per family, then its samples.
struct Prometheus {
    private var order: [String] = []
    private var families: [String: (help: String, type: String, lines: [String])] = [:]

    mutating func sample(_ name: String, _ help: String, _ type: String, _ labels: [(String, String)], _ value: Double, family: String? = nil) {
        let family = family ?? name
        if families[family] == nil {
            order.append(family)
            families[family] = (help, type, [])
        }
        let rendered = labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",")
        families[family]!.lines.append("\(name){\(rendered)} \(Self.number(value))")
    }

    func render() -> String {
        order.map { name in
            let family = families[name]!
            return "# HELP \(name) \(family.help)\n# TYPE \(name) \(family.type)\n" + family.lines.joined(separator: "\n") + "\n"
        }.joined()
    }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func number(_ value: Double) -> String {
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}
