/// The lifecycle of an instance (docs/protocol.md, the states of `Instance`). `transitions` is the only authority on
/// which moves exist: the scheduler's heartbeat handling asks `canMove`, and the database refuses any other
/// move (migration 16 holds the same table; `StateConstraintTests` checks that the two agree).
public enum InstanceState: String, Sendable, CaseIterable, Codable {
    case pending = "Pending"
    case scheduled = "Scheduled"
    case starting = "Starting"
    case running = "Running"
    /// Ended, and its restart policy restarts it after a wait (a crash loop, or a start that failed).
    case backOff = "BackOff"
    case succeeded = "Succeeded"
    case failed = "Failed"
    case oomKilled = "OOMKilled"
    case killed = "Killed"
    case needMigration = "NeedMigration"
    case terminating = "Terminating"
    case terminated = "Terminated"

    /// What moves an instance from one state to the next.
    public enum Event: String, Sendable, CaseIterable {
        /// The scheduler bound it to a node (a first placement, or a move).
        case placed
        /// Its agent began to start it (the first time, or again after a back-off).
        case starting
        /// Its agent reports its process running.
        case ran
        /// It ended (or could not start) and its restart policy restarts it after a wait.
        case backedOff
        /// It ended and its restart policy does not restart it.
        case ended
        /// It must run elsewhere: its node broke or drains, an operator moved it, or a rollout re-places it.
        case moved
        /// An operator restarted it after it ended (`RestartInstance`): it is placed again, as a new generation.
        case restarted
        /// Deleted or scaled away while its node may still run it: the agent stops it.
        case stopping
        /// Deleted or scaled away while nothing runs it (never bound, waiting to move, or ended).
        case removed
        /// Its agent confirmed the stop, or its node was declared Broken (it stops what it no longer owns).
        case stopped
    }

    public struct Transition: Hashable, Sendable, CustomStringConvertible {
        public let from: InstanceState
        public let event: Event
        public let to: InstanceState
        public var description: String { "\(from.rawValue) --\(event.rawValue)--> \(to.rawValue)" }
    }

    /// States in which the instance's node may run it: it holds that node's requests, host ports and SSDs,
    /// and a delete turns it Terminating (its agent must stop it).
    public static let live: Set<InstanceState> = [.scheduled, .starting, .running, .backOff]
    /// States whose endings are final (an instance leaves them only when deleted).
    public static let endings: Set<InstanceState> = [.succeeded, .failed, .oomKilled, .killed]
    /// States that hold what the instance was given on its node (requests, ports, SSDs).
    public static let holding: Set<InstanceState> = live.union([.needMigration, .terminating])
    /// States whose instance has a route on the overlay (its IP leads to its node).
    public static let routed: Set<InstanceState> = live.union([.needMigration])
    /// States whose instance may use its instance token (ConfigCenter, Discovery): everywhere it may run.
    public static let tokenValid: Set<InstanceState> = live.union([.needMigration, .terminating])
    /// States an agent reports of an instance it runs or ran.
    public static let reportable: Set<InstanceState> = Set<InstanceState>([.starting, .running, .backOff, .terminated]).union(endings)

    /// The table: every move there is, and the event that makes it.
    public static let transitions: [Transition] = {
        var table: [Transition] = []
        func add(_ from: [InstanceState], _ event: Event, _ to: InstanceState) {
            table += from.map { Transition(from: $0, event: event, to: to) }
        }
        add([.pending, .needMigration], .placed, .scheduled)
        add([.scheduled, .running, .backOff], .starting, .starting)
        // A heartbeat may miss Starting (and a restart's BackOff): Scheduled → Running is a move too.
        add([.scheduled, .starting, .backOff], .ran, .running)
        add([.scheduled, .starting, .running], .backedOff, .backOff)
        for ending in endings.sorted(by: { $0.rawValue < $1.rawValue }) {
            add([.scheduled, .starting, .running, .backOff], .ended, ending)
        }
        add([.scheduled, .starting, .running, .backOff], .moved, .needMigration)
        add(endings.sorted(by: { $0.rawValue < $1.rawValue }), .restarted, .needMigration)
        add([.scheduled, .starting, .running, .backOff], .stopping, .terminating)
        add([.pending, .needMigration] + endings.sorted(by: { $0.rawValue < $1.rawValue }), .removed, .terminated)
        add([.terminating], .stopped, .terminated)
        return table
    }()

    /// States an instance never leaves except by being deleted or rescheduled.
    public var isFinal: Bool { self == .terminated || Self.endings.contains(self) }

    /// Whether the lifecycle allows going from this state to `next`.
    public func canMove(to next: InstanceState) -> Bool { Self.transitions.contains { $0.from == self && $0.to == next } }

    /// The events an agent's report makes; every other move is the scheduler's.
    public static let reportedEvents: Set<Event> = [.starting, .ran, .backedOff, .ended, .stopped]

    /// Whether an agent reporting `next` moves the instance from this state there (an instance the scheduler
    /// moved or is removing is not brought back by a late report: NeedMigration → Terminated is the
    /// scheduler's move, never an agent's).
    public func canBeReported(as next: InstanceState) -> Bool {
        Self.transitions.contains { $0.from == self && $0.to == next && Self.reportedEvents.contains($0.event) }
    }

    /// The move `event` makes from this state, or nil where the event does not apply.
    public func after(_ event: Event) -> InstanceState? { Self.transitions.first { $0.from == self && $0.event == event }?.to }

    /// The states' names, for SQL (`state = ANY($1::text[])`), in a stable order.
    public static func names(_ states: Set<InstanceState>) -> [String] { allCases.filter(states.contains).map(\.rawValue) }
}

/// The reason an agent reports for an instance in `BackOff` (docs/protocol.md, "Instance states"): "back-off
/// 4s restarting after exit 1 (3 restart(s))". Written by the agent, read back by the scheduler's rollouts,
/// which name only the ending ("exit 1") beside their own restart count.
public enum BackOffReason {
    public static func text(waitSeconds: Int, after ending: String, restarts: Int) -> String {
        "back-off \(waitSeconds)s restarting after \(ending) (\(restarts) restart(s))"
    }

    /// The ending a back-off reason restarts after; a reason of another form as it is.
    public static func ending(of reason: String) -> String {
        var rest = Substring(reason)
        guard rest.hasPrefix("back-off ") else { return reason }
        rest = rest.dropFirst("back-off ".count).drop(while: \.isNumber)
        guard rest.hasPrefix("s restarting after "), rest.hasSuffix(" restart(s))") else { return reason }
        rest = rest.dropFirst("s restarting after ".count).dropLast(" restart(s))".count)
        let count = rest.reversed().prefix(while: \.isNumber).count
        rest = rest.dropLast(count)
        guard count > 0, rest.hasSuffix(" (") else { return reason }
        return String(rest.dropLast(2))
    }
}
