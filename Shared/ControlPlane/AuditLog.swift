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

/// The audit log: who called which write method, when, about what, and how it ended. Entries are written in
/// batches a few times a second (one INSERT each), so auditing costs the calls no round trip; an entry
/// made in the last fraction of a second before a crash can be lost. Repeats within a batch are folded into
/// one entry with their count (`repeats`): the same call by the same caller with the same outcome, and for
/// callers nobody knows the same refusal from any key (the entry keeps the first key and says how many there
/// were). At most 50,000 distinct entries wait; beyond that new ones are counted and dropped. The scheduler
/// prunes entries past `--audit-retention`.
public final class AuditLog: Service, Sendable {
    struct Entry: Sendable {
        var service: String
        var method: String
        var caller: String
        var role: String
        var key: String
        var status: String
        var subject: String
        var message: String
        var repeats = 1
        var keys: Set<String> = []

        /// What makes two entries one: everything but the key of an unknown caller (who picks keys freely).
        var fold: [String] {
            [service, method, caller, role, caller == "unknown" ? "" : key, status, subject, message]
        }
    }

    struct Pending {
        var entries: [Entry] = []
        var index: [[String]: Int] = [:]
        var dropped = 0

        /// Folds `entry` into the one it repeats, or queues it while there is room (else counts it dropped).
        /// At most 10,000 keys are kept per entry (they are only counted).
        mutating func add(_ entry: Entry, capacity: Int) {
            let fold = entry.fold
            if let at = index[fold] {
                entries[at].repeats += entry.repeats
                if entries[at].keys.count < 10_000 { entries[at].keys.formUnion(entry.keys) }
            } else if entries.count < capacity {
                index[fold] = entries.count
                entries.append(entry)
            } else {
                dropped += entry.repeats
            }
        }
    }

    let store: Store
    let logger: Logger
    let interval: Duration
    private let pending = Mutex(Pending())
    private let capacity = 50_000

    init(store: Store, logger: Logger, interval: Duration = .milliseconds(200)) {
        self.store = store
        self.logger = logger
        self.interval = interval
    }

    func record(service: ServiceKind, method: String, caller: Principal?, key: String?, status: StatusCode,
                subject: String, message: String) {
        var entry = Entry(
            service: service.rawValue, method: String(method.prefix(200)),
            caller: caller?.name ?? (key == nil ? "anonymous" : "unknown"), role: caller?.role.rawValue ?? "",
            key: key ?? "", status: status.name, subject: String(subject.prefix(200)), message: String(message.prefix(500)))
        entry.keys = [entry.key]
        pending.withLock { $0.add(entry, capacity: capacity) }
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await gracefulSleep(for: interval)
            await flush()
        }
        await flush()
    }

    /// Writes what is waiting; kept for the next try when the database does not take it.
    public func flush() async {
        let (entries, dropped) = pending.withLock { pending in
            defer { pending = Pending() }
            return (pending.entries.map { entry -> Entry in
                var entry = entry
                if entry.keys.count > 1 { entry.message = String((entry.message + " (from \(entry.keys.count) keys)").prefix(500)) }
                return entry
            }, pending.dropped)
        }
        if dropped > 0 { logger.error("audit log overflowed; entries dropped", metadata: ["dropped": "\(dropped)"]) }
        guard !entries.isEmpty else { return }
        do {
            _ = try await store.execute(
                """
                INSERT INTO audit_log (service, method, caller, role, caller_key, status, subject, message, repeats)
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                                     $9::int[])
                """, entries.map(\.service), entries.map(\.method), entries.map(\.caller), entries.map(\.role),
                entries.map(\.key), entries.map(\.status), entries.map(\.subject), entries.map(\.message), entries.map(\.repeats))
        } catch {
            pending.withLock { pending in
                // Kept for the next try, before what came since (folded again on the way back in).
                let newer = pending.entries
                pending = Pending(dropped: pending.dropped)
                for entry in entries + newer { pending.add(entry, capacity: capacity) }
            }
            logger.warning("cannot write the audit log yet; kept for the next try", metadata: ["entries": "\(entries.count)", "error": "\(error)"])
        }
    }
}
