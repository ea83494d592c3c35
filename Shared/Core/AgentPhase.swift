/// What a node's agent does with one instance it was given: the agent's own lifecycle. Its phases are reported
/// to the scheduler as instance states (`reported`), so every move here is one the instance lifecycle allows an
/// agent's report to make (`AgentPhaseTests` checks that).
public enum AgentPhase: String, Sendable, CaseIterable {
    /// Being started (image, network, config, runc).
    case starting
    case running
    /// Ended or could not start; the restart policy starts it again after a wait.
    case backOff
    /// Ended for good (the restart policy said no).
    case ended
    /// Stopped by its own node: the control plane was out of reach past the Broken timeout (self-fencing apps).
    case selfFenced

    public struct Transition: Hashable, Sendable {
        public let from: AgentPhase
        public let to: AgentPhase
        public let why: String
    }

    public static let transitions: [Transition] = [
        Transition(from: .starting, to: .running, why: "its process runs"),
        Transition(from: .starting, to: .backOff, why: "the start failed; the restart policy retries it"),
        Transition(from: .starting, to: .ended, why: "the start failed; the restart policy does not retry it"),
        Transition(from: .running, to: .backOff, why: "it ended; the restart policy restarts it"),
        Transition(from: .running, to: .ended, why: "it ended; the restart policy does not restart it"),
        Transition(from: .running, to: .selfFenced, why: "the control plane was out of reach too long"),
        Transition(from: .selfFenced, to: .backOff, why: "the control plane answers again"),
        Transition(from: .backOff, to: .starting, why: "its wait is over, or a new config version came"),
    ]

    /// Whether the agent may go from this phase to `next` (staying in a phase, with new details, always may).
    public func canMove(to next: AgentPhase) -> Bool {
        next == self || Self.transitions.contains { $0.from == self && $0.to == next }
    }

    /// The instance state reported for this phase; nil for `ended`, whose state is its ending's.
    public var reported: InstanceState? {
        switch self {
        case .starting: .starting
        case .running: .running
        // Not running, and started again once the control plane answers: waiting, as a back-off waits.
        case .backOff, .selfFenced: .backOff
        case .ended: nil
        }
    }
}
