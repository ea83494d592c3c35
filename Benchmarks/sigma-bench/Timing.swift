import Dispatch

/// Round-trip times in microseconds of `count` calls of `body`, one after the other, sorted.
func sampleMicroseconds(_ count: Int, _ body: () async throws -> Void) async throws -> [Double] {
    var samples: [Double] = []
    samples.reserveCapacity(count)
    for _ in 0..<count {
        let started = DispatchTime.now().uptimeNanoseconds
        try await body()
        samples.append(Double(DispatchTime.now().uptimeNanoseconds - started) / 1000)
    }
    return samples.sorted()
}

/// Calls per second that `callers` concurrent tasks complete, each calling `body` in a loop for `seconds`.
func callsPerSecond(callers: Int, seconds: Double, _ body: @escaping @Sendable (Int) async throws -> Void) async throws -> Double {
    let completed = Counter()
    let stopAt = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    let started = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for caller in 0..<callers {
            group.addTask {
                while ContinuousClock.now < stopAt {
                    try await body(caller)
                    completed.increment()
                }
            }
        }
        try await group.waitForAll()
    }
    let elapsed = ContinuousClock.now - started
    return Double(completed.value) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}
