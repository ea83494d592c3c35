import Core
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC
import ClientKit
import Hosting

/// How the agent behaves; flags of `sigma-agent`.
struct AgentSettings: Sendable {
    var node: NodeContext
    var stopGrace: Duration = .seconds(10)
    /// First wait before restarting an instance that ended; doubles each time up to `restartBackoffLimit`, and
    /// starts over once an instance ran for `restartBackoffReset`.
    var restartBackoff: Duration = .seconds(1)
    var restartBackoffLimit: Duration = .seconds(60)
    var restartBackoffReset: Duration = .seconds(60)
    /// How often running instances are checked for an ending.
    var watchInterval: Duration = .milliseconds(100)
    /// Parallel starts in one pass.
    var startConcurrency = 8
}

/// One instance this node runs (or ran), as the agent sees it.
struct LocalInstance: Sendable {
    enum Phase: Sendable, Equatable {
        case starting
        case running(since: ContinuousClock.Instant)
        /// Ended; restarted at `until` (the restart policy allowed it).
        case backoff(until: ContinuousClock.Instant)
        /// Ended for good (the restart policy said no, or it could not start).
        case ended
        /// Stopped by its own node: the control plane was out of reach too long (self-fencing apps).
        case selfFenced

        /// The phase of the agent's lifecycle (Shared/Core's `AgentPhase`, which says which moves exist).
        var kind: AgentPhase {
            switch self {
            case .starting: .starting
            case .running: .running
            case .backoff: .backOff
            case .ended: .ended
            case .selfFenced: .selfFenced
            }
        }
    }

    var assignment: Sigma_V1_Assignment
    var phase: Phase
    var pid: Int32 = 0
    var restarts = 0
    var lastEnding: InstanceEnding?
    var network: InstanceNetwork?
    var applied: CgroupLimits?
    var limitProblem: String?
    var lastCPU: (nanos: UInt64, at: ContinuousClock.Instant)?
    /// From the assignment's arrival to the process running, for its first start.
    var startLatency: Duration?
    var probes = ProbeState()
    /// Being stopped by the agent itself (a failed liveness probe): its ending is handled there, not by the watch.
    var killing = false
    /// Why the agent ended it, when it did ("liveness probe failed ...", "self-fenced ...").
    var endNote: String?
    /// The ConfigCenter version written into it.
    var configVersion: Int64?

    var lifecycle: Lifecycle { assignment.appSpec.lifecycle ?? Lifecycle() }

    /// Moves to `next` when the agent's lifecycle has that move (`AgentPhase.transitions`); otherwise nothing
    /// changes and the answer is false (the caller logs it: a bug, never a state to act on).
    @discardableResult
    mutating func move(to next: Phase) -> Bool {
        guard phase.kind.canMove(to: next.kind) else { return false }
        phase = next
        return true
    }
}

/// The node agent's state: what the scheduler wants here (assignments) against what runs (the runtime), with
/// the reconcile pass that moves one toward the other. Every change wakes the pass; a pass only acts on a
/// copy of the state it read, and writes back what it did.
