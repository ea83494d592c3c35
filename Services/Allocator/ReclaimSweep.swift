import Logging
import Service
import ServiceLifecycle

/// Every `interval`, releases what deleted instances still hold. Every replica sweeps; the statement skips
/// rows another replica is reclaiming at the same moment, so they never fight.
struct ReclaimSweep: ServiceLifecycle.Service {
    let pools: IPPools
    let interval: Duration
    let logger: Logger

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await gracefulSleep(for: interval)
            } catch {
                return  // shutting down
            }
            do {
                let reclaimed = try await pools.reclaim()
                if !reclaimed.isEmpty { logger.info("reclaim sweep", metadata: ["reclaimed": "\(reclaimed.count)"]) }
            } catch {
                logger.warning("reclaim sweep failed; next one in \(interval)", metadata: ["error": "\(error)"])
            }
        }
    }
}
