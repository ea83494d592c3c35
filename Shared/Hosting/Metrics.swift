import Protocol
import Synchronization

/// Counters and latency histograms per RPC method, fed by the server's call observer and served by the
/// `Metrics` method (`sigmactl metrics SERVICE`) and, later, as Prometheus text.
public final class MethodMetricsRegistry: Sendable {
    /// Upper bounds of the latency buckets, in seconds (the last, +Inf, is implied by the call count).
    public static let bucketBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

    struct Entry {
        var byStatus: [String: UInt64] = [:]
        var calls: UInt64 = 0
        var sum: Double = 0
        var buckets = [UInt64](repeating: 0, count: MethodMetricsRegistry.bucketBounds.count)
    }

    private let entries = Mutex<[String: Entry]>([:])

    public init() {}

    public func record(method: String, status: StatusCode, seconds: Double) {
        entries.withLock { all in
            var entry = all[method, default: Entry()]
            entry.calls += 1
            entry.sum += seconds
            entry.byStatus[status.name, default: 0] += 1
            if let index = Self.bucketBounds.firstIndex(where: { seconds <= $0 }) { entry.buckets[index] += 1 }
            all[method] = entry
        }
    }

    /// The observer to hand to an ``RPCServer``.
    public var observer: @Sendable (String, StatusCode, Double) -> Void {
        { [self] method, status, seconds in record(method: method, status: status, seconds: seconds) }
    }

    public func snapshot(service: String) -> Sigma_V1_MetricsResponse {
        let all = entries.withLock { $0 }
        var response = Sigma_V1_MetricsResponse()
        response.service = service
        response.methods = all.keys.sorted().map { method in
            let entry = all[method]!
            var metrics = Sigma_V1_MethodMetrics()
            metrics.method = method
            metrics.calls = entry.calls
            metrics.callsByStatus = entry.byStatus
            metrics.latencySumSeconds = entry.sum
            var cumulative: UInt64 = 0
            metrics.latencyBuckets = zip(Self.bucketBounds, entry.buckets).map { bound, count in
                cumulative += count
                var bucket = Sigma_V1_HistogramBucket()
                bucket.upperBoundSeconds = bound
                bucket.count = cumulative
                return bucket
            }
            return metrics
        }
        return response
    }
}
