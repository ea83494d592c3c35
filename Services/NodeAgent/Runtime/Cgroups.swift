import Core
import Foundation

/// What the agent enforces on one instance. A limit of 0 means unlimited; swap is always off.
public struct CgroupLimits: Hashable, Sendable {
    /// CPU the instance may use (CFS quota over a 100 ms period); 0 = unlimited.
    public var cpuLimitMillis: Int64
    /// CPU the instance asked for: its share when the node is busy (cpu.shares / cpu.weight).
    public var cpuRequestMillis: Int64
    /// Memory limit in bytes; 0 = unlimited.
    public var memoryLimitBytes: Int64
    /// Most tasks (processes and threads) at once; 0 = unlimited.
    public var pids: Int64

    public static let defaultPids: Int64 = 4096

    public init(cpuLimitMillis: Int64 = 0, cpuRequestMillis: Int64 = 0, memoryLimitBytes: Int64 = 0,
                pids: Int64 = CgroupLimits.defaultPids) {
        self.cpuLimitMillis = cpuLimitMillis
        self.cpuRequestMillis = cpuRequestMillis
        self.memoryLimitBytes = memoryLimitBytes
        self.pids = pids
    }

    public init(_ resources: ResourceRequirements, pids: Int64 = CgroupLimits.defaultPids) {
        self.init(cpuLimitMillis: resources.limit.cpuMillis, cpuRequestMillis: resources.request.cpuMillis,
                  memoryLimitBytes: resources.limit.memoryBytes, pids: pids)
    }

    /// The CFS period every quota is measured against.
    public static let periodMicros: Int64 = 100_000

    /// cpu.cfs_quota_us / the first field of cpu.max; nil = unlimited.
    public var quotaMicros: Int64? {
        cpuLimitMillis > 0 ? max(1000, cpuLimitMillis * Self.periodMicros / 1000) : nil
    }

    /// cgroup v1 cpu.shares: 1024 a core, at least 2 (the kernel's minimum).
    public var shares: Int64 { max(2, cpuRequestMillis * 1024 / 1000) }

    /// cgroup v2 cpu.weight (1...10000), converted from shares the way runc and the kernel docs do.
    public var weight: Int64 { 1 + ((min(shares, 262_144) - 2) * 9999) / 262_142 }
}

/// What the kernel reports about one instance's cgroup.
public struct CgroupReading: Hashable, Sendable {
    /// The limits in force, read back from the cgroup files.
    public var applied: CgroupLimits
    public var swapDisabled: Bool
    /// CPU time used since the cgroup was made, nanoseconds.
    public var cpuNanos: UInt64
    /// Memory in use without the reclaimable page cache (the working set).
    public var memoryBytes: Int64
    /// Times the kernel's OOM killer killed a task of this cgroup.
    public var oomKills: Int64
    /// CFS periods in which the instance was throttled, and the time it was held back.
    public var throttledPeriods: Int64
    public var throttledNanos: Int64
    public var tasks: Int64
}

/// The errors the cgroup code reports; each names the file.
public enum CgroupError: Error, Equatable, CustomStringConvertible {
    case write(file: String, value: String, errno: Int32)
    case read(file: String)
    case limitBelowUsage(memoryLimit: Int64, usage: Int64)

    public var description: String {
        switch self {
        case .write(let file, let value, let code):
            return "cannot write \(value) to \(file): \(String(cString: strerror(code)))"
        case .read(let file): return "cannot read \(file)"
        case .limitBelowUsage(let limit, let usage):
            return "memory limit \(Quantity.formatBytes(limit)) is below the instance's usage \(Quantity.formatBytes(usage)); the old limit stays"
        }
    }
}

/// The two cgroup hierarchies the agent drives. cgroup v1 (one tree per controller) and v2 (one unified tree)
/// need different files for the same limits; both are written here so live updates need no runtime call.
public enum CgroupVersion: String, Sendable {
    case v1, v2

    /// v2 when the mount point is the unified hierarchy; v1 otherwise (also in hybrid mode, where the
    /// controllers stay on v1).
    public static func detect(root: String = "/sys/fs/cgroup") -> CgroupVersion {
        FileManager.default.fileExists(atPath: root + "/cgroup.controllers") ? .v2 : .v1
    }
}

/// The cgroup of one instance: `path` under every controller the agent uses ("sigma/node-1/web-0").
public struct Cgroup: Sendable {
    public let root: String
    public let version: CgroupVersion
    /// Relative to the hierarchy's root, without a leading slash.
    public let path: String

    public init(root: String = "/sys/fs/cgroup", version: CgroupVersion, path: String) {
        self.root = root
        self.version = version
        self.path = path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
    }

    /// The path runc's config.json names (linux.cgroupsPath).
    public var runtimePath: String { "/" + path }

    static let v1Controllers = ["cpu", "cpuacct", "memory", "pids"]

