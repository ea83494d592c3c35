import Core
import Foundation
import Logging
import Protocol
import ServiceLifecycle
import Store
import Synchronization

/// What a heartbeat's instance statuses change, written only where something the control plane acts on
/// changed: state, generation, readiness, the applied limit, exit code, reason, restarts, the next retry. A
/// steady node's heartbeat writes no instance row; its instances' usage goes to `usage`, which this replica
/// writes in one statement every interval.
struct StatusReports: Sendable {
    let usage: InstanceUsageBuffer

    /// Each status decided against the instance as stored. `rows` holds only what changes.
    struct Outcome {
        var rows = InstancesTable.Reports()
        var changes: [(id: String, state: InstanceState, detail: String)] = []
        /// Instances that turn Running, and Running and ready: an ordered app's next ordinal may start.
        var nowRunning: [String] = []
        var nowServing: [String] = []
        /// Generations reported that this node does not own and that still run.
        var stop: [Sigma_V1_InstanceRef] = []
        /// Usage of the instances whose rows stay as they are.
        var steady: [(id: String, cpu: Int64, memory: Int64)] = []
    }

    static func decide(_ statuses: [Sigma_V1_InstanceStatus], _ current: [String: InstancesTable.Reported], node: String) -> Outcome {
        var outcome = Outcome()
        for status in statuses {
            let id = status.instanceID
            let reported = InstanceState(rawValue: status.state)!
            guard let known = current[id], known.generation == status.generation else {
                if !reported.isFinal {
                    var ref = Sigma_V1_InstanceRef()
                    (ref.instanceID, ref.generation) = (id, status.generation)
                    outcome.stop.append(ref)
                }
                continue
            }
            // Only moves an agent's report can make (an instance the scheduler moved or is removing stays so).
            let state = known.state.canBeReported(as: reported) ? reported : known.state
            let next = InstancesTable.Reported(
                generation: known.generation, state: state, ready: status.ready && state == .running,
                appliedCPU: status.hasAppliedLimit ? status.appliedLimit.cpuMillis : nil,
                appliedMemory: status.hasAppliedLimit ? status.appliedLimit.memoryBytes : nil, exitCode: Int(status.exitCode),
                // An agent's reason replaces the last one; an empty one keeps the scheduler's (e.g. "migrated"),
                // but not a readiness complaint once the instance is ready (the same rule as the write's).
                reason: !status.reason.isEmpty ? status.reason
                    : status.ready && state == .running && known.reason.hasPrefix("not ready: ") ? "" : known.reason,
                restarts: Int(max(0, status.restarts)), retryMs: state == .backOff ? status.nextRetryUnixMs : 0)
            guard next != known else {
                outcome.steady.append((id, status.usage.cpuMillis, status.usage.memoryBytes))
                continue
            }
            outcome.rows.add(id: id, next, reportedReason: status.reason, usage: status.usage)
            if state == .running && known.state != .running { outcome.nowRunning.append(id) }
            if state == .running && status.ready && !(known.state == .running && known.ready) { outcome.nowServing.append(id) }
            if state != known.state {
                outcome.changes.append((id, state, status.reason.isEmpty ? "reported by \(node)" : "\(status.reason) (exit \(status.exitCode)) on \(node)"))
            }
        }
        return outcome
    }

    /// Updates the instances this node owns at the reported generation. Returns the generations reported that
    /// it does not own and that still run (to stop); a final report of an old generation only says it is gone.
    /// Rows are read without a lock; those that change are locked and decided again on what is then stored.
    /// `priors: false` when the node is known to hold no prior copies (`NodeLiveness`): they are not read.
    func apply(_ tx: Transaction, node: String, _ statuses: [Sigma_V1_InstanceStatus], priors readPriors: Bool = true) async throws -> [Sigma_V1_InstanceRef] {
        let priors = readPriors ? try await settlePriors(tx, node: node, statuses) : []
        guard !statuses.isEmpty else { return priors }
        let first = Self.decide(statuses, try await InstancesTable.reported(tx, ids: Array(Set(statuses.map(\.instanceID))), node: node), node: node)
        var outcome = first
        if !first.rows.ids.isEmpty {
            let changing = Set(first.rows.ids)
            let locked = try await InstancesTable.reported(tx, ids: first.rows.ids, node: node, forUpdate: true)
            outcome = Self.decide(statuses.filter { changing.contains($0.instanceID) }, locked, node: node)
            outcome.stop = first.stop + outcome.stop
            outcome.steady += first.steady
        }
        usage.note(outcome.steady)
        usage.written(outcome.rows)
        try await InstancesTable.apply(tx, outcome.rows)
        for (state, group) in Dictionary(grouping: outcome.changes, by: \.state) {
            try await Events.record(tx, .instance, group.map(\.id), state.rawValue, group.map(\.detail))
        }
        try await Assignments.releaseSuccessors(tx, running: outcome.nowRunning, serving: outcome.nowServing)
        let asked = Set(outcome.stop.map { "\($0.instanceID)/\($0.generation)" })
        return outcome.stop + priors.filter { !asked.contains("\($0.instanceID)/\($0.generation)") }
    }

