/// The lease a node's safe-mode instances live on (failover: safe; docs/operations.md, "At most one copy").
///
/// Each heartbeat the scheduler accepts at the node's current epoch is a grant of `ttlMillis`. The agent counts
/// it from the moment it *sent* that heartbeat, on the node's CLOCK_BOOTTIME, and writes the deadline to the
/// node's lease file; every safe-mode instance's monitor kills its instance once that deadline passes, agent
/// alive or not. The scheduler counts the same grant from when it accepted the heartbeat (later than the
/// send, on the database's clock) and treats the lease as certainly lapsed only `certainlyLapsedMillis` later:
/// the TTL stretched by the clock rate drift the two clocks may have between them, plus a margin for the
/// monitor's poll and the kill (`--node-lease-margin`). What this assumes: the node's and the database's clocks
/// run at rates within `clockDrift` of each other (NTP keeps them far closer), a monitor is alive whenever its
/// instance is, and it gets the CPU within the margin.
public struct NodeLease: Hashable, Sendable {
    public var ttlMillis: Int64
    public var marginMillis: Int64

    /// How much faster or slower one clock may run than the other: 1 %.
    public static let clockDrift = 0.01
    /// The monitor's poll (100 ms) and the kill itself, with room to spare.
    public static let defaultMarginMillis: Int64 = 1000

    public init(ttlMillis: Int64, marginMillis: Int64 = NodeLease.defaultMarginMillis) {
        self.ttlMillis = max(0, ttlMillis)
        self.marginMillis = max(0, marginMillis)
    }

    /// How long after the scheduler accepted the last heartbeat the node's lease has certainly lapsed.
    public var certainlyLapsedMillis: Int64 {
        Int64((Double(ttlMillis) * (1 + Self.clockDrift)).rounded(.up)) + marginMillis
    }

    /// The deadline the agent writes (milliseconds of CLOCK_BOOTTIME) for a grant of `ttlMillis` to a heartbeat
    /// sent at `sentAt`.
    public func deadline(sentAt: Int64) -> Int64 { sentAt + ttlMillis }
}

extension Duration {
    /// The whole milliseconds in it (rounded toward zero).
    public var wholeMilliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