    func directory(_ controller: String) -> String {
        version == .v2 ? "\(root)/\(path)" : "\(root)/\(controller)/\(path)"
    }

    func file(_ controller: String, _ name: String) -> String { directory(controller) + "/" + name }

    /// Makes the cgroup (and its parents) and enables the controllers a v2 child needs.
    public func create() throws {
        switch version {
        case .v1:
            for controller in Self.v1Controllers where FileManager.default.fileExists(atPath: "\(root)/\(controller)") {
                try FileManager.default.createDirectory(atPath: directory(controller), withIntermediateDirectories: true)
            }
        case .v2:
            var current = root
            for component in path.split(separator: "/") {
                // A parent hands its controllers down only when asked to.
                try? write("+cpu +memory +pids", to: current + "/cgroup.subtree_control")
                current += "/\(component)"
                if !FileManager.default.fileExists(atPath: current) {
                    try FileManager.default.createDirectory(atPath: current, withIntermediateDirectories: false)
                }
            }
        }
    }

    /// Whether the cgroup exists.
    public var exists: Bool {
        FileManager.default.fileExists(atPath: directory(version == .v2 ? "" : "memory"))
    }

    /// Writes `limits` (and swap off). A memory limit below what the instance uses now is refused by the
    /// kernel; that comes back as `limitBelowUsage` with the old limit still in force.
    public func apply(_ limits: CgroupLimits) throws {
        switch version {
        case .v1: try applyV1(limits)
        case .v2: try applyV2(limits)
        }
    }

    private func applyV1(_ limits: CgroupLimits) throws {
        try write("\(CgroupLimits.periodMicros)", to: file("cpu", "cpu.cfs_period_us"))
        try write("\(limits.quotaMicros ?? -1)", to: file("cpu", "cpu.cfs_quota_us"))
        try write("\(limits.shares)", to: file("cpu", "cpu.shares"))

        // memsw (memory + swap) must never be below the memory limit: raise it first, lower it last.
        let memory = file("memory", "memory.limit_in_bytes")
        let memsw = file("memory", "memory.memsw.limit_in_bytes")
        let hasMemsw = FileManager.default.fileExists(atPath: memsw)
        let target = limits.memoryLimitBytes > 0 ? "\(limits.memoryLimitBytes)" : "-1"
        let current = Int64(try read(memory)) ?? Int64.max
        let raising = limits.memoryLimitBytes == 0 || limits.memoryLimitBytes >= current
        do {
            if raising {
                if hasMemsw { try write(target, to: memsw) }
                try write(target, to: memory)
            } else {
                try write(target, to: memory)
                if hasMemsw { try write(target, to: memsw) }
            }
        } catch CgroupError.write(_, _, let code) where code == EBUSY {
            throw CgroupError.limitBelowUsage(memoryLimit: limits.memoryLimitBytes, usage: workingSetV1())
        }
        try write("0", to: file("memory", "memory.swappiness"))
        try write(limits.pids > 0 ? "\(limits.pids)" : "max", to: file("pids", "pids.max"))
    }

    private func applyV2(_ limits: CgroupLimits) throws {
        let quota = limits.quotaMicros.map(String.init) ?? "max"
        try write("\(quota) \(CgroupLimits.periodMicros)", to: file("", "cpu.max"))
        try write("\(limits.weight)", to: file("", "cpu.weight"))
        do {
            try write(limits.memoryLimitBytes > 0 ? "\(limits.memoryLimitBytes)" : "max", to: file("", "memory.max"))
        } catch CgroupError.write(_, _, let code) where code == EBUSY {
            throw CgroupError.limitBelowUsage(
                memoryLimit: limits.memoryLimitBytes, usage: Int64(try read(file("", "memory.current"))) ?? 0)
        }
        try write("0", to: file("", "memory.swap.max"))
        try write(limits.pids > 0 ? "\(limits.pids)" : "max", to: file("", "pids.max"))
    }

    /// Reads the limits in force, the usage and the OOM and throttling counters.
    public func read() throws -> CgroupReading {
        switch version {
        case .v1: return try readV1()
        case .v2: return try readV2()
        }
    }

