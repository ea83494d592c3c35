import Core
import Foundation
import Logging
import Protocol
import RPC
import Store

/// The leader's rollouts (docs/protocol.md, "Rollouts"). For each app whose template changed, old instances
/// are replaced in ordinal order (same instance, same IP; the at-most-one rule of safe failover holds for the
/// new copy) while no more than `maxUnavailable` of the app's instances, old or new, are unavailable. It
/// succeeds once every instance runs the new revision and is available; it fails when a new instance
/// crash-loops or none becomes available within the progress deadline, and then replaces no more. With
/// `autoRevert` the app goes back to the last revision whose rollout succeeded, as a new revision whose own
/// rollout leaves the instances that never left that template untouched.
struct Rollouts: Sendable {
    let store: Store
    let lease: Lease
    let apps: Apps
    let logger: Logger

    /// A revert's change cause starts so; a revert that fails is not reverted again.
    static let revertCause = "auto-revert"

    struct Member {
        let id: String
        let name: String
        let revision: Int64
        let state: InstanceState
        let node: String
        /// Running and ready.
        let up: Bool
        /// Up for the strategy's minReadySeconds.
        let available: Bool
        let restarts: Int
        let reason: String
        let pendingReason: String

        /// Why this new instance fails the rollout at once, if it does.
        var crashLoop: String? {
            if [.failed, .oomKilled, .killed].contains(state) { return "\(name) ended \(state.rawValue): \(reason)" }
            if state == .backOff && restarts >= UpdateStrategy.crashLoopRestarts {
                return "\(name) is crash-looping (\(restarts) restarts): \(BackOffReason.ending(of: reason))"
            }
            return nil
        }

        var why: String {
            let detail = state == .pending ? pendingReason : state == .running ? (reason.hasPrefix("not ready") ? reason : "") : reason
            return "\(name) is \(state.rawValue)\(state == .running ? ", not ready" : "")\(detail.isEmpty ? "" : ": \(detail)")"
        }
    }

    enum Outcome { case going, succeeded, failed(String) }

    /// One step of every rollout not ended, each read and advanced in one transaction.
    func step() async throws {
        for id in try await RolloutsTable.activeIDs(store) {
            try await lease.renewIfDue()
            let (rollout, outcome) = try await store.transaction(isolation: .readCommitted) { tx -> (RolloutsTable.Record?, Outcome) in
                try await lease.check(tx)
                guard let rollout = try await RolloutsTable.lock(tx, id: id) else { return (nil, .going) }
                return (rollout, try await advance(tx, rollout))
            }
            guard let rollout else { continue }
            if case .failed(let reason) = outcome, rollout.strategy.autoRevert, !rollout.cause.hasPrefix(Self.revertCause) {
                try await revert(rollout, because: reason)
            }
        }
    }

