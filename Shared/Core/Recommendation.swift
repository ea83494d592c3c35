/// Right-sizing from the usage history (docs/operations.md, "Usage history and right-sizing"): a request covers
/// the 95th percentile of the readings with `headroom` on top, a limit the highest reading with twice that,
/// and never below the request. CPU is rounded up to 10 millicores (at least 10m), memory to a MiB (at least
/// 16 MiB), so the numbers read as people write them.
public struct Recommendation: Hashable, Sendable {
    public struct Observed: Hashable, Sendable {
        public var cpuP95Millis: Int64, cpuPeakMillis: Int64, memoryP95Bytes: Int64, memoryPeakBytes: Int64

        public init(cpuP95Millis: Int64, cpuPeakMillis: Int64, memoryP95Bytes: Int64, memoryPeakBytes: Int64) {
            self.cpuP95Millis = cpuP95Millis
            self.cpuPeakMillis = cpuPeakMillis
            self.memoryP95Bytes = memoryP95Bytes
            self.memoryPeakBytes = memoryPeakBytes
        }
    }

    public static let defaultHeadroomPercent = 15
    public static let minimumCPUMillis: Int64 = 10
    public static let minimumMemoryBytes: Int64 = 16 << 20
    /// Fewer readings than this say too little to size anything.
    public static let minimumSamples = 10

    public let resources: ResourceRequirements

    public init(_ observed: Observed, headroomPercent: Int = defaultHeadroomPercent) {
        let headroom = Double(headroomPercent) / 100
        func up(_ value: Double, to unit: Int64, atLeast minimum: Int64) -> Int64 {
            max(minimum, Int64((value / Double(unit)).rounded(.up)) * unit)
        }
        let requestCPU = up(Double(observed.cpuP95Millis) * (1 + headroom), to: 10, atLeast: Self.minimumCPUMillis)
        let limitCPU = max(requestCPU, up(Double(observed.cpuPeakMillis) * (1 + 2 * headroom), to: 10, atLeast: Self.minimumCPUMillis))
        let requestMemory = up(Double(observed.memoryP95Bytes) * (1 + headroom), to: 1 << 20, atLeast: Self.minimumMemoryBytes)
        let limitMemory = max(requestMemory,
                              up(Double(observed.memoryPeakBytes) * (1 + 2 * headroom), to: 1 << 20, atLeast: Self.minimumMemoryBytes))
        resources = ResourceRequirements(request: Resources(cpuMillis: requestCPU, memoryBytes: requestMemory),
                                         limit: Resources(cpuMillis: limitCPU, memoryBytes: limitMemory))
    }

    /// The method in one line, as the answer and `sigmactl recommend` state it.
    public static func method(headroomPercent: Int) -> String {
        "request = p95 × \(100 + headroomPercent)%, limit = peak × \(100 + 2 * headroomPercent)% (at least the request); "
            + "CPU rounded up to 10m, memory to 1Mi"
    }
}
