import Foundation
import Logging
import Store
import Synchronization

/// Active/standby: a short lease in PostgreSQL. The holder renews it every third of its duration; another
/// scheduler takes it once it has expired. The term rises with every change of holder, and the leader's
/// writes check that it still holds the lease (`holds`), so a paused ex-leader cannot double-book capacity.
final class Lease: Sendable {
    let store: Store
    let name: String
    let holder: String
    let duration: Duration
    let logger: Logger
    private let state = Mutex<(held: Bool, term: Int64)>((false, 0))
    private let renewed = Mutex<ContinuousClock.Instant?>(nil)

    init(store: Store, name: String = "scheduler", duration: Duration, logger: Logger) {
        self.store = store
        self.name = name
        self.holder = "\(ProcessInfo.processInfo.hostName)/\(getpid())/\(UInt32.random(in: 0...UInt32.max))"
        self.duration = duration
        self.logger = logger
    }

    var isHeld: Bool { state.withLock { $0.held } }
    var role: String { isHeld ? "active" : "standby" }

    /// Takes or renews the lease; false when another holder's lease is still valid.
    func acquire() async throws -> Bool {
        let millis = Int64(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
        let rows = try await store.query(
            """
            INSERT INTO leases (name, holder, term, expires_at) VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond')
            ON CONFLICT (name) DO UPDATE SET
                term = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.term ELSE leases.term + 1 END,
                holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
            WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()
            RETURNING term
            """, name, holder, millis)
        let term = try rows.first?.decode(Int64.self, "term")
        renewed.withLock { $0 = term == nil ? nil : .now }
        let (was, now) = state.withLock { state -> (Bool, Bool) in
            let was = state.held
            state = (term != nil, term ?? state.term)
            return (was, state.held)
        }
        if now && !was { logger.notice("became the active scheduler", metadata: ["term": "\(term!)", "holder": "\(holder)"]) }
        if was && !now { logger.warning("lost the scheduler lease; standing by") }
        return now
    }

    /// Renews the lease when a third of its duration has passed since the last renewal, so that a long pass
    /// (thousands of bindings) keeps it; throws `LeaseLost` when another scheduler has it.
    func renewIfDue() async throws {
        let due = renewed.withLock { last in last.map { ContinuousClock.now - $0 > duration / 3 } ?? true }
        guard due else { return }
        guard try await acquire() else { throw LeaseLost() }
    }

    /// Marks the lease as not held (after a failed renewal), so the loop stops acting before it expires.
    func lost() {
        let was = state.withLock { state -> Bool in
            defer { state.held = false }
            return state.held
        }
        if was { logger.warning("could not renew the scheduler lease; standing by") }
    }

    /// Fails the transaction unless this scheduler still holds an unexpired lease.
    func check(_ tx: Transaction) async throws {
        let rows = try await tx.query(
            "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND expires_at > now() FOR SHARE", name, holder)
        guard !rows.isEmpty else {
            lost()
            throw LeaseLost()
        }
    }

    func release() async {
        _ = try? await store.execute("DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder)
    }
}

struct LeaseLost: Error, CustomStringConvertible {
    var description: String { "this scheduler no longer holds the lease" }
}
