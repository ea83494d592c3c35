import Synchronization

/// /24 subnets inside 100.64.0.0/10 for tests that put addresses on real links: never the same one twice in a
/// test run, and a random start per run so two runs on one machine are unlikely to meet.
public enum TestSubnets {
    static let start = Int.random(in: 0..<(64 * 256))
    static let taken = Atomic<Int>(0)

    /// "100.X.Y" (add ".0/24" for the CIDR, ".1" for the gateway).
    public static func next() -> String {
        let n = (start + taken.add(1, ordering: .relaxed).oldValue) % (64 * 256)
        return "100.\(64 + n / 256).\(n % 256)"
    }
}
