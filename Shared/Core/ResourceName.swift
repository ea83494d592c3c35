/// The kinds of resource Sigma accounts for, each a whole number in its unit. Everything in Core that treats
/// resources alike (arithmetic, checks, the fit filter, the balance score, the manifest's quantities) goes over
/// `allCases`; a new resource is a field of `Resources`, a case here, and its wire, database and cgroup
/// plumbing (docs/architecture.md, "A resource").
public enum ResourceName: String, CaseIterable, Sendable {
    /// Thousandths of a core ("500m" is half a core).
    case cpu
    /// Bytes.
    case memory

    /// `allCases`, made once: the placer's hot loops go over it without building the array each time.
    public static let every: [ResourceName] = allCases

    /// Its amount as people write it: "500m", "2" for CPU; "512Mi", "2Gi" for memory (exact).
    public func format(_ amount: Int64) -> String {
        switch self {
        case .cpu: Quantity.formatCPU(amount)
        case .memory: Quantity.formatBytes(amount)
        }
    }

    /// The amount written as `format` writes it (and the other forms people use); nil when it is not one.
    public func parse(_ text: String) -> Int64? {
        switch self {
        case .cpu: Quantity.parseCPU(text)
        case .memory: Quantity.parseBytes(text)
        }
    }

    /// What a manifest may write, for an error message.
    public var examples: String {
        switch self {
        case .cpu: "a CPU quantity (2, 0.5, 500m)"
        case .memory: "a size (512Mi, 2Gi, 1G, bytes)"
        }
    }
}

extension Resources {
    /// One named quantity.
    @inlinable
    public subscript(_ name: ResourceName) -> Int64 {
        get {
            switch name {
            case .cpu: cpuMillis
            case .memory: memoryBytes
            }
        }
        set {
            switch name {
            case .cpu: cpuMillis = newValue
            case .memory: memoryBytes = newValue
            }
        }
    }

    /// `self` and `other` combined quantity by quantity.
    @inlinable
    public func combined(with other: Resources, _ combine: (Int64, Int64) -> Int64) -> Resources {
        var result = Resources()
        for name in ResourceName.every { result[name] = combine(self[name], other[name]) }
        return result
    }
}
