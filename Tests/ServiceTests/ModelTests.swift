import Core
import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// Issue 17's model-based test: seeded random operations on three test hosts (real agents, runc, PostgreSQL),
/// and after each one, once the cluster has converged (a bounded wait), the invariants hold:
///   * every desired instance Running at its app's current revision and template, a deleted app gone;
///   * every node Ready (none turned Suspect or Broken while it kept heartbeating);
///   * Discovery's answer equals the scheduler's, and a deleted app is NOT_FOUND there;
///   * each agent runs exactly the (instance, generation) pairs the scheduler has on its node: one live copy
///     of each instance in the whole cluster;
///   * nothing held for an instance that no longer exists (the Allocator's reclaim finds no IP, port or SSD).
/// On failure it says the seed and the step. `SIGMA_MODEL_STEPS` (100 here; `make soak`: 2,000),
/// `SIGMA_MODEL_MINUTES` (a bound on the whole run) and `SIGMA_MODEL_SEED` change the run.
@Suite(.serialized) struct ModelTests {
    static let environment = ProcessInfo.processInfo.environment
    static var steps: Int { environment["SIGMA_MODEL_STEPS"].flatMap(Int.init) ?? 100 }
    static var minutes: Double { environment["SIGMA_MODEL_MINUTES"].flatMap(Double.init) ?? 60 }
    static var seed: UInt64 { environment["SIGMA_MODEL_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...UInt64(UInt32.max)) }

    enum Operation: String, CaseIterable {
        case apply, changeTemplate, scale, delete, rolloutUndo, killProcess, restartAgent, cordon, drain, uncordon
    }

    /// One revision of an app as the model expects it: a scale is a revision too, a rollout undo applies the
    /// previous one again (replicas included), and applying what is already current makes none.
    struct Revision: Equatable {
        var replicas: Int
        var template: Int
    }

    /// What the test asked for: per app, its revisions in order (the last is current).
    struct Model {
        var apps: [String: [Revision]] = [:]
        var deleted: [String] = []
        var unschedulable: Int?
        var created = 0
        var templates = 0
    }

    @Test func seededOperationsKeepTheInvariants() async throws {
        let seed = Self.seed
        print("model test: seed \(seed), \(Self.steps) steps (SIGMA_MODEL_SEED=\(seed) repeats this run)")
        try await Testbed.with(hosts: 3, discoveries: 1) { bed, cluster in
            var random = SeededGenerator(seed: seed)
            var model = Model()
            var counts: [Operation: Int] = [:]
            let discovery = try SchedulerCluster.rpcClient(cluster.discoveryEndpoints)
            let allocator = try SchedulerCluster.rpcClient([cluster.allocatorEndpoint])
            let agents = AgentClients()
            let deadline = ContinuousClock.now + .seconds(Self.minutes * 60)
            var step = 0, converged = 0
            while step < Self.steps, ContinuousClock.now < deadline {
                step += 1
                let operation = Self.choose(model, &random)
                let detail = try await Self.perform(operation, &model, &random, bed: bed, cluster: cluster, agents: agents)
                counts[operation, default: 0] += 1
                // Converged: every invariant holds at once; a bounded wait, then the first one that does not.
                let settle = ContinuousClock.now + .seconds(90)
                var divergence: String?
                repeat {
                    divergence = try await Self.divergence(model, bed: bed, cluster: cluster, discovery: discovery, agents: agents)
                    if divergence == nil { break }
                    try await Task.sleep(for: .milliseconds(100))
                } while ContinuousClock.now < settle
                if divergence == nil {
                    let reclaimed = try await allocator.call(AllocatorMethods.reclaim, .init())
                    if !reclaimed.reclaimedIps.isEmpty || !reclaimed.reclaimedPorts.isEmpty || !reclaimed.reclaimedSsds.isEmpty {
                        divergence = "held for instances that no longer exist: \(reclaimed)"
                    }
                }
                if let divergence {
                    Issue.record("seed \(seed), step \(step) (\(operation.rawValue) \(detail)): \(divergence)")
                    break
                }
                converged += 1
            }
            // No agent ever tried a move its own lifecycle does not have (it logs each one it refuses).
            for index in 1...bed.hosts.count {
                let log = (try? String(contentsOfFile: "/run/sigma-testbed/\(bed.name)/h\(index)/agent.log", encoding: .utf8)) ?? ""
                for line in log.split(separator: "\n") where line.contains("refused a move of the agent's lifecycle") {
                    Issue.record("seed \(seed): h\(index) \(line)")
                }
            }
            let summary = Operation.allCases.map { "\($0.rawValue) \(counts[$0] ?? 0)" }.joined(separator: ", ")
            print("model test: seed \(seed), \(step) steps, \(converged) converged with every invariant; operations: \(summary)")
        }
    }

    static func choose(_ model: Model, _ random: inout SeededGenerator) -> Operation {
        if model.apps.isEmpty { return .apply }
        var choices: [Operation] = [.changeTemplate, .scale, .scale, .killProcess, .delete]
        if model.apps.count < 4 { choices += [.apply, .apply] }
        if model.apps.values.contains(where: { $0.count > 1 }) { choices.append(.rolloutUndo) }
        choices.append(model.unschedulable == nil ? (Bool.random(using: &random) ? .cordon : .drain) : .uncordon)
        if Int.random(in: 0..<4, using: &random) == 0 { choices.append(.restartAgent) }
        return choices.randomElement(using: &random)!
    }

    static func spec(_ spec: inout Sigma_V1_AppSpec, version: Int) {
        spec.image = "host"
        spec.command = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"]
        spec.env = ["TEMPLATE": "\(version)"]
        spec.lifecycle.stopGracePeriodSeconds = 1
    }

    /// Does `operation` and says on what.
    static func perform(_ operation: Operation, _ model: inout Model, _ random: inout SeededGenerator, bed: Testbed,
                        cluster: SchedulerCluster, agents: AgentClients) async throws -> String {
        let app = model.apps.keys.sorted().randomElement(using: &random)
        let host = Int.random(in: 1...bed.hosts.count, using: &random)
        switch operation {
        case .apply:
            model.created += 1
            model.templates += 1
            let name = "m\(model.created)", replicas = Int.random(in: 1...3, using: &random), version = model.templates
            try await cluster.apply(name, replicas: replicas, cpu: 10, memory: 8 << 20) { Self.spec(&$0, version: version) }
            model.apps[name] = [Revision(replicas: replicas, template: version)]
            return "\(name) × \(replicas)"
        case .changeTemplate:
            let name = app!
            model.templates += 1
            let version = model.templates, replicas = model.apps[name]!.last!.replicas
            try await cluster.apply(name, replicas: replicas, cpu: 10, memory: 8 << 20) { Self.spec(&$0, version: version) }
            model.apps[name]!.append(Revision(replicas: replicas, template: version))
            return "\(name) template \(version)"
        case .scale:
            let name = app!, replicas = Int.random(in: 0...3, using: &random)
            var request = Sigma_V1_ScaleAppRequest()
            request.name = name
            request.replicas = Int32(replicas)
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, request)
            let next = Revision(replicas: replicas, template: model.apps[name]!.last!.template)
            if next != model.apps[name]!.last! { model.apps[name]!.append(next) }
            return "\(name) to \(replicas)"
        case .delete:
            let name = app!
            var request = Sigma_V1_AppRequest()
            request.name = name
            _ = try await cluster.client.call(SchedulerMethods.deleteApp, request)
            model.apps[name] = nil
            model.deleted = Array((model.deleted + [name]).suffix(5))
            return name
        case .rolloutUndo:
            guard let name = model.apps.keys.sorted().filter({ model.apps[$0]!.count > 1 }).randomElement(using: &random) else { return "-" }
            var request = Sigma_V1_RolloutUndoRequest()
            request.name = name
            _ = try await cluster.client.call(SchedulerMethods.rolloutUndo, request)
            let revisions = model.apps[name]!
            let previous = revisions[revisions.count - 2]
            if previous != revisions.last! { model.apps[name]!.append(previous) }
            return "\(name) to template \(previous.template) × \(previous.replicas)"
        case .killProcess:
            // The instance's PID 1 (its init), as an OOM kill or a crash would end it: the agent restarts it.
            let agent = try await agents.client(of: bed.nodes[host - 1], cluster)
            let local = try await agent.call(AgentMethods.listLocalInstances, .init()).instances.filter { $0.state == "Running" && $0.pid > 0 }
            guard let victim = local.randomElement(using: &random) else { return "nothing runs on h\(host)" }
            kill(victim.pid, SIGKILL)
            return "\(victim.app) on h\(host)"
        case .restartAgent:
            try bed.restartAgent(host: host)
            return "h\(host)"
        case .cordon, .drain:
            var request = Sigma_V1_NodeRequest()
            request.name = bed.nodes[host - 1]
            _ = try await cluster.client.call(operation == .cordon ? SchedulerMethods.cordonNode : SchedulerMethods.drainNode, request)
            model.unschedulable = host
            return "h\(host)"
        case .uncordon:
            let index = model.unschedulable ?? host
            var request = Sigma_V1_NodeRequest()
            request.name = bed.nodes[index - 1]
            _ = try await cluster.client.call(SchedulerMethods.uncordonNode, request)
            model.unschedulable = nil
            return "h\(index)"
        }
    }

    /// The first invariant that does not hold now, or nil.
    static func divergence(_ model: Model, bed: Testbed, cluster: SchedulerCluster, discovery: RPCClient, agents: AgentClients) async throws -> String? {
        for node in try await cluster.client.call(SchedulerMethods.listNodes, .init()).nodes where node.health != "Ready" {
            return "node \(node.name) is \(node.health)"
        }
        var expected: [String: Set<String>] = [:]  // node → "id/generation"
        for (name, revisions) in model.apps.sorted(by: { $0.key < $1.key }) {
            let wanted = revisions.last!
            var get = Sigma_V1_AppRequest()
            get.name = name
            let app = try await cluster.client.call(SchedulerMethods.getApp, get).app
            guard app.spec.env["TEMPLATE"] == "\(wanted.template)", app.spec.replicas == Int32(wanted.replicas) else {
                return "\(name) is template \(app.spec.env["TEMPLATE"] ?? "-") × \(app.spec.replicas), not \(wanted.template) × \(wanted.replicas)"
            }
            let instances = try await cluster.instances(name)
            guard instances.count == wanted.replicas else { return "\(name) has \(instances.count) instances, not \(wanted.replicas)" }
            if let off = instances.first(where: { $0.state != "Running" || $0.revision != app.revision || !$0.ready }) {
                return "\(name)-\(off.ordinal) is \(off.state) at revision \(off.revision) (app: \(app.revision)) \(off.reason)"
            }
            for instance in instances { expected[instance.node, default: []].insert("\(instance.id)/\(instance.generation)") }
            var resolve = Sigma_V1_ResolveRequest()
            resolve.app = name
            let endpoints = try await discovery.call(DiscoveryMethods.resolve, resolve).endpoints
            let seen = Set(endpoints.map { "\($0.instanceID) \($0.ip) \($0.state) \($0.generation) \($0.ready)" })
            let truth = Set(instances.map { "\($0.id) \($0.ip) \($0.state) \($0.generation) \($0.ready)" })
            guard seen == truth else { return "Discovery says \(seen.sorted()) of \(name), the scheduler \(truth.sorted())" }
        }
        for name in model.deleted {
            guard try await cluster.instances(name).isEmpty else { return "deleted \(name) still has instances" }
            var resolve = Sigma_V1_ResolveRequest()
            resolve.app = name
            do {
                _ = try await discovery.call(DiscoveryMethods.resolve, resolve)
                return "Discovery still resolves deleted \(name)"
            } catch let error as RPCError where error.code == .notFound {}
        }
        // Each agent runs exactly what the scheduler put on its node, so no instance runs twice anywhere.
        var everywhere: [String: String] = [:]
        for node in bed.nodes {
            let local: [Sigma_V1_LocalInstance]
            do {
                local = try await agents.client(of: node, cluster).call(AgentMethods.listLocalInstances, .init(), timeout: .seconds(2)).instances
            } catch {
                return "the agent of \(node) does not answer: \(error)"
            }
            let running = Set(local.filter { $0.state == "Running" }.map { "\($0.instanceID)/\($0.generation)" })
            guard local.count == running.count, running == expected[node] ?? [] else {
                return "\(node) runs \(local.map { "\($0.app) \($0.state)" }.sorted()), the scheduler put \((expected[node] ?? []).count) there"
            }
            for entry in running {
                let id = String(entry.prefix { $0 != "/" })
                if let other = everywhere.updateValue(node, forKey: id) { return "instance \(id) runs on \(other) and \(node)" }
            }
        }
        return nil
    }
}

/// A client per agent endpoint: a restarted agent serves on a new port, which its node record says.
final class AgentClients: @unchecked Sendable {
    private var clients: [String: RPCClient] = [:]
    private let lock = NSLock()

    func client(of node: String, _ cluster: SchedulerCluster) async throws -> RPCClient {
        let endpoint = try await cluster.node(node).agentEndpoint
        return try lock.withLock {
            if let known = clients[endpoint] { return known }
            let client = try SchedulerCluster.rpcClient([endpoint])
            clients[endpoint] = client
            return client
        }
    }
}
