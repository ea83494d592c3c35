import Foundation
import Protocol
import Testing
import TestSupport

/// A heartbeat writes an instance's row only when something the control plane acts on changed (state,
/// readiness, limit, exit code, reason, restarts, next retry); the usage it reports is written by the replica
/// in batches. Checked on the rows themselves: PostgreSQL's xmin is the transaction that last wrote each.
@Suite struct HeartbeatWriteTests {
    static func versions(_ cluster: SchedulerCluster, _ app: String) async throws -> [String: String] {
        let rows = try await cluster.store.query("SELECT id::text AS id, xmin::text AS version FROM instances WHERE app = $1", app)
        return Dictionary(uniqueKeysWithValues: try rows.map { (try $0.decode(String.self, "id"), try $0.decode(String.self, "version")) })
    }

    @Test func aSteadyHeartbeatWritesNoInstanceRow() async throws {
        try await SchedulerCluster.with { cluster in
            // Beaten by hand, one heartbeat at a time.
            let agent = SimulatedAgent("steady", client: cluster.client)
            try await agent.register(cpu: 8000)
            try await cluster.apply("calm", replicas: 3, cpu: 100)
            try await cluster.eventually("3 Running and ready") {
                try await agent.beat()
                let instances = try await cluster.instances("calm")
                return instances.count == 3 && instances.allSatisfy { $0.state == "Running" && $0.ready }
            }
            try await agent.beat()
            let before = try await Self.versions(cluster, "calm")
            for _ in 0..<3 { try await agent.beat() }
            #expect(try await Self.versions(cluster, "calm") == before, "three steady heartbeats wrote no instance row")

            // Usage alone: not in the heartbeat's transaction, but written by the replica within its interval.
            agent.setUsage("calm", cpuMillis: 42, memoryBytes: 42 << 20)
            try await agent.beat()
            try await cluster.eventually("the usage written") {
                try await cluster.instances("calm").allSatisfy { $0.usage.cpuMillis == 42 && $0.usage.memoryBytes == 42 << 20 }
            }
            let written = try await Self.versions(cluster, "calm")
            try await agent.beat()
            #expect(try await Self.versions(cluster, "calm") == written, "the same usage again writes nothing")

            // A change of state is written by the heartbeat itself: seen as soon as it is answered.
            agent.setEnded("calm", "Failed")
            try await agent.beat()
            #expect(try await cluster.instances("calm").allSatisfy { $0.state == "Failed" && $0.exitCode == 1 && !$0.ready })
        }
    }