    private func advance(_ tx: Transaction, _ rollout: RolloutsTable.Record) async throws -> Outcome {
        // Paused: nothing is replaced, and the deadline counts again from the resume.
        guard !rollout.paused else { return .going }
        let target = try await spec(tx, app: rollout.app, revision: rollout.to)
        var members = try await self.members(tx, rollout)
        // Instances whose revision has the target's template already move to it in place: never touched
        // (but by a restart, which replaces them all).
        let same = rollout.restart ? [] : try await sameTemplate(tx, app: rollout.app, members: members.filter { $0.revision != rollout.to }, as: target)
        if !same.isEmpty {
            try await InstancesTable.adopt(tx, ids: same, revision: rollout.to, resources: target.resources)
            members = try await self.members(tx, rollout)
        }
        let fresh = members.filter { $0.revision == rollout.to }
        let old = members.filter { $0.revision != rollout.to }
        if let bad = fresh.lazy.compactMap(\.crashLoop).first { return try await fail(tx, rollout, bad) }
        let available = fresh.filter(\.available).count
        if available > rollout.available {
            try await RolloutsTable.progressed(tx, id: rollout.id, available: available)
        } else if rollout.secondsSinceProgress > Double(rollout.strategy.progressDeadlineSeconds) {
            let waiting = fresh.first { !$0.available }?.why ?? "no old instance could be replaced"
            return try await fail(tx, rollout, "no progress for \(rollout.strategy.progressDeadlineSeconds) s: \(waiting)")
        }
        if old.isEmpty && available == members.count {
            guard try await RolloutsTable.finish(tx, id: rollout.id, state: "Succeeded", reason: "") else { return .going }
            try await Events.record(tx, .app, rollout.app, "RolloutSucceeded",
                                    "revision \(rollout.from) → \(rollout.to) in \(Int(rollout.secondsSinceStart.rounded())) s")
            logger.info("rollout succeeded", metadata: ["app": "\(rollout.app)", "revision": "\(rollout.to)"])
            return .succeeded
        }
        var candidates = old
        if rollout.strategy.canary > 0 && !rollout.promoted {
            switch try await canaries(tx, rollout, fresh: fresh) {
            case .paused: return .going
            case .promoted: break
            case .waiting: candidates = Array(old.prefix(max(0, rollout.strategy.canary - rollout.replaced)))
            }
        }
        try await replace(tx, candidates, budget: rollout.strategy.maxUnavailable - members.filter { !$0.available }.count, rollout, target)
        return .going
    }

    /// Before its promotion a rollout with canaries replaces only that many (those it adopts do not count);
    /// once they are all available it pauses (or, with autoPromote, is promoted and goes on).
    private func canaries(_ tx: Transaction, _ rollout: RolloutsTable.Record, fresh: [Member]) async throws -> CanaryStep {
        guard rollout.replaced >= rollout.strategy.canary, fresh.allSatisfy(\.available) else { return .waiting }
        if rollout.strategy.autoPromote {
            try await RolloutsTable.promoted(tx, id: rollout.id)
            try await Events.record(tx, .app, rollout.app, "RolloutPromoted", "\(fresh.count) canary instance(s) available: promoted by autoPromote")
            return .promoted
        }
        let reason = "\(fresh.count) canary instance(s) of revision \(rollout.to) available; promote to go on, undo to drop them"
        if try await RolloutsTable.pause(tx, id: rollout.id, reason: reason) {
            try await Events.record(tx, .app, rollout.app, "RolloutPaused", reason)
            logger.info("rollout paused after its canaries", metadata: ["app": "\(rollout.app)", "revision": "\(rollout.to)"])
        }
        return .paused
    }

    enum CanaryStep { case waiting, promoted, paused }

    /// Replaces old instances in ordinal order: one that is down (not Running and ready) at no cost, one
    /// that is up while the budget of unavailable instances lasts (one up but not yet for minReadySeconds
    /// counts as unavailable, and costs: a member that just came back is not free to stop).
    private func replace(_ tx: Transaction, _ old: [Member], budget: Int, _ rollout: RolloutsTable.Record, _ target: AppSpec) async throws {
        var budget = budget, count = 0
        for member in old {
            if member.up {
                guard budget > 0 else { continue }
                budget -= 1
            }
            let bound = !member.node.isEmpty && Assignments.runningStates.contains(member.state.rawValue)
            try await InstancesTable.roll(tx, id: member.id, revision: rollout.to, resources: target.resources, replace: bound)
            try await Events.record(tx, .instance, member.id, "Rolling", "revision \(member.revision) → \(rollout.to)")
            if bound { try await Assignments.notify(tx, node: member.node, instance: member.id) }
            logger.info("rolling instance", metadata: ["app": "\(rollout.app)", "instance": "\(member.id)", "revision": "\(rollout.to)"])
            count += 1
        }
        guard count > 0 else { return }
        try await RolloutsTable.replaced(tx, id: rollout.id, count: count)
        try await Placement.wake(tx, because: rollout.app)
    }