    private func readV1() throws -> CgroupReading {
        let quota = Int64(try read(file("cpu", "cpu.cfs_quota_us"))) ?? -1
        let period = Int64(try read(file("cpu", "cpu.cfs_period_us"))) ?? CgroupLimits.periodMicros
        let shares = Int64(try read(file("cpu", "cpu.shares"))) ?? 1024
        let memoryLimit = Self.limitValue(try read(file("memory", "memory.limit_in_bytes")))
        let memsw = (try? read(file("memory", "memory.memsw.limit_in_bytes"))).map(Self.limitValue)
        let swappiness = Int64(try read(file("memory", "memory.swappiness"))) ?? 60
        let pids = Self.limitValue(try read(file("pids", "pids.max")))
        let cpuStat = Self.keyedValues(try read(file("cpu", "cpu.stat")))
        let oom = Self.keyedValues(try read(file("memory", "memory.oom_control")))
        let applied = CgroupLimits(
            cpuLimitMillis: quota > 0 ? quota * 1000 / period : 0, cpuRequestMillis: shares * 1000 / 1024,
            memoryLimitBytes: memoryLimit, pids: pids)
        return CgroupReading(
            applied: applied, swapDisabled: swappiness == 0 && (memsw == nil || memsw == memoryLimit),
            cpuNanos: UInt64(try read(file("cpuacct", "cpuacct.usage"))) ?? 0, memoryBytes: workingSetV1(),
            oomKills: oom["oom_kill"] ?? 0, throttledPeriods: cpuStat["nr_throttled"] ?? 0,
            throttledNanos: cpuStat["throttled_time"] ?? 0,
            tasks: Int64(try read(file("pids", "pids.current"))) ?? 0)
    }

    private func workingSetV1() -> Int64 {
        let usage = Int64((try? read(file("memory", "memory.usage_in_bytes"))) ?? "") ?? 0
        let stat = Self.keyedValues((try? read(file("memory", "memory.stat"))) ?? "")
        return max(0, usage - (stat["total_inactive_file"] ?? 0))
    }

    private func readV2() throws -> CgroupReading {
        let cpuMax = try read(file("", "cpu.max")).split(separator: " ")
        let quota = cpuMax.first.flatMap { Int64($0) } ?? 0
        let period = cpuMax.count > 1 ? Int64(cpuMax[1]) ?? CgroupLimits.periodMicros : CgroupLimits.periodMicros
        let weight = Int64(try read(file("", "cpu.weight"))) ?? 100
        let cpuStat = Self.keyedValues(try read(file("", "cpu.stat")))
        let events = Self.keyedValues(try read(file("", "memory.events")))
        let memoryStat = Self.keyedValues((try? read(file("", "memory.stat"))) ?? "")
        let current = Int64(try read(file("", "memory.current"))) ?? 0
        // weight back to shares (inverse of CgroupLimits.weight), then to millicores.
        let shares = 2 + (weight - 1) * 262_142 / 9999
        let applied = CgroupLimits(
            cpuLimitMillis: quota > 0 ? quota * 1000 / period : 0, cpuRequestMillis: shares <= 2 ? 0 : shares * 1000 / 1024,
            memoryLimitBytes: Self.limitValue(try read(file("", "memory.max"))),
            pids: Self.limitValue(try read(file("", "pids.max"))))
        return CgroupReading(
            applied: applied, swapDisabled: (try? read(file("", "memory.swap.max"))) == "0",
            cpuNanos: UInt64(cpuStat["usage_usec"] ?? 0) * 1000,
            memoryBytes: max(0, current - (memoryStat["inactive_file"] ?? 0)),
            oomKills: events["oom_kill"] ?? 0, throttledPeriods: cpuStat["nr_throttled"] ?? 0,
            throttledNanos: (cpuStat["throttled_usec"] ?? 0) * 1000,
            tasks: Int64(try read(file("", "pids.current"))) ?? 0)
    }

    /// Removes the cgroup (it must hold no task) from every hierarchy, also those the runtime made it in
    /// (devices, freezer, ...). Missing directories are fine.
    public func remove() {
        let hierarchies = version == .v2 ? [""] : (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        for hierarchy in hierarchies { rmdir(directory(hierarchy)) }
    }

    /// The pids of every task in the cgroup.
    public func tasks() -> [Int32] {
        let text = (try? read(file(version == .v2 ? "" : "pids", "cgroup.procs"))) ?? ""
        return text.split(separator: "\n").compactMap { Int32($0) }
    }

    // "max", "-1" and v1's "no limit" value (a page-rounded Int64.max) all mean unlimited: 0 here.
    static func limitValue(_ text: String) -> Int64 {
        guard let value = Int64(text), value > 0, value < (1 << 62) else { return 0 }
        return value
    }

    static func keyedValues(_ text: String) -> [String: Int64] {
        var values: [String: Int64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Int64(parts[1]) { values[String(parts[0])] = value }
        }
        return values
    }

    func read(_ file: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: file) else { throw CgroupError.read(file: file) }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// One write(2) of the whole value, as the kernel expects (O_TRUNC is ignored by cgroupfs and keeps a fake
    /// tree's files exact); errno comes back in the error.
    func write(_ value: String, to file: String) throws {
        let fd = open(file, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { throw CgroupError.write(file: file, value: value, errno: errno) }
        defer { close(fd) }
        let written = value.withCString { Foundation.write(fd, $0, strlen($0)) }
        if written < 0 { throw CgroupError.write(file: file, value: value, errno: errno) }
    }
}
