import Core
import Foundation
import Logging
import ServiceLifecycle
import Store
import Synchronization

/// What this replica knows of each node's liveness, so that a steady node's heartbeat writes nothing
/// (docs/protocol.md, "What a heartbeat writes"). A heartbeat from a Ready or Suspect node at its current epoch
/// is noted in memory; every `interval` one statement (`NodeLivenessWriter`) persists, for every node heard
/// since the last, when it was last heard, its usage, and a renewal of its lease, turns the Suspect ones heard
/// since they were marked Ready again (their events in one statement), and reads back each node's state and
/// epoch. Any other heartbeat — the first this replica takes from a node it did not register (a registration
/// stores a lease renewal and is learned like a heartbeat), one from a Broken node, one at
/// another epoch, one when this replica's last renewal is half a lease old — goes through the transaction that
/// locks the node's row, as every heartbeat once did. (A slow period then costs one statement per interval,
/// not a transaction per recovering node: those are what fed on themselves once thousands turned Suspect.)
///
/// The lease: a heartbeat answered from memory is granted only what is left of the lease this replica last
/// persisted for the node (counted from before that statement was sent, on this replica's clock), never a
/// full TTL from now; so what an agent holds never outlasts what the database says, and the leader's lapse
/// check (`InstancesTable.leaseLapsed`) stays true. A renewal persists only while the node is not Broken and
/// at the epoch the heartbeat was at: a node the leader declared Broken meanwhile gets nothing more. A renewal
/// never moves the stored one back (a statement that waited for the row's lock began before the one it waited
/// for), so what is stored is the latest of every grant's bound.
///
/// Failure detection reads `last_heartbeat` as persisted, at most one interval (and a statement) old: the
/// leader adds the interval to its Suspect and Broken thresholds.
final class NodeLiveness: Sendable {
    struct Known: Sendable {
        var health: NodeHealth
        var epoch: Int64
        /// Until when this replica may grant the node's lease, on this replica's clock.
        var grantable: ContinuousClock.Instant
        /// Whether the node holds prior copies of instances placed elsewhere, or volumes due to go: its
        /// heartbeats then read them. Trusted only while fresher than two flush intervals (else read).
        var hasPriors = true
        var volumesDue = true
        var flagsRead: ContinuousClock.Instant? = nil
    }

    struct Heard: Sendable {
        var at: ContinuousClock.Instant
        var epoch: Int64
        var cpu: Int64, memory: Int64, disk: Int64
    }

    private let state = Mutex<(known: [String: Known], heard: [String: Heard])>(([:], [:]))
    /// The TTL each renewal persists (the node lease's).
    let ttl: Duration
    /// How long the flags a flush read stay trusted.
    let flagsTrusted: Duration

    init(ttlMillis: Int64, flushInterval: Duration) {
        ttl = .milliseconds(ttlMillis)
        flagsTrusted = flushInterval * 2
    }

    /// The lease to grant a heartbeat answered from memory (milliseconds), with what is known of its node; nil
    /// when this one needs the transaction. A grant notes the node as heard, with its usage.
    func grant(node: String, _ heard: Heard) -> (millis: Int64, known: Known)? {
        state.withLock { state -> (Int64, Known)? in
            // Ready, or Suspect (the flush makes it Ready again with every other node heard): never Broken.
            guard var known = state.known[node], known.health != .broken, known.epoch == heard.epoch else { return nil }
            let left = known.grantable - heard.at
            guard left >= ttl / 2 else { return nil }
            state.heard[node] = heard
            if known.flagsRead.map({ heard.at - $0 > flagsTrusted }) ?? true { (known.hasPriors, known.volumesDue) = (true, true) }
            return (left.wholeMilliseconds, known)
        }
    }

    /// What the transaction of a heartbeat found and persisted (`grantable` counted from before it began).
    func learned(_ node: String, _ known: Known) {
        state.withLock { state in
            state.known[node] = known
            state.heard[node] = nil
        }
    }

    func forget(_ node: String) {
        state.withLock { state in
            state.known[node] = nil
            state.heard[node] = nil
        }
    }

    /// The nodes heard since the last flush (and forgets them: a failed flush is made good by the next heartbeat).
    func take() -> [(name: String, heard: Heard)] {
        state.withLock { state in
            defer { state.heard = [:] }
            return state.heard.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        }
    }

    /// What a flush read back; `renewedFrom` is when it was sent. Nodes it did not find are gone.
    func flushed(_ rows: [NodesFlush.Result], asked: [String], renewedFrom sent: ContinuousClock.Instant) {
        let found = Set(rows.map(\.name))
        state.withLock { state in
            for row in rows {
                var known = state.known[row.name] ?? Known(health: row.health, epoch: row.epoch, grantable: sent)
                known.health = row.health
                known.epoch = row.epoch
                if row.renewed { known.grantable = sent + ttl }
                (known.hasPriors, known.volumesDue, known.flagsRead) = (row.hasPriors, row.volumesDue, sent)
                state.known[row.name] = known
            }
            for name in asked where !found.contains(name) { state.known[name] = nil }
        }
    }
}

