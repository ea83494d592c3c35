import Core
import Foundation
import Logging
import Protocol
import RPC
import ClientKit
import ControlPlane
import Hosting
import Store

/// Apps: apply (each changed spec a numbered revision), scale, delete, rollout history and undo, team quotas.
/// Applying also reconciles the app's instance rows: missing ordinals become Pending instances, surplus ones
/// Terminating; the leader places, rolls and cleans up from there.
struct Apps: Sendable {
    let store: Store
    let logger: Logger

    static func encode(_ spec: AppSpec) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(spec), as: UTF8.self)
    }

    static func decode(_ json: String) throws -> AppSpec {
        try JSONDecoder().decode(AppSpec.self, from: Data(json.utf8))
    }

    /// What must be equal for running instances to stay as they are: all but replicas, resources (they
    /// change live, without a restart) and the rollout strategy.
    static func template(_ spec: AppSpec) -> AppSpec {
        var template = spec
        template.replicas = 0
        template.resources = .init()
        template.update = nil
        template.labels = [:]
        return template
    }

    func apply(_ request: Sigma_V1_ApplyAppRequest, by requester: String) async throws -> Sigma_V1_ApplyAppResponse {
        let (spec, problems) = AppSpec.from(wire: request.spec)
        guard problems.isEmpty else { throw RPCError.invalidSpec(problems) }
        return try await apply(spec, cause: request.changeCause.isEmpty ? "apply" : request.changeCause, by: requester, dryRun: request.dryRun)
    }

    /// Who asks, as revisions and rollouts record it: the caller's principal, "anonymous" without access
    /// control.
    static func requester(_ context: RequestContext) -> String { context.principal?.name ?? "anonymous" }

    /// Who starts a rollout the scheduler decided on itself (an automatic revert).
    static let schedulerRequester = "scheduler"


    /// What an apply does to an app: the answer's `action`.
    enum Action: String { case created, unchanged, rolls, live }

    /// Applies `spec` for `requester`; a `dryRun` makes every check and answers what it would do, writing nothing.
    func apply(_ spec: AppSpec, cause: String, by requester: String, dryRun: Bool = false) async throws -> Sigma_V1_ApplyAppResponse {
        try await checkFitsSomeNode(spec)
        let json = try Self.encode(spec)
        let action = try await store.transaction(isolation: .serializable) { tx -> Action in
            let current = try await tx.query("SELECT spec::text AS spec, revision, deleted FROM apps WHERE name = $1 FOR UPDATE", spec.name)
            var revision: Int64 = 1
            var previous: AppSpec?
            if let row = current.first {
                let deleted = try row.decode(Bool.self, "deleted")
                previous = deleted ? nil : try Self.decode(try row.decode(String.self, "spec"))
                if previous == spec { return .unchanged }
                revision = try row.decode(Int64.self, "revision") + 1
            }
            try await checkQuota(tx, spec)
            try await checkPolicy(tx, spec)
            let action: Action = previous.map { Self.template($0) == Self.template(spec) ? .live : .rolls } ?? .created
            if let previous, action == .live, previous.resources != spec.resources {
                try await checkRequestsFit(tx, app: spec.name, from: previous.resources.request, to: spec.resources.request)
            }
            guard !dryRun else { return action }
            try await writeRevision(tx, spec, json: json, revision: revision, cause: cause, by: requester)
            try await reconcile(tx, spec: spec, revision: revision, previous: previous, cause: cause, by: requester)
            return action
        }
        if action != .unchanged && !dryRun { logger.info("app applied", metadata: ["app": "\(spec.name)", "replicas": "\(spec.replicas)"]) }
        var response = Sigma_V1_ApplyAppResponse()
        if !(dryRun && action == .created) { response.app = try await get(spec.name) }
        response.changed = action != .unchanged
        response.action = action.rawValue
        return response
    }

    /// `spec` as the app's revision `revision`, with its row in the history.
    func writeRevision(_ tx: Transaction, _ spec: AppSpec, json: String, revision: Int64, cause: String, by requester: String) async throws {
        try await tx.execute(
            """
            INSERT INTO apps (name, team, spec, revision) VALUES ($1, $2, $3::jsonb, $4)
            ON CONFLICT (name) DO UPDATE SET team = $2, spec = $3::jsonb, revision = $4, deleted = false, updated_at = now()
            """, spec.name, spec.team, json, revision)
        try await tx.execute(
            "INSERT INTO app_revisions (app, revision, spec, change_cause, applied_by) VALUES ($1, $2, $3::jsonb, $4, $5)",
            spec.name, revision, json, cause, requester)
        try await Events.record(tx, .app, spec.name, "Applied", "revision \(revision): \(cause), by \(requester)")
    }

    /// Brings the app's instance rows to the spec: ordinals 0..<replicas exist; above that, bound instances
    /// turn Terminating and unbound ones go. Instances whose template did not change move to the new revision
    /// in place (with new resources, applied live); the others are rolled by the leader's rollout (`Rollouts`),
    /// started here when the template changed. A new app's rollout (from revision 0) replaces nothing: it
    /// watches the first instances become available, crash-loop or miss the deadline. An unchanged template
    /// moves a rollout under way to the new revision; after a failed one, the instances it did not replace
    /// stay as they are.
    private func reconcile(_ tx: Transaction, spec: AppSpec, revision: Int64, previous: AppSpec?, cause: String,
                           by requester: String) async throws {
        if let previous {
            let sameTemplate = Self.template(previous) == Self.template(spec)
            if sameTemplate {
                try await InstancesTable.setRevision(tx, app: spec.name, from: revision - 1, revision: revision, resources: spec.resources)
                try await Assignments.notifyApp(tx, app: spec.name)
                // A rollout under way goes on towards this revision, with its strategy.
                try await RolloutsTable.retarget(tx, app: spec.name, to: revision, strategy: spec.rollout)
            } else {
                let strategy = spec.rollout
                try await startRollout(tx, spec: spec, from: revision - 1, to: revision, cause: cause, by: requester)
            }
        } else {
            try await startRollout(tx, spec: spec, from: 0, to: revision, cause: cause, by: requester)
        }
        let created = try await InstancesTable.create(tx, app: spec.name, replicas: spec.replicas, revision: revision,
                                                      resources: spec.resources)
        try await Events.record(tx, .instance, created.map(\.id), "Created",
                                created.map { "\(spec.name)-\($0.ordinal), revision \(revision)" })
        try await Instances.terminate(tx, app: spec.name, fromOrdinal: spec.replicas, reason: "scaled down")
        if !created.isEmpty { try await Placement.wake(tx, because: spec.name) }
    }

    /// A rollout of `spec` from revision `from` (0: the app is new) to `to`, with its event.
    private func startRollout(_ tx: Transaction, spec: AppSpec, from: Int64, to: Int64, cause: String, by requester: String) async throws {
        let strategy = spec.rollout
        try await RolloutsTable.start(tx, app: spec.name, from: from, to: to, cause: cause, by: requester, strategy: strategy)
        let change = from == 0 ? "revision \(to), a new app: its first instances" : "revision \(from) → \(to): at most \(strategy.maxUnavailable) unavailable"
        try await Events.record(tx, .app, spec.name, "RolloutStarted",
                                "\(change), ready \(strategy.minReadySeconds) s, deadline \(strategy.progressDeadlineSeconds) s"
                                + (strategy.autoRevert && from > 0 ? ", auto-revert" : ""))
    }

    /// A request no node could hold even empty is refused at apply, with the biggest node for reference.
    private func checkFitsSomeNode(_ spec: AppSpec) async throws {
        let request = spec.resources.request
        guard request != .zero else { return }
        let rows = try await store.query(
            """
            SELECT count(*) FILTER (WHERE cpu_millis >= $1 AND memory_bytes >= $2)::bigint AS fitting, count(*)::bigint AS nodes,
                   coalesce(max(cpu_millis), 0)::bigint AS cpu, coalesce(max(memory_bytes), 0)::bigint AS memory FROM nodes
            """, request.cpuMillis, request.memoryBytes)
        guard let row = rows.first, try row.decode(Int64.self, "nodes") > 0, try row.decode(Int64.self, "fitting") == 0 else { return }
        let largest = Resources(cpuMillis: try row.decode(Int64.self, "cpu"), memoryBytes: try row.decode(Int64.self, "memory"))
        throw RPCError.invalidArgument(
            "spec.resources.request: \(request) is more than any node has (largest: \(largest)); no instance could ever be placed")
    }

    /// What needs an operator's leave: seccomp Unconfined only for a team allowed it.
    private func checkPolicy(_ tx: Transaction, _ spec: AppSpec) async throws {
        guard spec.security?.seccomp == .unconfined else { return }
        let rows = try await tx.query("SELECT allow_seccomp_unconfined FROM team_policies WHERE team = $1", spec.team)
        guard try rows.first?.decode(Bool.self, "allow_seccomp_unconfined") == true else {
            throw RPCError.permissionDenied(
                "spec.security.seccomp: Unconfined needs an operator's leave for team \(spec.team.isEmpty ? "(none)" : spec.team) "
                    + "(sigmactl policy \(spec.team.isEmpty ? "TEAM" : spec.team) --allow-seccomp-unconfined)")
        }
    }

    func setTeamPolicy(_ policy: Sigma_V1_TeamPolicy) async throws -> Sigma_V1_TeamPolicy {
        guard AppSpec.isValidName(policy.team) else {
            throw RPCError.invalidArgument("policy.team: \(policy.team.quotedForError) is not a team name")
        }
        if policy.allowSeccompUnconfined {
            try await store.execute(
                """
                INSERT INTO team_policies (team, allow_seccomp_unconfined) VALUES ($1, true)
                ON CONFLICT (team) DO UPDATE SET allow_seccomp_unconfined = true
                """, policy.team)
        } else {
            try await store.execute("DELETE FROM team_policies WHERE team = $1", policy.team)
        }
        return policy
    }

    func teamPolicies() async throws -> [Sigma_V1_TeamPolicy] {
        try await store.query("SELECT team, allow_seccomp_unconfined FROM team_policies ORDER BY team").map { row in
            var policy = Sigma_V1_TeamPolicy()
            policy.team = try row.decode(String.self, "team")
            policy.allowSeccompUnconfined = try row.decode(Bool.self, "allow_seccomp_unconfined")
            return policy
        }
    }

    /// A team's summed requests (replicas × request over its apps) stay within its quota.
    private func checkQuota(_ tx: Transaction, _ spec: AppSpec) async throws {
        let quota = try await tx.query("SELECT cpu_millis, memory_bytes FROM team_quotas WHERE team = $1", spec.team)
        guard let row = quota.first else { return }
        let cap = Resources(cpuMillis: try row.decode(Int64.self, "cpu_millis"), memoryBytes: try row.decode(Int64.self, "memory_bytes"))
        let others = try await teamRequests(tx, team: spec.team, excluding: spec.name)
        let total = others + spec.resources.request * Int64(spec.replicas)
        guard total.fits(in: cap) else {
            throw RPCError.resourceExhausted(
                "team \(spec.team) quota is \(cap); its apps would request \(total) (this app: \(spec.replicas) × \(spec.resources.request))")
        }
    }

    private func teamRequests(_ tx: Transaction, team: String, excluding app: String) async throws -> Resources {
        var total = Resources.zero
        for row in try await tx.query("SELECT spec::text AS spec FROM apps WHERE team = $1 AND name <> $2 AND NOT deleted", team, app) {
            let spec = try Self.decode(try row.decode(String.self, "spec"))
            total += spec.resources.request * Int64(spec.replicas)
        }
        return total
    }

    /// A live request change must fit every node the app's instances are bound to; otherwise nothing changes.
    func checkRequestsFit(_ tx: Transaction, app: String, instance: String? = nil, from old: Resources, to new: Resources) async throws {
        guard !new.fits(in: old) else { return }
        let rows = try await tx.query(
            """
            SELECT n.name, n.cpu_millis, n.memory_bytes,
                   (SELECT coalesce(sum(request_cpu_millis), 0) FROM instances WHERE node = n.name AND state = ANY($3::text[]))::bigint AS cpu,
                   (SELECT coalesce(sum(request_memory_bytes), 0) FROM instances WHERE node = n.name AND state = ANY($3::text[]))::bigint AS memory,
                   (SELECT count(*) FROM instances WHERE node = n.name AND app = $1 AND ($2 = '' OR id::text = $2) AND state = ANY($3::text[]))::bigint AS mine
            FROM nodes n WHERE n.name IN (SELECT node FROM instances WHERE app = $1 AND ($2 = '' OR id::text = $2) AND node IS NOT NULL)
            FOR UPDATE OF n
            """, app, instance ?? "", Nodes.holdingStates)
        for row in rows {
            let mine = try row.decode(Int64.self, "mine")
            let requested = Resources(cpuMillis: try row.decode(Int64.self, "cpu"), memoryBytes: try row.decode(Int64.self, "memory"))
            let capacity = Resources(cpuMillis: try row.decode(Int64.self, "cpu_millis"), memoryBytes: try row.decode(Int64.self, "memory_bytes"))
            let after = requested + (new - old) * mine
            guard after.fits(in: capacity) else {
                throw RPCError.failedPrecondition(
                    "request \(new) no longer fits node \(try row.decode(String.self, "name")): its requests would be \(after) of \(capacity); nothing changed")
            }
        }
    }

    /// Deleted apps whose last instance is gone are removed. Returns their names.
    static func removeDeleted(_ tx: Transaction) async throws -> [String] {
        let rows = try await tx.query(
            "DELETE FROM apps a WHERE a.deleted AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.app = a.name) RETURNING name")
        return try rows.map { try $0.decode(String.self, "name") }
    }

    func scale(_ request: Sigma_V1_ScaleAppRequest, by requester: String) async throws -> Sigma_V1_AppResponse {
        guard request.replicas >= 0 else { throw RPCError.invalidArgument("replicas: must not be negative") }
        var spec = try await currentSpec(request.name)
        spec.replicas = Int(request.replicas)
        guard spec.problems().isEmpty else { throw RPCError.invalidSpec(spec.problems()) }
        _ = try await apply(spec, cause: "scale to \(request.replicas)", by: requester)
        var response = Sigma_V1_AppResponse()
        response.app = try await get(request.name)
        return response
    }

    /// Deletes an app: its instances terminate; the app row goes once the last one has.
    func delete(_ name: String) async throws -> Sigma_V1_AppResponse {
        var response = Sigma_V1_AppResponse()
        response.app = try await get(name)
        try await store.transaction(isolation: .readCommitted) { tx in
            try await tx.execute("UPDATE apps SET deleted = true, updated_at = now() WHERE name = $1", name)
            try await Instances.terminate(tx, app: name, fromOrdinal: 0, reason: "app deleted")
            try await RolloutsTable.supersede(tx, app: name, by: nil)
            try await Events.record(tx, .app, name, "Deleted")
        }
        logger.info("app deleted", metadata: ["app": "\(name)"])
        return response
    }

    func history(_ name: String) async throws -> Sigma_V1_RolloutHistoryResponse {
        _ = try await currentSpec(name)
        var response = Sigma_V1_RolloutHistoryResponse()
        for row in try await store.query(
            """
            SELECT revision, spec::text AS spec, change_cause, applied_by, (extract(epoch FROM created_at) * 1000)::bigint AS at_ms
            FROM app_revisions WHERE app = $1 ORDER BY revision
            """, name)
        {
            var revision = Sigma_V1_AppRevision()
            revision.revision = try row.decode(Int64.self, "revision")
            revision.spec = try Self.decode(try row.decode(String.self, "spec")).wire
            revision.changeCause = try row.decode(String.self, "change_cause")
            revision.appliedBy = try row.decode(String.self, "applied_by")
            revision.createdUnixMs = try row.decode(Int64.self, "at_ms")
            response.revisions.append(revision)
        }
        return response
    }

    /// Applies an earlier revision's spec again, as a new revision.
    func undo(_ request: Sigma_V1_RolloutUndoRequest, by requester: String) async throws -> Sigma_V1_AppResponse {
        let current = try await get(request.name)
        let target = request.toRevision > 0 ? request.toRevision : current.revision - 1
        guard target >= 1, target != current.revision else {
            throw RPCError.failedPrecondition("app \(request.name) has no earlier revision to return to (current: \(current.revision))")
        }
        let rows = try await store.query("SELECT spec::text AS spec FROM app_revisions WHERE app = $1 AND revision = $2", request.name, target)
        guard let row = rows.first else { throw RPCError.notFound("app \(request.name) has no revision \(target)") }
        _ = try await apply(try Self.decode(try row.decode(String.self, "spec")), cause: "undo to revision \(target)", by: requester)
        var response = Sigma_V1_AppResponse()
        response.app = try await get(request.name)
        return response
    }

    func currentSpec(_ name: String) async throws -> AppSpec {
        let rows = try await store.query("SELECT spec::text AS spec FROM apps WHERE name = $1 AND NOT deleted", name)
        guard let row = rows.first else { throw RPCError.notFound("no app \(name)") }
        return try Self.decode(try row.decode(String.self, "spec"))
    }

    func get(_ name: String) async throws -> Sigma_V1_App {
        guard let app = try await list(name: name).first else { throw RPCError.notFound("no app \(name)") }
        return app
    }

    func list(name: String = "", team: String = "") async throws -> [Sigma_V1_App] {
        let rows = try await store.query(
            """
            SELECT a.name, a.spec::text AS spec, a.revision, (extract(epoch FROM a.created_at) * 1000)::bigint AS created_ms,
                   (extract(epoch FROM a.updated_at) * 1000)::bigint AS updated_ms,
                   coalesce((SELECT jsonb_object_agg(state, n) FROM (SELECT state, count(*) AS n FROM instances WHERE app = a.name GROUP BY state) s), '{}')::text AS states,
                   (SELECT count(*) FROM instances WHERE app = a.name AND state = 'Running' AND ready)::bigint AS ready
            FROM apps a WHERE NOT a.deleted AND ($1 = '' OR a.name = $1) AND ($2 = '' OR a.team = $2) ORDER BY a.name
            """, name, team)
        return try rows.map { row in
            var app = Sigma_V1_App()
            app.spec = try Self.decode(try row.decode(String.self, "spec")).wire
            app.revision = try row.decode(Int64.self, "revision")
            app.createdUnixMs = try row.decode(Int64.self, "created_ms")
            app.updatedUnixMs = try row.decode(Int64.self, "updated_ms")
            let states = try row.decodeJSON([String: Int].self, "states")
            app.states = states.mapValues { UInt32(clamping: $0) }
            app.ready = UInt32(clamping: try row.decode(Int64.self, "ready"))
            return app
        }
    }

    func setQuota(_ quota: Sigma_V1_Quota) async throws -> Sigma_V1_Quota {
        guard AppSpec.isValidName(quota.team) else { throw RPCError.invalidArgument("quota.team: \(quota.team.quotedForError) is not a team name") }
        guard quota.requests.cpuMillis >= 0, quota.requests.memoryBytes >= 0 else {
            throw RPCError.invalidArgument("quota.requests: must not be negative")
        }
        try await store.transaction(isolation: .readCommitted) { tx in
            if quota.requests.cpuMillis == 0 && quota.requests.memoryBytes == 0 {
                try await tx.execute("DELETE FROM team_quotas WHERE team = $1", quota.team)
            } else {
                try await tx.execute(
                    """
                    INSERT INTO team_quotas (team, cpu_millis, memory_bytes) VALUES ($1, $2, $3)
                    ON CONFLICT (team) DO UPDATE SET cpu_millis = $2, memory_bytes = $3
                    """, quota.team, quota.requests.cpuMillis, quota.requests.memoryBytes)
            }
        }
        return try await quotas().first { $0.team == quota.team } ?? {
            var none = Sigma_V1_Quota()
            none.team = quota.team
            return none
        }()
    }

    func quotas() async throws -> [Sigma_V1_Quota] {
        try await store.transaction(isolation: .repeatableRead) { tx in
            var quotas: [Sigma_V1_Quota] = []
            for row in try await tx.query("SELECT team, cpu_millis, memory_bytes FROM team_quotas ORDER BY team") {
                var quota = Sigma_V1_Quota()
                quota.team = try row.decode(String.self, "team")
                quota.requests = Resources(cpuMillis: try row.decode(Int64.self, "cpu_millis"), memoryBytes: try row.decode(Int64.self, "memory_bytes")).wire
                quota.used = try await teamRequests(tx, team: quota.team, excluding: "").wire
                quotas.append(quota)
            }
            return quotas
        }
    }
}
