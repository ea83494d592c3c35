import Core
import ClientKit
import Foundation
import Hosting
import Logging
import Protocol
import RPC
import ServiceLifecycle
import Store
import Synchronization

/// Who may call which method of a service, what each call is about, and which calls are writes (audited).
///
/// Operators may call everything; services the methods other services need; agents only what concerns
/// their own node; business instances (by their token) only reads of their own app. A method a policy does
/// not name is for operators only.
public struct AccessPolicy: Sendable {
    public typealias Role = Principal.Role

    /// How a call's subject limits agents and instances.
    enum Scope: Sendable {
        /// The roles decide alone.
        case none
        /// The subject is a node: an agent only for its own.
        case node
        /// The subject is an app: an instance only for its own.
        case app
        /// The subject is an app and the call names an instance: an agent only for instances on its node, an
        /// instance only for its own app and itself.
        case instance
    }

    struct Rule: Sendable {
        var roles: Set<Role>
        var write: Bool
        var scope: Scope
        /// The subject (a node, app, key...) and the instance a call names, read from its request.
        var subject: (@Sendable ([UInt8]) -> (subject: String, instance: String))?
    }

    var rules: [String: Rule] = [:]

    static let staff: Set<Role> = [.operator, .service]
    static let everyone: Set<Role> = Set(Role.allCases)

    mutating func allow<Request, Response>(
        _ method: RPCMethod<Request, Response>, _ roles: Set<Role>, write: Bool = false, scope: Scope = .none,
        subject: (@Sendable (Request) -> String)? = nil, instance: (@Sendable (Request) -> String)? = nil
    ) {
        var read: (@Sendable ([UInt8]) -> (subject: String, instance: String))?
        if subject != nil || instance != nil {
            read = { bytes in
                guard let request = try? Request(serializedBytes: bytes) else { return ("", "") }
                return (subject?(request) ?? "", instance?(request) ?? "")
            }
        }
        rules[method.name] = Rule(roles: roles.union([.operator]), write: write, scope: scope, subject: read)
    }

    /// The policy of one kind of service.
    public static func of(_ kind: ServiceKind) -> AccessPolicy {
        var policy = AccessPolicy()
        policy.allow(CommonMethods.health, everyone)
        policy.allow(CommonMethods.metrics, staff)
        switch kind {
        case .scheduler:
            scheduler(&policy)
        case .allocator:
            policy.allow(AllocatorMethods.createIPPool, staff, write: true, subject: { $0.pool.name })
            policy.allow(AllocatorMethods.listIPPools, staff)
            policy.allow(AllocatorMethods.allocateIPs, staff, write: true)
            policy.allow(AllocatorMethods.releaseIPs, staff, write: true)
            policy.allow(AllocatorMethods.reclaim, staff, write: true)
            policy.allow(AllocatorMethods.setNodePortRange, staff, write: true, subject: { $0.range.node })
            policy.allow(AllocatorMethods.allocateHostPorts, staff, write: true)
            policy.allow(AllocatorMethods.releaseHostPorts, staff, write: true)
            policy.allow(AllocatorMethods.listHostPorts, staff)
            policy.allow(AllocatorMethods.reportSSDs, staff, write: true, subject: { $0.node })
            policy.allow(AllocatorMethods.allocateSSDs, staff, write: true)
            policy.allow(AllocatorMethods.releaseSSDs, staff, write: true)
            policy.allow(AllocatorMethods.listSSDs, staff)
            policy.allow(AllocatorMethods.listIPAllocations, staff)
        case .config:
            let readers = staff.union([.instance])
            policy.allow(ConfigMethods.publish, [], write: true, subject: { $0.app })
            policy.allow(ConfigMethods.rollback, [], write: true, subject: { $0.app })
            policy.allow(ConfigMethods.gray, [], write: true, subject: { $0.app })
            policy.allow(ConfigMethods.promote, [], write: true, subject: { $0.app })
            policy.allow(ConfigMethods.abandon, [], write: true, subject: { $0.app })
            policy.allow(ConfigMethods.delete, [], write: true, subject: { $0.app })
            policy.allow(ConfigMethods.get, readers, scope: .app, subject: { $0.app })
            policy.allow(ConfigMethods.history, readers, scope: .app, subject: { $0.app })
            policy.allow(ConfigMethods.diff, readers, scope: .app, subject: { $0.app })
            policy.allow(ConfigMethods.fetch, readers.union([.agent]), scope: .instance, subject: { $0.app },
                         instance: { $0.instanceID })
        case .discovery:
            policy.allow(DiscoveryMethods.resolve, staff.union([.instance]), scope: .app, subject: { $0.app })
        case .agent:
            break
        }
        return policy
    }

