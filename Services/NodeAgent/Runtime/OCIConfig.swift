import Foundation

/// The part of the OCI runtime spec (config.json) the agent writes. Field names are the spec's.
public struct OCIConfig: Codable, Sendable {
    public var ociVersion = "1.0.2"
    public var process: Process
    public var root: Root
    public var hostname: String
    public var mounts: [Mount]
    public var linux: Linux

    public struct Process: Codable, Sendable {
        public var terminal = false
        public var user = User()
        public var args: [String]
        public var env: [String]
        public var cwd: String
        public var capabilities: Capabilities
        public var rlimits: [Rlimit]
        public var noNewPrivileges = true
    }

    public struct User: Codable, Sendable {
        public var uid: UInt32 = 0
        public var gid: UInt32 = 0

        public init(uid: UInt32 = 0, gid: UInt32 = 0) {
            self.uid = uid
            self.gid = gid
        }
    }

    public struct Capabilities: Codable, Sendable {
        public var bounding: [String]
        public var effective: [String]
        public var permitted: [String]
    }

    public struct Rlimit: Codable, Sendable {
        public var type: String
        public var hard: UInt64
        public var soft: UInt64
    }

    public struct Root: Codable, Sendable {
        public var path: String
        public var readonly: Bool
    }

    public struct Mount: Codable, Sendable, Equatable {
        public var destination: String
        public var type: String
        public var source: String
        public var options: [String]

        public init(destination: String, type: String, source: String, options: [String]) {
            self.destination = destination
            self.type = type
            self.source = source
            self.options = options
        }

        /// A bind mount of a host path; read-only unless `writable`.
        public static func bind(_ source: String, at destination: String, writable: Bool) -> Mount {
            Mount(destination: destination, type: "bind", source: source,
                  options: ["rbind", "nosuid", "nodev", writable ? "rw" : "ro"])
        }
    }

    public struct Linux: Codable, Sendable {
        public var resources: Resources
        public var cgroupsPath: String
        public var namespaces: [Namespace]
        public var maskedPaths: [String]
        public var readonlyPaths: [String]
        /// Nil runs the instance without a filter (an app allowed `seccomp: unconfined`).
        public var seccomp: Seccomp?
    }

    /// `linux.seccomp`: what the runtime turns into the instance's filter.
    public struct Seccomp: Codable, Sendable, Equatable {
        public var defaultAction: String
        public var defaultErrnoRet: UInt32?
        public var architectures: [String]
        public var syscalls: [SeccompRule]
    }

    public struct SeccompRule: Codable, Sendable, Equatable {
        public var names: [String]
        public var action: String
        public var errnoRet: UInt32?
        public var args: [SeccompArgument]?

        public init(names: [String], action: String, errnoRet: UInt32?, args: [SeccompArgument]?) {
            self.names = names
            self.action = action
            self.errnoRet = errnoRet
            self.args = args
        }
    }

    /// One condition on a call's argument; for SCMP_CMP_MASKED_EQ, `(argument & value) == valueTwo`.
    public struct SeccompArgument: Codable, Sendable, Equatable {
        public var index: UInt
        public var value: UInt64
        public var valueTwo: UInt64?
        public var op: String

        public init(index: UInt, value: UInt64, valueTwo: UInt64?, op: String) {
            self.index = index
            self.value = value
            self.valueTwo = valueTwo
            self.op = op
        }
    }

    public struct Resources: Codable, Sendable {
        /// Limits are written by the agent itself (``Cgroup``), before the runtime starts the process; the
        /// runtime only gets the device rules.
        public var devices: [DeviceRule]
    }

    public struct DeviceRule: Codable, Sendable {
        public var allow: Bool
        public var access: String
    }

    public struct Namespace: Codable, Sendable {
        public var type: String
        public var path: String?
    }
}

/// Everything that makes one instance's config.json.
public struct InstanceProcess: Sendable {
    public var args: [String]
    public var env: [String: String]
    public var cwd: String = "/"
    public var hostname: String
    /// The root filesystem folder, and whether the instance may write to it.
    public var rootfs: String
    public var readonlyRoot: Bool
    /// Extra mounts (host mode's read-only system folders, the SSD, the config folder).
    public var mounts: [OCIConfig.Mount]
    public var cgroupsPath: String
    /// A network namespace the agent prepared (a path under /run/netns); nil = a new, empty one.
    public var networkNamespace: String?

    public init(args: [String], env: [String: String], hostname: String, rootfs: String, readonlyRoot: Bool,
                mounts: [OCIConfig.Mount], cgroupsPath: String, networkNamespace: String?) {
        self.args = args
        self.env = env
        self.hostname = hostname
        self.rootfs = rootfs
        self.readonlyRoot = readonlyRoot
        self.mounts = mounts
        self.cgroupsPath = cgroupsPath
        self.networkNamespace = networkNamespace
    }
}

extension OCIConfig {
    /// Docker's default capability set less CAP_NET_RAW (raw and packet sockets forge any source): enough for
    /// ordinary services, none that reach the host.
    public static let defaultCapabilities = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]

    /// The standard mounts of a container: /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys (read-only).
    static let standardMounts: [Mount] = [
        Mount(destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"]),
        Mount(destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount(destination: "/dev/pts", type: "devpts", source: "devpts",
              options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        Mount(destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        Mount(destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"]),
        Mount(destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"]),
    ]

    /// As many open files as the agent may have (raising the hard limit needs a privilege runc may lack).
    static func openFiles() -> Rlimit {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let hard = UInt64(limit.rlim_max)
        return Rlimit(type: "RLIMIT_NOFILE", hard: hard, soft: min(hard, 65536))
    }

    public init(_ instance: InstanceProcess) {
        let capabilities = Capabilities(
            bounding: Self.defaultCapabilities, effective: Self.defaultCapabilities, permitted: Self.defaultCapabilities)
        var environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        environment += instance.env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        process = Process(
            args: instance.args, env: environment, cwd: instance.cwd, capabilities: capabilities,
            rlimits: [Self.openFiles()])
        root = Root(path: instance.rootfs, readonly: instance.readonlyRoot)
        hostname = instance.hostname
        mounts = Self.standardMounts + instance.mounts
        linux = Linux(
            resources: Resources(devices: [DeviceRule(allow: false, access: "rwm")]),
            cgroupsPath: instance.cgroupsPath,
            namespaces: [
                Namespace(type: "pid"), Namespace(type: "network", path: instance.networkNamespace),
                Namespace(type: "ipc"), Namespace(type: "uts"), Namespace(type: "mount"),
            ],
            maskedPaths: [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            seccomp: nil)
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(self)
    }
}
