/// The lifecycle of an instance (DESIGN.md, "Instance lifecycle").
public enum InstanceState: String, Sendable, CaseIterable, Codable {
    case pending = "Pending"
    case scheduled = "Scheduled"
    case starting = "Starting"
    case running = "Running"
    case succeeded = "Succeeded"
    case failed = "Failed"
    case oomKilled = "OOMKilled"
    case killed = "Killed"
    case needMigration = "NeedMigration"
    case terminating = "Terminating"
    case terminated = "Terminated"

    /// States an instance never leaves except by being deleted or rescheduled.
    public var isFinal: Bool {
        switch self {
        case .succeeded, .failed, .oomKilled, .killed, .terminated: true
        default: false
        }
    }

    /// Whether the lifecycle allows going from this state to `next`.
    public func canMove(to next: InstanceState) -> Bool {
        if next == .terminating { return self != .terminated }
        switch (self, next) {
        case (.pending, .scheduled), (.scheduled, .starting), (.starting, .running),
            (.running, .needMigration), (.needMigration, .scheduled), (.terminating, .terminated):
            return true
        case (.scheduled, _), (.starting, _), (.running, _):
            // Scheduled: it could not start (a bad image), or ended before a heartbeat saw it run.
            return [.succeeded, .failed, .oomKilled, .killed].contains(next)
        default:
            return false
        }
    }
}