    /// The scheduler's methods: agents' node-scoped calls, operators' writes, everyone's reads.
    static func scheduler(_ policy: inout AccessPolicy) {
        let agents: Set<Role> = [.service, .agent]
        policy.allow(SchedulerMethods.registerNode, agents, write: true, scope: .node, subject: { $0.name })
        // Heartbeats are state reports several times a second per node, not changes anyone asked for:
        // not audited (a node's changes of health are events).
        policy.allow(SchedulerMethods.heartbeat, agents, scope: .node, subject: { $0.node })
        policy.allow(SchedulerMethods.getAssignments, agents, scope: .node, subject: { $0.node })
        policy.allow(SchedulerMethods.issueToken, agents, scope: .node, subject: { $0.node })
        policy.allow(SchedulerMethods.getRoutes, agents)
        for method in [SchedulerMethods.cordonNode, SchedulerMethods.uncordonNode, SchedulerMethods.drainNode,
                       SchedulerMethods.removeNode] {
            policy.allow(method, [], write: true, subject: { $0.name })
        }
        policy.allow(SchedulerMethods.listNodes, staff)
        policy.allow(SchedulerMethods.getPool, staff)
        policy.allow(SchedulerMethods.applyApp, [], write: true, subject: { $0.spec.name })
        policy.allow(SchedulerMethods.getApp, staff)
        policy.allow(SchedulerMethods.listApps, staff)
        policy.allow(SchedulerMethods.deleteApp, [], write: true, subject: { $0.name })
        policy.allow(SchedulerMethods.scaleApp, [], write: true, subject: { $0.name })
        policy.allow(SchedulerMethods.rolloutHistory, staff)
        policy.allow(SchedulerMethods.listRollouts, staff)
        for method in [SchedulerMethods.restartRollout, SchedulerMethods.pauseRollout, SchedulerMethods.resumeRollout, SchedulerMethods.promoteRollout] {
            policy.allow(method, [], write: true, subject: { $0.name })
        }
        policy.allow(SchedulerMethods.rolloutUndo, [], write: true, subject: { $0.name })
        policy.allow(SchedulerMethods.setQuota, [], write: true, subject: { $0.quota.team })
        policy.allow(SchedulerMethods.listQuotas, staff)
        policy.allow(SchedulerMethods.setTeamPolicy, [], write: true, subject: { $0.policy.team })
        policy.allow(SchedulerMethods.listTeamPolicies, staff)
        policy.allow(SchedulerMethods.listInstances, staff)
        policy.allow(SchedulerMethods.getInstance, staff)
        policy.allow(SchedulerMethods.updateResources, [], write: true, subject: { $0.app }, instance: { $0.instanceID })
        policy.allow(SchedulerMethods.migrateInstance, [], write: true, instance: { $0.instanceID })
        policy.allow(SchedulerMethods.restartInstance, [], write: true, subject: { $0.app }, instance: { $0.id })
        policy.allow(SchedulerMethods.listEvents, staff)
        policy.allow(SchedulerMethods.recommendResources, staff)
        policy.allow(AccessMethods.addPrincipal, [], write: true, subject: { $0.principal.name })
        policy.allow(AccessMethods.removePrincipal, [], write: true, subject: { $0.nameOrKey })
        policy.allow(AccessMethods.listPrincipals, [])
        policy.allow(AccessMethods.listAudit, [])
    }

    func rule(_ method: String) -> Rule? { rules[method] }

    /// Whether the policy names `method` (every method a service serves should be named, operators-only
    /// ones too, so that its writes are audited).
    public func names(_ method: String) -> Bool { rules[method] != nil }
}
