import Core
import Foundation
import Logging
import Protocol
import RPC
import Store
import Synchronization

/// The leader's housekeeping besides placement and rollouts: node health from heartbeats (Broken nodes'
/// instances NeedMigration), draining, and removing terminated instances after the Allocator has released
/// what they held.
struct Upkeep: Sendable {
    let store: Store
    let allocator: RPCClient
    let lease: Lease
    let thresholds: NodeHealth.Thresholds
    /// Seconds events are kept; 0 keeps them all.
    let eventsRetention: Double
    /// Seconds audit log entries are kept; 0 keeps them all.
    var auditRetention: Double = 0
    /// Seconds ended rollouts are kept (each app's newest and last succeeded always); 0 keeps them all.
    var rolloutRetention: Double = 0
    /// Added to a node's lease (stretched by the clock drift) before its prior copies count as gone.
    var nodeLeaseMarginMillis: Int64 = NodeLease.defaultMarginMillis
    /// Seconds the volumes of a deleted app, or of an ordinal scaled away, are kept before their nodes remove them.
    var volumeRetention: Double = 86_400
    /// When Discovery's index rows were last folded.
    let folds = Cadence(every: .seconds(30))
    let logger: Logger

    static func millis(_ seconds: Double) -> Int64 { Int64(seconds * 1000) }

    /// Ready → Suspect → Broken after missed heartbeats. A Broken node's epoch rises (it must fence when it
    /// returns) and its instances NeedMigration; Terminating ones there count as Terminated.
    func checkHealth() async throws {
        try await store.transaction(isolation: .readCommitted) { tx in
            try await lease.check(tx)
            let changed = try await Nodes.markSilent(tx, suspectAfter: thresholds.suspectAfter, brokenAfter: thresholds.brokenAfter)
            // One statement of events per new state, however many nodes (their rows stay locked until commit).
            for (state, group) in Dictionary(grouping: changed, by: \.1) {
                try await Events.record(tx, .node, group.map(\.0), state, group.map { _, state, epoch in
                    state == "Broken" ? "no heartbeat for \(thresholds.brokenAfter) s; epoch \(epoch), its instances move"
                        : "no heartbeat for \(thresholds.suspectAfter) s"
                })
                logger.warning("node \(state.lowercased())", metadata: ["nodes": "\(group.map(\.0).joined(separator: ","))", "count": "\(group.count)"])
            }
            for (name, state, _) in changed where state == "Broken" {
                try await moveOff(tx, node: name, reason: "node \(name) broken")
                try await InstancesTable.endTerminating(tx, node: name)
            }
        }
    }

    /// Prior copies on Broken nodes whose lease has certainly lapsed (their monitors have killed them) or on
    /// removed nodes are gone: their safe-mode successors may start.
    func releaseLapsedPriors() async throws {
        try await store.transaction(isolation: .readCommitted) { tx in
            try await lease.check(tx)
            let gone = try await InstancesTable.clearLapsedPriors(tx, drift: NodeLease.clockDrift, marginMillis: nodeLeaseMarginMillis)
            try await Assignments.priorsGone(tx, gone, because: "its node's lease has certainly lapsed")
            if !gone.isEmpty { logger.notice("prior copies gone with their node's lease", metadata: ["count": "\(gone.count)"]) }
        }
    }

    /// Volumes no live ordinal has any more are released after the retention (their nodes' agents are told in
    /// their heartbeats); those whose ordinal came back meanwhile are kept.
    func releaseVolumes() async throws {
        try await store.transaction(isolation: .readCommitted) { tx in
            try await lease.check(tx)
            _ = try await VolumesTable.markReleases(tx, retention: volumeRetention)
        }
    }

    /// Every 30 s, the database sessions' rows of Discovery's index fold into one per app (migration 29; the
    /// sums, and so every app's index, stay as they are).
    func foldDiscoveryIndex() async throws {
        guard folds.due() else { return }
        _ = try await store.query("SELECT sigma_fold_discovery_index() AS folded")
    }

    /// Events, audit log entries and rollout records older than their retention go, at most 10,000 of each
    /// a pass (a long backlog drains over a few passes without holding up placement).
    func pruneEvents() async throws {
        try await prune("events", olderThan: eventsRetention, what: "events")
        try await prune("audit_log", olderThan: auditRetention, what: "audit log entries")
        if rolloutRetention > 0 {
            let pruned = try await RolloutsTable.prune(store, endedBefore: Self.millis(rolloutRetention), limit: 10_000)
            if pruned > 0 { logger.info("rollout records past their retention deleted", metadata: ["count": "\(pruned)"]) }
        }
    }

