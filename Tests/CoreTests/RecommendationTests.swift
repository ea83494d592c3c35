import Core
import Testing

/// The right-sizing arithmetic of docs/operations.md: p95 plus headroom for requests, the peak plus twice the
/// headroom for limits (never below the request), rounded up to 10m and 1Mi, with floors.
@Suite struct RecommendationTests {
    @Test func requestsCoverTheP95AndLimitsThePeak() {
        let observed = Recommendation.Observed(cpuP95Millis: 194, cpuPeakMillis: 500, memoryP95Bytes: 194 << 20, memoryPeakBytes: 400 << 20)
        let sized = Recommendation(observed).resources
        #expect(sized.request == Resources(cpuMillis: 230, memoryBytes: 224 << 20))   // 194 × 1.15 = 223.1 → 230m; 223.1Mi → 224Mi
        #expect(sized.limit == Resources(cpuMillis: 650, memoryBytes: 520 << 20))     // 500 × 1.3 = 650m; 400Mi × 1.3 = 520Mi
        #expect(sized.problems().isEmpty)
    }

    @Test func limitsNeverFallBelowRequestsAndFloorsHold() {
        let idle = Recommendation(.init(cpuP95Millis: 0, cpuPeakMillis: 0, memoryP95Bytes: 1000, memoryPeakBytes: 1000)).resources
        #expect(idle.request == Resources(cpuMillis: 10, memoryBytes: 16 << 20) && idle.limit == idle.request)
        let flat = Recommendation(.init(cpuP95Millis: 1000, cpuPeakMillis: 900, memoryP95Bytes: 1 << 30, memoryPeakBytes: 1 << 29),
                                  headroomPercent: 0).resources
        #expect(flat.request.cpuMillis == 1000 && flat.limit.cpuMillis == 1000 && flat.limit.memoryBytes == 1 << 30)
    }

    @Test func theMethodSaysTheNumbers() {
        #expect(Recommendation.method(headroomPercent: 15).hasPrefix("request = p95 × 115%, limit = peak × 130%"))
    }
}
