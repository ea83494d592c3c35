import Core
import Foundation
import Logging

/// Where the agent's runtime finds its programs and keeps its files.
public struct RuntimeConfiguration: Sendable {
    /// The OCI runtime (runc; crun behaves the same on cgroup v2 hosts).
    public var runtime: String
    /// The per-instance monitor (sigma-monitor).
    public var monitor: String
    /// Instances, unpacked images and the runtime's own state live here.
    public var stateDirectory: String
    public var cgroupRoot: String
    public var cgroupVersion: CgroupVersion
    /// Every instance's cgroup is `<cgroupParent>/<instance>` ("sigma/node-1").
    public var cgroupParent: String
    public var logMaxBytes: Int64
    public var logKeep: Int
    /// A static init (Debian's tini-static) run as every instance's PID 1 in front of its command: it forwards
    /// signals to the command's process group and reaps orphans. Nil runs the command itself as PID 1 (which
    /// ignores every signal it has no handler for, SIGTERM included).
    public var initProgram: String?
    /// The seccomp profile every instance runs under, resolved for its capabilities; nil runs them all
    /// without a filter.
    public var seccomp: SeccompProfile?

    public init(runtime: String, monitor: String, stateDirectory: String, cgroupRoot: String = "/sys/fs/cgroup",
                cgroupVersion: CgroupVersion? = nil, cgroupParent: String, logMaxBytes: Int64 = 10 << 20, logKeep: Int = 3,
                initProgram: String? = nil, seccomp: SeccompProfile? = nil) {
        self.runtime = runtime
        self.monitor = monitor
        self.stateDirectory = stateDirectory
        self.cgroupRoot = cgroupRoot
        self.cgroupVersion = cgroupVersion ?? CgroupVersion.detect(root: cgroupRoot)
        self.cgroupParent = cgroupParent
        self.logMaxBytes = logMaxBytes
        self.logKeep = logKeep
        self.initProgram = initProgram
        self.seccomp = seccomp
    }
}

/// What one instance runs: the image, its command, its environment, its limits and what is mounted into it.
public struct LaunchRequest: Sendable {
    public var id: String
    public var image: ImageReference
    /// Replaces the image's entrypoint when not empty.
    public var command: [String]
    /// Replaces the image's cmd when not empty.
    public var args: [String]
    public var env: [String: String]
    public var hostname: String
    public var limits: CgroupLimits
    public var mounts: [OCIConfig.Mount]
    public var networkNamespace: String?
    /// Runs without the seccomp filter (an app whose team the operator allows `seccomp: unconfined`).
    public var unconfined: Bool
    /// `UID[:GID]` or `NAME[:GROUP]`; empty: the image's `User` (root when it has none, and for `host`).
    public var user: String = ""
    /// Refuses to start as uid 0.
    public var runAsNonRoot = false
    /// Lives on the node's lease (failover: safe): it does not start while the lease has lapsed, and its
    /// monitor kills it when the lease lapses, whether the agent runs or not.
    public var leased = false

    public init(id: String, image: ImageReference, command: [String] = [], args: [String] = [], env: [String: String] = [:],
                hostname: String? = nil, limits: CgroupLimits = CgroupLimits(), mounts: [OCIConfig.Mount] = [],
                networkNamespace: String? = nil, unconfined: Bool = false) {
        self.id = id
        self.image = image
        self.command = command
        self.args = args
        self.env = env
        self.hostname = hostname ?? id
        self.limits = limits
        self.mounts = mounts
        self.networkNamespace = networkNamespace
        self.unconfined = unconfined
    }
}

/// How an instance's process ended, precisely.
public enum InstanceEnding: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)
    /// The kernel's OOM killer killed it (from the cgroup's OOM counter, not guessed from the exit code).
    case oomKilled
    /// It never ran: a bad image, a runtime error.
    case failed(String)
    /// Its monitor killed it (or did not start it) because the node's lease lapsed (failover: safe).
    case fenced(String)

    /// The instance state this ending leaves ("Succeeded", "Failed", "OOMKilled", "Killed").
    public var state: String {
        switch self {
        case .exited(0): return "Succeeded"
        case .exited, .failed: return "Failed"
        case .oomKilled: return "OOMKilled"
        case .signaled, .fenced: return "Killed"
        }
    }

    /// The shell's convention: the code, or 128 + the signal.
    public var exitCode: Int32 {
        switch self {
        case .exited(let code): return code
        case .signaled(let signal): return 128 + signal
        case .oomKilled, .fenced: return 128 + SIGKILL
        case .failed: return -1
        }
    }

    public var succeeded: Bool { self == .exited(0) }

    public var description: String {
        switch self {
        case .exited(let code): return "exit \(code)"
        case .signaled(let signal): return "signal \(signalName(signal))"
        case .oomKilled: return "OOMKilled"
        case .failed(let reason): return "start failed: \(reason)"
        case .fenced(let reason): return "fenced: \(reason)"
        }
    }
}

/// The signals Sigma names (endings, reload actions), both ways.
let signalNames: [Int32: String] = [
    SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL", SIGABRT: "SIGABRT", SIGBUS: "SIGBUS",
    SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGUSR1: "SIGUSR1", SIGSEGV: "SIGSEGV", SIGUSR2: "SIGUSR2", SIGPIPE: "SIGPIPE",
    SIGALRM: "SIGALRM", SIGTERM: "SIGTERM", SIGWINCH: "SIGWINCH",
]

public func signalName(_ signal: Int32) -> String { signalNames[signal] ?? "\(signal)" }

/// "SIGHUP" → its number; nil for a name Sigma does not know.
public func signalNumber(_ name: String) -> Int32? { signalNames.first { $0.value == name }?.key }

public enum RuntimeError: Error, CustomStringConvertible {
    case missingProgram(String, String)
    case startFailed(id: String, reason: String)
    case unknownInstance(String)

    public var description: String {
        switch self {
        case .missingProgram(let what, let path): return "\(what) not found at \(path)"
        case .startFailed(let id, let reason): return "\(id): \(reason)"
        case .unknownInstance(let id): return "no instance \(id) on this node"
        }
    }
}

/// What the runtime remembers of one start, on disk next to the instance (so a restarted agent knows it).
public struct LaunchRecord: Codable, Sendable, Equatable {
    public var id: String
    public var pid: Int32
    public var imageDigest: String?
    public var overlay: Bool
    public var startedUnixMs: Int64
    /// Free-form facts the agent keeps with the instance (its generation, revision, ...).
    public var labels: [String: String]
    /// Who it runs as (nil in records written before users: root).
    public var user: InstanceUser? = nil
}

/// One instance found on disk (after an agent restart): still running, or ended while nobody watched.
public struct FoundInstance: Sendable {
    public var record: LaunchRecord
    public var ending: InstanceEnding?
}
