import ClientKit
import Core
import Foundation
import Logging
import Protocol
import RPC
import Store
import Synchronization

/// The usage history kept by the active scheduler (docs/operations.md, "Usage history and right-sizing"): a
/// sample of every Running instance and pool group each `interval`, finished hours folded into hour rows, hour
/// rows kept `retention`; and `RecommendResources`, which sizes an app from its instances' readings.
final class UsageHistory: Sendable {
    let store: Store
    let lease: Lease
    /// Between two samples; zero keeps no history.
    let interval: Duration
    /// Seconds hour rows are kept.
    let retention: Double
    let logger: Logger
    private let last = Mutex<ContinuousClock.Instant?>(nil)

    init(store: Store, lease: Lease, interval: Duration, retention: Double, logger: Logger) {
        self.store = store
        self.lease = lease
        self.interval = interval
        self.retention = retention
        self.logger = logger
    }

    /// A step of the leader's pass: samples once `interval` has passed since the last one (folds and prunes
    /// then too), else nothing.
    func step() async throws {
        guard interval > .zero else { return }
        let now = ContinuousClock.now
        let due = last.withLock { last in
            guard last.map({ now - $0 >= interval }) ?? true else { return false }
            last = now
            return true
        }
        guard due else { return }
        try await store.transaction(isolation: .readCommitted) { tx in
            try await lease.check(tx)
            try await UsageTable.record(tx)
            let folded = try await UsageTable.fold(tx)
            try await UsageTable.prune(tx, retention: retention)
            if folded > 0 { logger.debug("usage samples folded into hours", metadata: ["rows": "\(folded)"]) }
        }
    }

    static let defaultWindowHours = 168

    func recommend(_ request: Sigma_V1_RecommendResourcesRequest, apps: Apps) async throws -> Sigma_V1_RecommendResourcesResponse {
        guard request.windowHours >= 0, request.windowHours <= 24 * 366 else {
            throw RPCError.invalidArgument("window_hours: \(request.windowHours) is not between 0 and 8784")
        }
        guard request.headroomPercent >= 0, request.headroomPercent <= 400 else {
            throw RPCError.invalidArgument("headroom_percent: \(request.headroomPercent) is not between 0 and 400")
        }
        let spec = try await apps.currentSpec(request.app)
        let hours = request.windowHours == 0 ? Self.defaultWindowHours : Int(request.windowHours)
        let headroom = request.headroomPercent == 0 ? Recommendation.defaultHeadroomPercent : Int(request.headroomPercent)
        let found = try await UsageTable.readings(store, app: request.app, hours: hours)
        guard found.readings >= Recommendation.minimumSamples else {
            throw RPCError.failedPrecondition(
                "app \(request.app) has \(found.readings) usage reading(s) in the last \(hours) h; at least \(Recommendation.minimumSamples) are needed "
                    + "(the active scheduler samples Running instances every --usage-interval)")
        }
        var response = Sigma_V1_RecommendResourcesResponse()
        response.app = request.app
        response.readings = found.readings
        response.instances = found.instances
        response.fromUnixMs = found.fromMillis
        response.toUnixMs = found.toMillis
        response.cpuP95Millis = found.observed.cpuP95Millis
        response.cpuPeakMillis = found.observed.cpuPeakMillis
        response.memoryP95Bytes = found.observed.memoryP95Bytes
        response.memoryPeakBytes = found.observed.memoryPeakBytes
        response.current = spec.resources.wire
        response.recommended = Recommendation(found.observed, headroomPercent: headroom).resources.wire
        response.method = Recommendation.method(headroomPercent: headroom)
        return response
    }
}
