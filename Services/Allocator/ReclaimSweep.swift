import Logging
import Protocol
import ClientKit
import ControlPlane
import Hosting
import ServiceLifecycle

/// Every `interval`, releases what deleted instances still hold. Every replica sweeps; the statement skips
/// rows another replica is reclaiming at the same moment, so they never fight.
struct ReclaimSweep: ServiceLifecycle.Service {
    let reclaim: @Sendable () async throws -> Sigma_V1_ReclaimResponse
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
                let reclaimed = try await reclaim()
                if !reclaimed.reclaimedIps.isEmpty || !reclaimed.reclaimedPorts.isEmpty || !reclaimed.reclaimedSsds.isEmpty {
                    logger.info("reclaim sweep", metadata: [
                        "ips": "\(reclaimed.reclaimedIps.count)", "port_holders": "\(reclaimed.reclaimedPorts.count)",
                        "ssds": "\(reclaimed.reclaimedSsds.count)",
                    ])
                }
            } catch {
                logger.warning("reclaim sweep failed; next one in \(interval)", metadata: ["error": "\(error)"])
            }
        }
    }
}