    /// The copies this node may still run of instances placed elsewhere (`prior_node`): each one it reports
    /// final is gone, and its successor may start (safe mode); each one it does not report at all is asked
    /// for in `stop`, so the agent stops it or, never having run it, says so and never will. Returns those asks.
    private func settlePriors(_ tx: Transaction, node: String, _ statuses: [Sigma_V1_InstanceStatus]) async throws -> [Sigma_V1_InstanceRef] {
        let priors = try await InstancesTable.priors(tx, node: node)
        guard !priors.isEmpty else { return [] }
        var reported: [String: InstanceState] = [:]
        for status in statuses { reported["\(status.instanceID)/\(status.generation)"] = InstanceState(rawValue: status.state) }
        var gone: [(id: String, generation: Int64)] = []
        var ask: [Sigma_V1_InstanceRef] = []
        for prior in priors {
            switch reported["\(prior.id)/\(prior.generation)"] {
            case .some(let state) where state.isFinal: gone.append((prior.id, prior.generation))
            case .some: break  // it runs: `stop` asks for it already
            case .none:
                var ref = Sigma_V1_InstanceRef()
                (ref.instanceID, ref.generation) = (prior.id, prior.generation)
                ask.append(ref)
            }
        }
        try await Assignments.priorsGone(tx, InstancesTable.clearPriors(tx, node: node, gone), because: "reported stopped by \(node)")
        return ask
    }
}

/// The latest usage reported for each instance whose row a heartbeat did not write, kept by this replica and
/// written every `interval` (`InstancesTable.writeUsage`, in statements of at most `chunk` rows): what `top`,
/// the pool figures and the usage history read is at most that old. A sample equal to the one this replica
/// last wrote (or saw written) for the instance is not written again for `rewriteAfter` flushes (after which it
/// is, in case another replica wrote another value meanwhile).
final class InstanceUsageBuffer: Sendable {
    typealias Sample = (cpu: Int64, memory: Int64)
    struct State {
        var pending: [String: Sample] = [:]
        /// What this replica last wrote or saw written, and at which flush.
        var written: [String: (sample: Sample, flush: Int)] = [:]
        var flushes = 0
    }
    private let state = Mutex(State())
    static let chunk = 500
    /// Flushes after which an unchanged sample is written again.
    static let rewriteAfter = 12

    func note(_ usage: [(id: String, cpu: Int64, memory: Int64)]) {
        guard !usage.isEmpty else { return }
        state.withLock { state in
            for entry in usage {
                if let known = state.written[entry.id], known.sample == (entry.cpu, entry.memory),
                   state.flushes - known.flush < Self.rewriteAfter { continue }
                state.pending[entry.id] = (entry.cpu, entry.memory)
            }
        }
    }

    /// Rows a heartbeat wrote with their usage just now: an older buffered sample must not overwrite it.
    func written(_ rows: InstancesTable.Reports) {
        guard !rows.ids.isEmpty else { return }
        state.withLock { state in
            for (index, id) in rows.ids.enumerated() {
                state.pending[id] = nil
                state.written[id] = ((rows.cpu[index], rows.memory[index]), state.flushes)
            }
        }
    }

    /// What waits to be written, in chunks; forgets what was written long ago (deleted instances among it).
    func take() -> [[(id: String, sample: Sample)]] {
        state.withLock { state in
            defer { state.pending = [:] }
            state.flushes += 1
            let flushes = state.flushes
            state.written = state.written.filter { flushes - $0.value.flush <= Self.rewriteAfter }
            let entries = state.pending.map { (id: $0.key, sample: $0.value) }
            return entries.chunks(of: Self.chunk)
        }
    }

    /// A chunk now stored.
    func stored(_ chunk: [(id: String, sample: Sample)]) {
        state.withLock { state in for entry in chunk { state.written[entry.id] = (entry.sample, state.flushes) } }
    }
}

/// Writes the buffered usage every interval, and once more at shutdown.
struct InstanceUsageWriter: Service {
    let buffer: InstanceUsageBuffer
    let store: Store
    let interval: Duration
    let logger: Logger

    func run() async throws { try await Periodically.run(every: interval, flush) }

    func flush() async {
        for chunk in buffer.take() {
            do {
                try await InstancesTable.writeUsage(store, ids: chunk.map(\.id), cpu: chunk.map(\.sample.cpu), memory: chunk.map(\.sample.memory))
                buffer.stored(chunk)
            } catch {
                logger.warning("instance usage not written; the next interval writes newer", metadata: ["instances": "\(chunk.count)", "error": "\(error)"])
            }
        }
    }
}