    /// `table` is one of the two above (a name, never input); `retention` 0 keeps everything.
    private func prune(_ table: String, olderThan retention: Double, what: String) async throws {
        guard retention > 0 else { return }
        let pruned = try await store.query(
            """
            DELETE FROM \(table) WHERE id IN (
                SELECT id FROM \(table) WHERE at < now() - $1 * interval '1 millisecond' ORDER BY at LIMIT 10000)
            RETURNING id
            """, Self.millis(retention))
        if !pruned.isEmpty { logger.info("\(what) past their retention deleted", metadata: ["count": "\(pruned.count)"]) }
    }

    /// Instances running on draining nodes move elsewhere.
    func drain() async throws {
        try await store.transaction(isolation: .readCommitted) { tx in
            try await lease.check(tx)
            for row in try await tx.query(
                """
                SELECT DISTINCT n.name FROM nodes n JOIN instances i ON i.node = n.name
                WHERE n.draining AND i.state = ANY($1::text[])
                """, Assignments.runningStates)
            {
                let name = try row.decode(String.self, "name")
                try await moveOff(tx, node: name, reason: "node \(name) drained")
            }
        }
    }

    private func moveOff(_ tx: Transaction, node: String, reason: String) async throws {
        let ids = try await InstancesTable.needMigration(tx, node: node, states: Assignments.runningStates, reason: reason)
        guard !ids.isEmpty else { return }
        try await Events.record(tx, .instance, ids, "NeedMigration", Array(repeating: reason, count: ids.count))
        try await Assignments.notify(tx, changes: [node: ids])
        try await Placement.wake(tx, because: node)
        logger.notice("instances need migration", metadata: ["node": "\(node)", "count": "\(ids.count)", "reason": "\(reason)"])
    }

    /// Terminated instances: the Allocator releases their IP, host ports and SSDs, then the rows go; deleted
    /// apps go with their last instance.
    func cleanUp() async throws {
        let rows = try await store.query("SELECT id::text AS id FROM instances WHERE state = 'Terminated' LIMIT 1000")
        let ids = try rows.map { try $0.decode(String.self, "id") }
        if !ids.isEmpty {
            var ips = Sigma_V1_ReleaseIPsRequest()
            ips.instanceIds = ids
            _ = try await allocator.call(AllocatorMethods.releaseIPs, ips)
            var ports = Sigma_V1_ReleaseHostPortsRequest()
            ports.instanceIds = ids
            _ = try await allocator.call(AllocatorMethods.releaseHostPorts, ports)
            var ssds = Sigma_V1_ReleaseSSDsRequest()
            ssds.instanceIds = ids
            _ = try await allocator.call(AllocatorMethods.releaseSSDs, ssds)
        }
        try await store.transaction(isolation: .readCommitted) { tx in
            try await lease.check(tx)
            if !ids.isEmpty {
                let deleted = try await InstancesTable.deleteTerminated(tx, ids: ids)
                let names = deleted.map(\.id)
                try await Events.record(tx, .instance, names, "Deleted", Array(repeating: "IP, ports and SSDs released", count: names.count))
                // An ordinal freed by a terminated instance of a live app (re-applied, scaled up again) comes back.
                let created = try await InstancesTable.recreateFreedOrdinals(tx, apps: deleted.map(\.app))
                try await Events.record(tx, .instance, created, "Created", Array(repeating: "ordinal free again", count: created.count))
            }
            for app in try await Apps.removeDeleted(tx) { try await Events.record(tx, .app, app, "Removed", "last instance gone") }
        }
    }
}

/// Something done at most once every `interval` (the first time at once).
final class Cadence: Sendable {
    let interval: Duration
    private let last = Mutex<ContinuousClock.Instant?>(nil)

    init(every interval: Duration) { self.interval = interval }

    /// True, and counts as done now, when `interval` has passed since the last time.
    func due() -> Bool {
        last.withLock { last in
            let now = ContinuousClock.now
            if let last, now - last < interval { return false }
            last = now
            return true
        }
    }
}
