import Foundation

/// What the machine is, read from the kernel rather than configured: CPUs, memory, disk.
public struct MachineFacts: Sendable, Equatable {
    public var cpuMillis: Int64
    public var memoryBytes: Int64
    /// Size of the filesystem holding the agent's state folder (where instances write).
    public var diskBytes: Int64

    public static func read(stateDirectory: String, proc: String = "/proc") -> MachineFacts {
        let cpus = Int64(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let meminfo = MachineUsageSampler.meminfo(proc: proc)
        return MachineFacts(
            cpuMillis: cpus * 1000, memoryBytes: meminfo["MemTotal"] ?? 0, diskBytes: filesystem(stateDirectory).total)
    }

    /// Total and used bytes of the filesystem at `path`.
    public static func filesystem(_ path: String) -> (total: Int64, used: Int64) {
        var stats = statvfs()
        guard statvfs(path, &stats) == 0 else { return (0, 0) }
        let block = Int64(stats.f_frsize)
        return (Int64(stats.f_blocks) * block, Int64(stats.f_blocks - stats.f_bfree) * block)
    }
}

/// The node's utilization now: CPU from /proc/stat between two samples, memory from /proc/meminfo
/// (total minus available), disk from the state folder's filesystem.
public struct MachineUsage: Sendable, Equatable {
    public var cpuMillis: Int64
    public var memoryBytes: Int64
    public var diskBytes: Int64
}

public final class MachineUsageSampler: @unchecked Sendable {
    let proc: String
    let stateDirectory: String
    private let lock = NSLock()
    private var last: (busy: UInt64, total: UInt64)?

    public init(stateDirectory: String, proc: String = "/proc") {
        self.proc = proc
        self.stateDirectory = stateDirectory
        last = Self.cpuTimes(proc: proc)
    }

    /// Utilization since the previous call (or since this sampler was made).
    public func sample() -> MachineUsage {
        let now = Self.cpuTimes(proc: proc)
        let cpus = Int64(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let cpu: Int64 = lock.withLock {
            defer { last = now }
            guard let previous = last, let now, now.total > previous.total else { return 0 }
            let busy = Double(now.busy &- previous.busy), total = Double(now.total - previous.total)
            return Int64(busy / total * Double(cpus * 1000))
        }
        let meminfo = Self.meminfo(proc: proc)
        let memory = max(0, (meminfo["MemTotal"] ?? 0) - (meminfo["MemAvailable"] ?? 0))
        return MachineUsage(cpuMillis: cpu, memoryBytes: memory, diskBytes: MachineFacts.filesystem(stateDirectory).used)
    }

    /// Busy and total jiffies of the "cpu" line of /proc/stat (idle and iowait are not busy).
    static func cpuTimes(proc: String) -> (busy: UInt64, total: UInt64)? {
        guard let data = FileManager.default.contents(atPath: proc + "/stat") else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return nil }
        let values = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard values.count >= 4 else { return nil }
        // user nice system idle iowait irq softirq steal (guest time is already inside user).
        let counted = Array(values.prefix(8))
        let total = counted.reduce(0, +)
        let idle = counted[3] + (counted.count > 4 ? counted[4] : 0)
        return (total - idle, total)
    }

    /// /proc/meminfo in bytes.
    static func meminfo(proc: String) -> [String: Int64] {
        guard let data = FileManager.default.contents(atPath: proc + "/meminfo") else { return [:] }
        var values: [String: Int64] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let value = Int64(parts[1]) else { continue }
            let key = String(parts[0].dropLast())  // "MemTotal:"
            values[key] = parts.count >= 3 && parts[2] == "kB" ? value * 1024 : value
        }
        return values
    }
}
