import RPC
import Synchronization

extension RequestContext {
    /// How long a long poll that asked for `requested` may wait: at most `cap`, and ending 50 ms before the
    /// caller's own deadline so the answer still reaches it. Zero or less: answer at once.
    public func longPollBudget(_ requested: Duration, cap: Duration) -> Duration {
        let wanted = min(requested, cap)
        guard let remaining else { return wanted }
        return min(wanted, remaining - .milliseconds(50))
    }
}

/// Long polls keyed by name: `wait(for:above:timeout:)` returns once `advance(name, to:)` has reported a
/// revision above the one the caller knows, or at the timeout, or when the task is cancelled. Revisions that
/// arrive before a caller starts waiting are remembered, so no change between a read and a wait is missed.
public final class RevisionWaiters: Sendable {
    private struct State {
        var latest: [String: UInt64] = [:]
        var waiting: [String: [UInt64: (above: UInt64, continuation: CheckedContinuation<Void, Never>)]] = [:]
        var next: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Records that `name` is at `revision` and wakes those waiting for less.
    public func advance(_ name: String, to revision: UInt64) {
        let woken = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.latest[name] = max(state.latest[name] ?? 0, revision)
            guard var waiting = state.waiting[name] else { return [] }
            let due = waiting.filter { $0.value.above < revision }
            for key in due.keys { waiting.removeValue(forKey: key) }
            state.waiting[name] = waiting.isEmpty ? nil : waiting
            return due.map(\.value.continuation)
        }
        woken.forEach { $0.resume() }
    }

    /// Waits until `name` is above `revision`, `timeout` passes, or the task is cancelled.
    public func wait(for name: String, above revision: UInt64, timeout: Duration) async {
        let id = state.withLock { state -> UInt64 in
            state.next += 1
            return state.next
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let ready = self.state.withLock { state -> Bool in
                            if (state.latest[name] ?? 0) > revision || Task.isCancelled { return true }
                            state.waiting[name, default: [:]][id] = (revision, continuation)
                            return false
                        }
                        if ready { continuation.resume() }
                    }
                } onCancel: {
                    let waiter = self.state.withLock { $0.waiting[name]?.removeValue(forKey: id) }
                    waiter?.continuation.resume()
                }
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }
}
