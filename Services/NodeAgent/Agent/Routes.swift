import Foundation
import NodeRuntime
import Protocol

/// The overlay from the agent's side: every instance's route (the scheduler's `routes` feed) turned into the
/// forwarding entries of the instances that run on other nodes.
extension Agent {
    /// The whole table (a snapshot).
    func replaceRoutes(_ all: [Sigma_V1_Route]) {
        routes = Dictionary(all.map { ($0.instanceID, $0) }, uniquingKeysWith: { a, b in a.generation >= b.generation ? a : b })
        programOverlay()
    }

    /// One change.
    func applyRoute(_ event: Sigma_V1_RouteEvent) {
        let id = event.route.instanceID
        if event.removed {
            routes[id] = nil
        } else if let known = routes[id], known.generation > event.route.generation {
            return
        } else {
            routes[id] = event.route
        }
        programOverlay()
    }

    /// Instance IPs on other nodes → those nodes' underlay addresses. A newer generation wins when an IP is
    /// briefly claimed twice during a move.
    func remoteRoutes() -> [String: String] {
        var winners: [String: Sigma_V1_Route] = [:]
        for route in routes.values where !route.ip.isEmpty {
            if let other = winners[route.ip], other.generation >= route.generation { continue }
            winners[route.ip] = route
        }
        var remote: [String: String] = [:]
        for (ip, route) in winners where route.node != settings.node.name && !route.hostIp.isEmpty {
            remote[ip] = route.hostIp
        }
        return remote
    }

    private func programOverlay() { overlayWake.yield() }

    /// Programs the latest table after each change (changes meanwhile fold into one pass); a failure is tried
    /// again a second later.
    func runOverlay() async {
        for await _ in overlayWakes {
            if Task.isCancelled { break }
            do {
                let remote = remoteRoutes()
                try await network.program(remote: remote)
                // The nodes of those instances: the only senders of overlay frames it takes, and what an
                // instance reaches of them is their host ports.
                if !remote.isEmpty { try await hostPorts.setUp() }
                try await hostPorts.setNodes(Set(remote.values))
            } catch {
                logger.warning("overlay entries not programmed; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
                overlayWake.yield()
            }
        }
    }
}
