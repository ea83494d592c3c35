import ArgumentParser
import Logging
import Protocol
import RPC
import ClientKit
import ControlPlane
import Hosting
import ServiceLifecycle
import Store

/// `sigma-discovery`: Sigma's discovery: the endpoints of each app, with a blocking watch, served from memory.
@main
struct DiscoveryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-discovery",
        abstract: "Sigma's discovery: the endpoints of each app, with a blocking watch, served from memory.")

    @OptionGroup var options: ServiceOptions
    @OptionGroup var database: DatabaseOptions

    @OptionGroup var feed: FeedOptions

    func run() async throws {
        let host = try ControlPlaneHost(kind: .discovery, options: options, database: database)
        let (publisher, advertised) = try host.publisher(feed)
        let cache = EndpointCache(store: host.store, publisher: publisher, eventsEndpoint: advertised, logger: host.logger)
        let resolver = Resolver(cache: cache, eventsEndpoint: advertised)
        var handlers = RPCHandlers()
        handlers.registerEncoded(DiscoveryMethods.resolve) { request, context in try await resolver.resolveEncoded(request, context: context) }
        try await host.run(handlers: handlers, role: "replica", services: [Follower(store: host.store, cache: cache)],
                           eventsEndpoint: advertised)
    }
}

/// Keeps the cache fresh: `NOTIFY sigma_discovery` ('<app> <revision>') reloads that app; a (re)connected
/// LISTEN reloads every app held, since notifications sent meanwhile are lost.
struct Follower: Service {
    let store: Store
    let cache: EndpointCache

    func run() async throws {
        let stream = try store.notifications(channels: ["sigma_discovery"])
        for await notification in stream.cancelOnGracefulShutdown() {
            switch notification {
            case .connected:
                await cache.reloadAll()
            case .notification(_, let payload):
                let parts = payload.split(separator: " ")
                guard parts.count == 2, UInt64(parts[1]) != nil else { continue }
                cache.announced(String(parts[0]))
            }
        }
        await cache.publisher.close()
    }
}