    private func fail(_ tx: Transaction, _ rollout: RolloutsTable.Record, _ reason: String) async throws -> Outcome {
        guard try await RolloutsTable.finish(tx, id: rollout.id, state: "Failed", reason: reason) else { return .going }
        try await Events.record(tx, .app, rollout.app, "RolloutFailed", "revision \(rollout.from) → \(rollout.to): \(reason)")
        logger.warning("rollout failed", metadata: ["app": "\(rollout.app)", "revision": "\(rollout.to)", "reason": "\(reason)"])
        return .failed(reason)
    }

    /// Applies the last revision whose rollout succeeded (else the one the failed rollout started from) again,
    /// with the app's current replicas. A new app's first rollout has nothing to go back to.
    private func revert(_ rollout: RolloutsTable.Record, because reason: String) async throws {
        guard let good = try await RolloutsTable.lastSucceeded(store, app: rollout.app, before: rollout.to)
                ?? (rollout.from > 0 ? rollout.from : nil) else { return }
        let current = try await apps.currentSpec(rollout.app)
        guard try await store.query(
            "SELECT 1 FROM apps WHERE name = $1 AND revision = $2 AND NOT deleted", rollout.app, rollout.to).count == 1 else { return }
        var spec = try await store.transaction(isolation: .readCommitted) { tx in try await self.spec(tx, app: rollout.app, revision: good) }
        spec.replicas = current.replicas
        _ = try await apps.apply(spec, cause: "\(Self.revertCause): rollout to revision \(rollout.to) failed (\(reason)); back to revision \(good)",
                            by: Apps.schedulerRequester)
        logger.notice("rollout reverted", metadata: ["app": "\(rollout.app)", "failed": "\(rollout.to)", "back to": "\(good)"])
    }

    private func spec(_ tx: Transaction, app: String, revision: Int64) async throws -> AppSpec {
        let rows = try await tx.query("SELECT spec::text AS spec FROM app_revisions WHERE app = $1 AND revision = $2", app, revision)
        guard let row = rows.first else { throw RPCError.notFound("app \(app) has no revision \(revision)") }
        return try Apps.decode(try row.decode(String.self, "spec"))
    }

    /// Old members whose revision's template is the target's.
    private func sameTemplate(_ tx: Transaction, app: String, members old: [Member], as target: AppSpec) async throws -> [String] {
        var same: [String] = []
        var templates: [Int64: Bool] = [:]
        for member in old {
            if templates[member.revision] == nil {
                templates[member.revision] = Apps.template(try await spec(tx, app: app, revision: member.revision)) == Apps.template(target)
            }
            if templates[member.revision] == true { same.append(member.id) }
        }
        return same
    }

    private func members(_ tx: Transaction, _ rollout: RolloutsTable.Record) async throws -> [Member] {
        let rows = try await tx.query(
            """
            SELECT id::text AS id, ordinal, revision, state, coalesce(node, '') AS node, restarts, reason, pending_reason,
                   (state = 'Running' AND ready) AS up,
                   \(RolloutsTable.available(minReadySeconds: "$2")) AS available
            FROM instances WHERE app = $1 AND state NOT IN ('Terminating', 'Terminated') ORDER BY ordinal
            """, rollout.app, rollout.strategy.minReadySeconds)
        return try rows.map { row in
            Member(
                id: try row.decode(String.self, "id"), name: "\(rollout.app)-\(try row.decode(Int.self, "ordinal"))",
                revision: try row.decode(Int64.self, "revision"),
                state: InstanceState(rawValue: try row.decode(String.self, "state")) ?? .pending, node: try row.decode(String.self, "node"),
                up: try row.decode(Bool.self, "up"), available: try row.decode(Bool?.self, "available") ?? false, restarts: try row.decode(Int.self, "restarts"),
                reason: try row.decode(String.self, "reason"), pendingReason: try row.decode(String.self, "pending_reason"))
        }
    }
}
