/// A node's health as the scheduler sees it from heartbeats: Ready, then Suspect once heartbeats are late, then
/// Broken (its instances NeedMigration). A Broken node that heartbeats again is fenced first: it stops what it no
/// longer owns before it gets new work.
public enum NodeHealth: String, Hashable, Sendable, Codable, CaseIterable {
    case ready = "Ready"
    case suspect = "Suspect"
    case broken = "Broken"

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
