import Foundation
import Logging
import Protocol
import Store
import Synchronization

/// Merges AllocateIPs calls that arrive together into one database call (group commit): sixteen callers
/// asking for one address each cost about what one caller asking for sixteen does.
///
/// Calls for the same pool are merged, up to `maxBatch` instances, with at most `maxInFlight` database calls
/// at a time. A merged call that fails (one unknown instance, a pool too small for all) is retried call by
/// call, so each caller gets exactly the answer it would have got alone.
final class AllocationCoalescer: Sendable {
    typealias Allocate = @Sendable ([UUID], String) async throws -> [Sigma_V1_IPAllocation]

    struct Waiting {
        let ids: [UUID]
        let pool: String
        let continuation: CheckedContinuation<[Sigma_V1_IPAllocation], Error>
    }

    struct State {
        var queue: [Waiting] = []
        var inFlight = 0
    }

    private let state = Mutex(State())
    private let allocate: Allocate
    private let maxBatch: Int
    private let maxInFlight: Int

    init(maxBatch: Int = 1000, maxInFlight: Int = 1, allocate: @escaping Allocate) {
        self.allocate = allocate
        self.maxBatch = maxBatch
        self.maxInFlight = maxInFlight
    }

    func allocate(_ ids: [UUID], pool: String) async throws -> [Sigma_V1_IPAllocation] {
        // Large batches gain nothing from merging.
        if ids.count >= maxBatch / 2 { return try await allocate(ids, pool) }
        return try await withCheckedThrowingContinuation { continuation in
            let startDrainer = state.withLock { state -> Bool in
                state.queue.append(Waiting(ids: ids, pool: pool, continuation: continuation))
                guard state.inFlight < maxInFlight else { return false }
                state.inFlight += 1
                return true
            }
            if startDrainer { Task { await drain() } }
        }
    }

    private func drain() async {
        while let batch = nextBatch() {
            await run(batch)
        }
    }

    /// Takes the oldest waiting call and every other one for its pool that fits; nil (and one drainer fewer)
    /// when nothing waits.
    private func nextBatch() -> [Waiting]? {
        state.withLock { state in
            guard let first = state.queue.first else {
                state.inFlight -= 1
                return nil
            }
            var batch: [Waiting] = []
            var count = 0
            var rest: [Waiting] = []
            for waiting in state.queue {
                if waiting.pool == first.pool && (batch.isEmpty || count + waiting.ids.count <= maxBatch) {
                    batch.append(waiting)
                    count += waiting.ids.count
                } else {
                    rest.append(waiting)
                }
            }
            state.queue = rest
            return batch
        }
    }

    private func run(_ batch: [Waiting]) async {
        if batch.count > 1 {
            var seen = Set<UUID>()
            let ids = batch.flatMap(\.ids).filter { seen.insert($0).inserted }
            if let merged = try? await allocate(ids, batch[0].pool) {
                let byInstance = Dictionary(merged.map { ($0.instanceID.lowercased(), $0) }, uniquingKeysWith: { a, _ in a })
                for waiting in batch {
                    waiting.continuation.resume(returning: waiting.ids.compactMap { byInstance[$0.lowercasedText] })
                }
                return
            }
        }
        for waiting in batch {
            do {
                waiting.continuation.resume(returning: try await allocate(waiting.ids, waiting.pool))
            } catch {
                waiting.continuation.resume(throwing: error)
            }
        }
    }
}
