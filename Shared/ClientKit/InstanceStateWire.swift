import Core
import Protocol

/// Between the lifecycles (Core) and their enums on the wire (states.proto).
extension InstanceState {
    public var code: Sigma_V1_InstanceStateCode {
        switch self {
        case .pending: .instanceStatePending
        case .scheduled: .instanceStateScheduled
        case .starting: .instanceStateStarting
        case .running: .instanceStateRunning
        case .backOff: .instanceStateBackOff
        case .succeeded: .instanceStateSucceeded
        case .failed: .instanceStateFailed
        case .oomKilled: .instanceStateOomKilled
        case .killed: .instanceStateKilled
        case .needMigration: .instanceStateNeedMigration
        case .terminating: .instanceStateTerminating
        case .terminated: .instanceStateTerminated
        }
    }

    /// The state an enum value names; nil for UNSPECIFIED and values this build does not know.
    public init?(code: Sigma_V1_InstanceStateCode) {
        guard let state = Self.allCases.first(where: { $0.code == code }) else { return nil }
        self = state
    }

    /// The state a message carries as a string and (from newer senders) as an enum: the enum when set, which
    /// must then name the same state as the string (when that is set too). Nil when neither names a state
    /// or the two disagree.
    public init?(name: String, code: Sigma_V1_InstanceStateCode) {
        let named = InstanceState(rawValue: name)
        if code == .instanceStateUnspecified {
            guard let named else { return nil }
            self = named
            return
        }
        guard let coded = InstanceState(code: code), name.isEmpty || named == coded else { return nil }
        self = coded
    }
}

extension NodeHealth {
    public var code: Sigma_V1_NodeHealthCode {
        switch self {
        case .ready: .nodeHealthReady
        case .suspect: .nodeHealthSuspect
        case .broken: .nodeHealthBroken
        }
    }
}
