/// A node's health as the scheduler sees it from heartbeats: Ready, then Suspect once heartbeats are late, then
/// Broken (its instances NeedMigration). A Broken node that heartbeats again is fenced first: it stops what it no
/// longer owns before it gets new work.
public enum NodeHealth: String, Hashable, Sendable, Codable, CaseIterable {
    case ready = "Ready"
    case suspect = "Suspect"
    case broken = "Broken"

    /// What moves a node's health.
    public enum Event: String, Sendable, CaseIterable {
        /// Its heartbeats are late (Suspect) or missing past the Broken threshold.
        case silence
        /// A heartbeat arrived from a node that was not Broken.
        case heartbeat
        /// A Broken node heartbeats again and has confirmed it stopped what it no longer owns.
        case fenced
    }

    public struct Transition: Hashable, Sendable {
        public let from: NodeHealth
        public let event: Event
        public let to: NodeHealth
    }

    /// Every move there is (the database refuses any other, migration 16). Only silence makes a node Suspect
    /// or Broken, never what it said.
    public static let transitions: [Transition] = [
        Transition(from: .ready, event: .silence, to: .suspect),
        Transition(from: .ready, event: .silence, to: .broken),
        Transition(from: .suspect, event: .silence, to: .broken),
        Transition(from: .suspect, event: .heartbeat, to: .ready),
        Transition(from: .broken, event: .fenced, to: .ready),
    ]

    public func canMove(to next: NodeHealth) -> Bool { Self.transitions.contains { $0.from == self && $0.to == next } }

    /// When a node turns Suspect and Broken after its last heartbeat.
    public struct Thresholds: Hashable, Sendable {
        public var suspectAfter: Double
        public var brokenAfter: Double

        /// Heartbeats every second by default: Suspect after 2 s without one, Broken after 5 s.
        public init(suspectAfter: Double = 2, brokenAfter: Double = 5) {
            self.suspectAfter = min(suspectAfter, brokenAfter)
            self.brokenAfter = brokenAfter
        }
    }

    /// The health a node has `silence` seconds after its last heartbeat. Broken is sticky: only a heartbeat
    /// that follows fencing (see `afterHeartbeat(fenced:)`) brings a node back.
    public func after(silence: Double, thresholds: Thresholds) -> NodeHealth {
        if self == .broken { return .broken }
        if silence >= thresholds.brokenAfter { return .broken }
        if silence >= thresholds.suspectAfter { return .suspect }
        return .ready
    }

    /// The health after a heartbeat arrives: a Suspect node is Ready again; a Broken one only once it has
    /// confirmed that it stopped the instances it no longer owns.
    public func afterHeartbeat(fenced: Bool) -> NodeHealth {
        switch self {
        case .ready, .suspect: .ready
        case .broken: fenced ? .ready : .broken
        }
    }
}
