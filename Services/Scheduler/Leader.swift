import Foundation
import Logging
import ServiceLifecycle
import Store

/// The active scheduler's loop: take or renew the lease, then — only while holding it — health checks,
/// draining, rollouts, clean-up and placement. A pass runs every `interval`, and at once when an
/// instance needs placing (`NOTIFY sigma_pending`).
struct Leader: Service {
    let store: Store
    let lease: Lease
    let upkeep: Upkeep
    let rollouts: Rollouts
    let placement: Placement
    let usage: UsageHistory
    let interval: Duration
    let logger: Logger

    func run() async throws {
        let (wakeups, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let notifications = try store.notifications(channels: [Placement.channel])
        let listener = Task {
            for await _ in notifications { wake.yield() }
        }
        let ticker = Task {
            while !Task.isCancelled {
                wake.yield()
                try? await Task.sleep(for: interval)
            }
        }
        defer {
            listener.cancel()
            ticker.cancel()
        }
        for await _ in wakeups.cancelOnGracefulShutdown() {
            await pass()
        }
        await lease.release()
    }

    func pass() async {
        do {
            let held: Bool
            do { held = try await lease.acquire() } catch {
                lease.lost()
                throw error
            }
            guard held else { return }
            try await upkeep.checkHealth()
            try await upkeep.releaseLapsedPriors()
            try await upkeep.releaseVolumes()
            try await upkeep.drain()
            try await rollouts.step()
            try await upkeep.cleanUp()
            try await upkeep.pruneEvents()
            try await upkeep.foldDiscoveryIndex()
            try await usage.step()
            try await placement.run()
        } catch is LeaseLost {
            logger.warning("lease lost during a pass; standing by")
        } catch {
            logger.warning("scheduler pass failed; retrying", metadata: ["error": "\(error)"])
        }
    }
}