/// The flush: one statement per at most `chunk` nodes heard, in name order (the order every statement that
/// locks several node rows takes, so none deadlocks with another).
enum NodesFlush {
    struct Result: Sendable {
        let name: String, health: NodeHealth, epoch: Int64, renewed: Bool, hasPriors: Bool, volumesDue: Bool
        /// Suspect before, Ready now: heard after it was marked.
        let recovered: Bool
    }

    static let chunk = 2000

    static func write(_ store: Store, _ heard: [(name: String, heard: NodeLiveness.Heard)], ttlMillis: Int64, at now: ContinuousClock.Instant) async throws -> [Result] {
        let ages = heard.map { max(0, (now - $0.heard.at).wholeMilliseconds) }
        return try await store.transaction(isolation: .readCommitted) { tx in
            // A Suspect node heard (at its epoch) after it was marked is Ready again, in this statement with the
            // others; a Broken one is left to its heartbeat's transaction (it must fence first).
            let rows = try await tx.query(
                """
                WITH heard AS (
                    SELECT name, now() - age_ms * interval '1 millisecond' AS at, epoch, cpu, memory, disk
                    FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
                        AS v(name, age_ms, epoch, cpu, memory, disk)
                ), locked AS (
                    -- The row as locked: whether it was Suspect, and whether its lease is renewed (not Broken, and
                    -- at the epoch the heartbeat was at).
                    SELECT n.name, n.state AS was, n.state <> 'Broken' AND n.epoch = v.epoch AS renew
                    FROM nodes n JOIN heard v ON v.name = n.name ORDER BY n.name FOR UPDATE OF n
                )
                UPDATE nodes n SET
                    last_heartbeat = GREATEST(n.last_heartbeat, v.at),
                    usage_cpu_millis = v.cpu, usage_memory_bytes = v.memory, usage_disk_bytes = v.disk,
                    state = CASE WHEN l.was = 'Suspect' AND l.renew AND v.at > n.updated_at THEN 'Ready' ELSE n.state END,
                    lease_renewed_at = CASE WHEN l.renew THEN GREATEST(n.lease_renewed_at, now()) ELSE n.lease_renewed_at END,
                    lease_ttl_ms = CASE WHEN l.renew THEN $7::bigint ELSE n.lease_ttl_ms END
                FROM heard v, locked l WHERE n.name = v.name AND l.name = v.name
                RETURNING n.name, n.state, n.epoch, l.renew AS renewed, (l.was = 'Suspect' AND n.state = 'Ready') AS recovered,
                    EXISTS (SELECT 1 FROM instances i WHERE i.prior_node = n.name) AS has_priors,
                    EXISTS (SELECT 1 FROM volumes w WHERE w.node = n.name AND w.release_at <= now()) AS volumes_due
                """, heard.map(\.name), ages, heard.map(\.heard.epoch), heard.map(\.heard.cpu), heard.map(\.heard.memory),
                heard.map(\.heard.disk), ttlMillis)
            let results = try rows.map { row in
                Result(name: try row.decode(String.self, "name"), health: NodeHealth(rawValue: try row.decode(String.self, "state")) ?? .suspect,
                       epoch: try row.decode(Int64.self, "epoch"), renewed: try row.decode(Bool.self, "renewed"),
                       hasPriors: try row.decode(Bool.self, "has_priors"), volumesDue: try row.decode(Bool.self, "volumes_due"),
                       recovered: try row.decode(Bool.self, "recovered"))
            }
            let recovered = results.filter(\.recovered).map(\.name)
            try await Events.record(tx, .node, recovered, NodeHealth.ready.rawValue, recovered.map { _ in "heartbeats resumed" })
            return results
        }
    }
}

/// Persists what `NodeLiveness` heard every interval, and once more at shutdown.
struct NodeLivenessWriter: Service {
    let liveness: NodeLiveness
    let store: Store
    let interval: Duration
    let logger: Logger

    func run() async throws { try await Periodically.run(every: interval, flush) }

    func flush() async {
        let heard = liveness.take()
        let ttlMillis = liveness.ttl.wholeMilliseconds
        for chunk in heard.chunks(of: NodesFlush.chunk) {
            let sent = ContinuousClock.now
            do {
                let rows = try await NodesFlush.write(store, chunk, ttlMillis: ttlMillis, at: sent)
                liveness.flushed(rows, asked: chunk.map(\.name), renewedFrom: sent)
            } catch {
                logger.warning("node liveness not written; those nodes' next heartbeats renew it", metadata: ["nodes": "\(chunk.count)", "error": "\(error)"])
            }
        }
    }
}

extension Array {
    /// The elements in order, `size` at a time (the last chunk may be shorter).
    func chunks(of size: Int) -> [[Element]] {
        stride(from: 0, to: count, by: size).map { Array(self[$0..<Swift.min($0 + size, count)]) }
    }
}

/// A replica's batched writer's loop: `flush` every `interval` until the graceful shutdown, then once more.
enum Periodically {
    static func run(every interval: Duration, _ flush: @escaping @Sendable () async -> Void) async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                await flush()
            }
        }
        await flush()
    }
}
