import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The node's lease as its safe-mode instances' monitors read it: one line, the deadline in milliseconds of
/// CLOCK_BOOTTIME (a clock that never jumps and keeps counting through a suspend). The agent writes it after
/// each heartbeat the scheduler granted (`NodeLease`), atomically; sigma-monitor (`--lease`) refuses to start
/// an instance once it has passed and kills its running instance when it passes.
public struct NodeLeaseFile: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// Now, in milliseconds of CLOCK_BOOTTIME (the clock sigma-monitor compares the deadline with).
    public static func bootMillis() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_BOOTTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }

    /// The deadline written last; nil when there is none (no grant yet, or an unreadable file).
    public var deadline: Int64? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return Int64(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Whether the lease holds now.
    public var holds: Bool { (deadline ?? 0) > Self.bootMillis() }

    /// Writes `deadline` (a temporary file renamed over the lease, so a monitor reads the old or the new one).
    public func write(deadline: Int64) throws {
        let temporary = path + ".tmp"
        try Data("\(deadline)\n".utf8).write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else {
            throw RuntimeError.startFailed(id: path, reason: "cannot write the lease: \(String(cString: strerror(errno)))")
        }
    }
}
