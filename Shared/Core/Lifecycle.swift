/// How the agent runs, watches and stops each instance of an app.
public struct Lifecycle: Hashable, Sendable, Codable {
    /// Seconds between SIGTERM and SIGKILL when an instance is stopped.
    public var stopGracePeriodSeconds: Int
    /// A failing liveness probe restarts the instance (as its restart policy allows).
    public var liveness: Probe?
    /// Until its readiness probe passes an instance is not ready: `startup: ordered-ready` waits for it and
    /// Discovery's ready filter leaves it out. Without one, an instance is ready once it runs.
    public var readiness: Probe?
    /// Instances stop when their agent has lost every control-plane endpoint for longer than the Broken timeout,
    /// for apps that must never run twice.
    public var selfFencing: Bool
    /// What tells the app a pushed config change was written (a signal or a command); nothing when absent.
    public var reload: ReloadAction?

    public static let defaultGracePeriodSeconds = 10

    public init(stopGracePeriodSeconds: Int = Lifecycle.defaultGracePeriodSeconds, liveness: Probe? = nil, readiness: Probe? = nil,
                selfFencing: Bool = false, reload: ReloadAction? = nil) {
        self.stopGracePeriodSeconds = stopGracePeriodSeconds
        self.liveness = liveness
        self.readiness = readiness
        self.selfFencing = selfFencing
        self.reload = reload
    }

    func problems() -> [SpecProblem] {
        var problems: [SpecProblem] = []
        if !(0...3600).contains(stopGracePeriodSeconds) {
            problems.append(SpecProblem(field: "lifecycle.stopGracePeriodSeconds", reason: "\(stopGracePeriodSeconds) is not between 0 and 3600"))
        }
        if let liveness { problems += liveness.problems(field: "lifecycle.livenessProbe") }
        if let readiness { problems += readiness.problems(field: "lifecycle.readinessProbe") }
        if let reload { problems += reload.problems() }
        return problems
    }
}

/// A check the agent runs on an instance every `periodSeconds`: a command inside it (exit 0 passes) or a TCP
/// connection to one of its ports. `failureThreshold` failures in a row make it fail.
public struct Probe: Hashable, Sendable, Codable {
    public var exec: [String]
    public var tcpPort: Int
    public var periodSeconds: Int
    public var failureThreshold: Int
    public var initialDelaySeconds: Int
    public var timeoutSeconds: Int

    public init(exec: [String] = [], tcpPort: Int = 0, periodSeconds: Int = 10, failureThreshold: Int = 3,
                initialDelaySeconds: Int = 0, timeoutSeconds: Int = 1) {
        self.exec = exec
        self.tcpPort = tcpPort
        self.periodSeconds = periodSeconds
        self.failureThreshold = failureThreshold
        self.initialDelaySeconds = initialDelaySeconds
        self.timeoutSeconds = timeoutSeconds
    }

    func problems(field: String) -> [SpecProblem] {
        var problems: [SpecProblem] = []
        func check(_ ok: Bool, _ name: String, _ reason: String) {
            if !ok { problems.append(SpecProblem(field: "\(field).\(name)", reason: reason)) }
        }
        check(exec.isEmpty != (tcpPort == 0), "exec", "give exactly one of exec and tcpPort")
        check(tcpPort == 0 || (1...65535).contains(tcpPort), "tcpPort", "\(tcpPort) is not a port (1-65535)")
        check((1...3600).contains(periodSeconds), "periodSeconds", "\(periodSeconds) is not between 1 and 3600")
        check((1...100).contains(failureThreshold), "failureThreshold", "\(failureThreshold) is not between 1 and 100")
        check((0...3600).contains(initialDelaySeconds), "initialDelaySeconds", "\(initialDelaySeconds) is not between 0 and 3600")
        check((1...600).contains(timeoutSeconds), "timeoutSeconds", "\(timeoutSeconds) is not between 1 and 600")
        return problems
    }
}

/// How an instance learns its config changed: a signal to its first process, or a command run inside it.
public struct ReloadAction: Hashable, Sendable, Codable {
    /// "SIGHUP", "SIGUSR1", ...
    public var signal: String
    public var command: [String]

    public static let signals = ["SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGQUIT", "SIGWINCH"]

    public init(signal: String = "", command: [String] = []) {
        self.signal = signal
        self.command = command
    }

    func problems() -> [SpecProblem] {
        if signal.isEmpty == command.isEmpty {
            return [SpecProblem(field: "lifecycle.reload", reason: "give exactly one of signal and command")]
        }
        if !signal.isEmpty && !Self.signals.contains(signal) {
            return [SpecProblem(field: "lifecycle.reload.signal", reason: "\"\(signal)\" is not one of \(Self.signals.joined(separator: ", "))")]
        }
        return []
    }
}
