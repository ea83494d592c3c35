import ArgumentParser
import Core
import Protocol
import RPC
import Store
import ClientKit
import ControlPlane
import Hosting

/// The scheduler's methods, each registered on the part that answers it.
extension SchedulerCommand {
    static func register(_ handlers: inout RPCHandlers, nodes: Nodes) {
        handlers.register(SchedulerMethods.registerNode) { request, _ in try await nodes.register(request) }
        handlers.register(SchedulerMethods.heartbeat) { request, _ in try await nodes.heartbeat(request) }
        handlers.register(SchedulerMethods.cordonNode) { request, _ in
            try Self.node(try await nodes.cordon(request.name, schedulable: false, draining: false, reason: "Cordoned"))
        }
        handlers.register(SchedulerMethods.uncordonNode) { request, _ in
            try Self.node(try await nodes.cordon(request.name, schedulable: true, draining: false, reason: "Uncordoned"))
        }
        handlers.register(SchedulerMethods.drainNode) { request, _ in
            try Self.node(try await nodes.cordon(request.name, schedulable: false, draining: true, reason: "Draining"))
        }
        handlers.register(SchedulerMethods.removeNode) { request, _ in try Self.node(try await nodes.remove(request.name)) }
        handlers.register(SchedulerMethods.listNodes) { _, _ in
            var response = Sigma_V1_ListNodesResponse()
            response.nodes = try await nodes.list()
            return response
        }
        handlers.register(SchedulerMethods.getPool) { request, _ in
            Pool.summary(nodes: try await nodes.list(), groupBy: request.groupBy)
        }
    }

    static func register(_ handlers: inout RPCHandlers, apps: Apps) {
        handlers.register(SchedulerMethods.applyApp) { request, context in try await apps.apply(request, by: Apps.requester(context)) }
        handlers.register(SchedulerMethods.getApp) { request, _ in
            var response = Sigma_V1_AppResponse()
            response.app = try await apps.get(request.name)
            return response
        }
        handlers.register(SchedulerMethods.listApps) { request, _ in
            var response = Sigma_V1_ListAppsResponse()
            response.apps = try await apps.list(team: request.team)
            return response
        }
        handlers.register(SchedulerMethods.deleteApp) { request, _ in try await apps.delete(request.name) }
        handlers.register(SchedulerMethods.scaleApp) { request, context in try await apps.scale(request, by: Apps.requester(context)) }
        handlers.register(SchedulerMethods.rolloutHistory) { request, _ in try await apps.history(request.name) }
        handlers.register(SchedulerMethods.restartRollout) { request, context in
            try await apps.restartRollout(request.name, by: Apps.requester(context))
        }
        handlers.register(SchedulerMethods.pauseRollout) { request, context in
            try await apps.pauseRollout(request.name, by: Apps.requester(context))
        }
        handlers.register(SchedulerMethods.resumeRollout) { request, context in
            try await apps.resumeRollout(request.name, by: Apps.requester(context))
        }
        handlers.register(SchedulerMethods.promoteRollout) { request, context in
            try await apps.promoteRollout(request.name, by: Apps.requester(context))
        }
        handlers.register(SchedulerMethods.listRollouts) { request, _ in
            var response = Sigma_V1_ListRolloutsResponse()
            response.rollouts = try await RolloutsTable.list(
                apps.store, app: request.app, limit: request.limit <= 0 ? 100 : Int(min(request.limit, 1000)))
            return response
        }
        handlers.register(SchedulerMethods.rolloutUndo) { request, context in try await apps.undo(request, by: Apps.requester(context)) }
        handlers.register(SchedulerMethods.setQuota) { request, _ in
            var response = Sigma_V1_SetQuotaResponse()
            response.quota = try await apps.setQuota(request.quota)
            return response
        }
        handlers.register(SchedulerMethods.setTeamPolicy) { request, _ in
            var response = Sigma_V1_SetTeamPolicyResponse()
            response.policy = try await apps.setTeamPolicy(request.policy)
            return response
        }
        handlers.register(SchedulerMethods.listTeamPolicies) { _, _ in
            var response = Sigma_V1_ListTeamPoliciesResponse()
            response.policies = try await apps.teamPolicies()
            return response
        }
        handlers.register(SchedulerMethods.listQuotas) { _, _ in
            var response = Sigma_V1_ListQuotasResponse()
            response.quotas = try await apps.quotas()
            return response
        }
    }

    static func register(_ handlers: inout RPCHandlers, instances: Instances, apps: Apps, store: Store, publisher: Publisher) {
        handlers.register(SchedulerMethods.listInstances) { request, _ in
            var response = Sigma_V1_ListInstancesResponse()
            response.instances = try await instances.list(request)
            return response
        }
        handlers.register(SchedulerMethods.getInstance) { request, _ in try await instances.get(request) }
        handlers.register(SchedulerMethods.updateResources) { request, context in
            try await instances.updateResources(request, apps: apps, by: Apps.requester(context))
        }
        handlers.register(SchedulerMethods.migrateInstance) { request, _ in try await instances.migrate(request) }
        handlers.register(SchedulerMethods.restartInstance) { request, context in
            try await instances.restart(request, by: Apps.requester(context))
        }
        handlers.register(SchedulerMethods.issueToken) { request, _ in
            var response = Sigma_V1_IssueTokenResponse()
            response.token = try await Assignments.issueToken(store, request)
            return response
        }
        handlers.register(SchedulerMethods.getAssignments) { request, _ in
            try await Assignments.snapshot(store: store, node: request.node, publisher: publisher)
        }
        handlers.register(SchedulerMethods.getRoutes) { request, _ in
            if request.sinceSequence > 0, request.feedEpoch == publisher.epoch,
               let missed = publisher.missed(on: FeedTopics.routes, after: request.sinceSequence),
               // (An empty event is the feed's "fetch everything", after the scheduler lost its notifications.)
               !missed.contains(where: { $0.payload.isEmpty }),
               let events = try? missed.map({ try Sigma_V1_RouteEvent(serializedBytes: $0.payload) }) {
                var response = Sigma_V1_GetRoutesResponse()
                (response.delta, response.missed, response.feedEpoch) = (true, events, publisher.epoch)
                response.sequence = request.sinceSequence + UInt64(events.count)
                return response
            }
            return try await Assignments.routes(store: store, publisher: publisher)
        }
        handlers.register(SchedulerMethods.listEvents) { request, _ in
            guard request.sinceUnixMs >= 0 else { throw RPCError.invalidArgument("since_unix_ms: must not be negative") }
            var response = Sigma_V1_ListEventsResponse()
            (response.events, response.truncated) = try await Events.list(
                store: store, kind: request.kind, name: request.name, app: request.app, sinceMillis: request.sinceUnixMs,
                limit: request.limit == 0 ? 100 : Int(min(request.limit, 10_000)))
            return response
        }
    }
}