    /// A steady node's heartbeats are answered from memory: its row is written by the replica's liveness flush
    /// (one statement for every node heard), not by each heartbeat; and the lease each of them grants never
    /// outlasts the one persisted (checked after every heartbeat against the row).
    @Test func aSteadyNodesHeartbeatsWriteItsRowOncePerFlushAndNoGrantOutlastsTheRow() async throws {
        // A 60 s lease: a heartbeat goes through the row once the stored lease is half spent, which a loaded
        // machine's delays must never reach here (with 12 s they once did).
        try await SchedulerCluster.with(extra: ["--liveness-flush-interval", "4", "--node-lease", "60"]) { cluster in
            let agent = SimulatedAgent("quiet", client: cluster.client)
            try await agent.register(cpu: 8000)
            func row() async throws -> (version: String, seen: Int64, left: Int64) {
                let rows = try await cluster.store.query(
                    """
                    SELECT xmin::text AS version, (extract(epoch FROM last_heartbeat) * 1000)::bigint AS seen,
                           (extract(epoch FROM lease_renewed_at - now()) * 1000)::bigint + lease_ttl_ms AS left_ms
                    FROM nodes WHERE name = 'quiet'
                    """)
                let found = try #require(rows.first)
                return (try found.decode(String.self, "version"), try found.decode(Int64.self, "seen"), try found.decode(Int64.self, "left_ms"))
            }
            // Heard, then the flush: it writes when the node was last heard and renews the lease.
            func flushed(since version: String) async throws {
                _ = try await agent.beat()
                try await cluster.eventually("the flush wrote the row", within: .seconds(15)) { try await row().version != version }
            }
            // The registration stored a lease (no grant) and this replica learned the node: even the first
            // heartbeat is answered from memory, with what is left of that lease.
            let first = try await agent.beat()
            #expect((50_000..<60_000).contains(first.leaseTtlMs), "\(first.leaseTtlMs)")
            let registered = try await row()
            try await flushed(since: registered.version)
            #expect(try await row().seen > registered.seen)

            // Just after a flush, 4 s before the next: five heartbeats, none of which writes the row. (Should a
            // loaded machine's pause let a flush fall among them, the five are beaten again.)
            var grants: [UInt32] = []
            var lastSent = ContinuousClock.now
            for _ in 0..<3 {
                let before = try await row()
                grants = []
                for _ in 0..<5 {
                    let sent = ContinuousClock.now
                    lastSent = sent
                    let answer = try await agent.beat()
                    let now = try await row()
                    let elapsed = ContinuousClock.now - sent
                    grants.append(answer.leaseTtlMs)
                    #expect(answer.health == "Ready" && answer.leaseTtlMs > 0)
                    // The agent counts the grant from `sent`: what the row holds from now, plus what passed since, covers it.
                    let elapsedMs = elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
                    #expect(now.left + elapsedMs + 1 >= Int64(answer.leaseTtlMs), "granted \(answer.leaseTtlMs) ms, the row holds \(now.left) ms")
                }
                if try await row().version == before.version { break }
                grants = []
            }
            #expect(grants.count == 5, "five steady heartbeats wrote no node row (three tries)")
            #expect(grants == grants.sorted(by: >) && grants.allSatisfy { $0 < 60_000 }, "grants shrink toward what was persisted: \(grants)")

            // After the next flush (4 s on), a grant ends later than the last one did: the renewal moved it on.
            // (Polled: the row may be committed a moment before the scheduler has taken in the flush's answer.)
            let lastEnd = lastSent + .milliseconds(Int64(grants.last ?? 0))
            try await flushed(since: try await row().version)
            try await cluster.eventually("a grant from the renewal", within: .seconds(15)) {
                let sent = ContinuousClock.now
                let later = try await agent.beat()
                return sent + .milliseconds(Int64(later.leaseTtlMs)) > lastEnd + .seconds(1)
            }
        }
    }

    /// A Suspect node's heartbeat is answered from memory too (Ready), while its row is locked by another
    /// transaction; the flush then makes it Ready with its event, for all such nodes in one statement.
    @Test func aSuspectNodeRecoversThroughTheFlushNotItsOwnTransaction() async throws {
        // A 60 s lease: the beat below must find it less than half spent however long the wait for Suspect takes
        // on a loaded machine (with the 9 s default it once went through the row and waited on the lock).
        try await SchedulerCluster.with(brokenAfter: 9, extra: ["--node-lease", "60"]) { cluster in
            let agent = SimulatedAgent("slow", client: cluster.client)
            try await agent.register(cpu: 8000)
            _ = try await agent.beat()
            try await cluster.eventually("Suspect after 3 s (and the flush's 0.2 s) of silence") { try await cluster.node("slow").health == "Suspect" }

            let (locked, signalLocked) = AsyncStream<Void>.makeStream()
            let (release, signalRelease) = AsyncStream<Void>.makeStream()
            defer { signalRelease.finish() }
            let holder = Task {
                try await cluster.store.transaction { tx in
                    _ = try await tx.query("SELECT 1 FROM nodes WHERE name = 'slow' FOR UPDATE")
                    signalLocked.yield()
                    var waiting = release.makeAsyncIterator()
                    await waiting.next()
                }
            }
            var iterator = locked.makeAsyncIterator()
            await iterator.next()
            // Its row locked elsewhere: a heartbeat that needed it would wait for the lock (past its deadline).
            let answer = try await agent.beat()
            #expect(answer.health == "Ready" && answer.leaseTtlMs > 0 && !answer.fence)
            signalRelease.finish()
            try await holder.value
            try await cluster.eventually("Ready again, stored by the flush") { try await cluster.node("slow").health == "Ready" }
            let events = try await cluster.events("node", "slow")
            #expect(events.map(\.reason).suffix(2) == ["Suspect", "Ready"] && events.last?.message == "heartbeats resumed", "\(events.map(\.reason))")
        }
    }
}
