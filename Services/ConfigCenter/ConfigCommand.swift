import ArgumentParser
import Logging
import Protocol
import RPC
import ClientKit
import ControlPlane
import Hosting
import ServiceLifecycle
import Store

/// `sigma-config`: Sigma's config center: per app config files and a startup script as immutable versions,
/// gray release, rendering per instance, push and long polls.
@main
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-config",
        abstract: "Sigma's config center: versioned config files and startup scripts, gray release, push.")

    @OptionGroup var options: ServiceOptions
    @OptionGroup var database: DatabaseOptions

    @OptionGroup var feed: FeedOptions

    func run() async throws {
        let host = try ControlPlaneHost(kind: .config, options: options, database: database)
        let store = host.store
        let (publisher, advertised) = try host.publisher(feed)
        let sets = ConfigSets(store: store, logger: host.logger)
        let waiters = RevisionWaiters()
        let fetcher = Fetcher(sets: sets, waiters: waiters)
        var handlers = RPCHandlers()
        handlers.register(ConfigMethods.publish) { request, _ in try await sets.publish(request) }
        handlers.register(ConfigMethods.get) { request, _ in
            let sequence = publisher.sequence(of: FeedTopics.config(request.app))
            var response = try await sets.get(request.app, version: request.version)
            response.eventsEndpoint = advertised
            response.sequence = sequence
            response.feedEpoch = publisher.epoch
            return response
        }
        handlers.register(ConfigMethods.history) { request, _ in try await sets.history(request.app) }
        handlers.register(ConfigMethods.diff) { request, _ in try await sets.diff(request) }
        handlers.register(ConfigMethods.rollback) { request, _ in try await sets.rollback(request) }
        handlers.register(ConfigMethods.gray) { request, _ in try await sets.gray(request) }
        handlers.register(ConfigMethods.promote) { request, _ in try await sets.promote(request.app) }
        handlers.register(ConfigMethods.abandon) { request, _ in try await sets.abandon(request.app) }
        handlers.register(ConfigMethods.fetch) { request, context in try await fetcher.fetch(request, context: context) }
        handlers.register(ConfigMethods.delete) { request, _ in try await sets.delete(request.app) }
        let follower = ReleaseFollower(store: store, sets: sets, waiters: waiters, publisher: publisher, logger: host.logger)
        try await host.run(handlers: handlers, role: "replica", services: [follower], eventsEndpoint: advertised)
    }
}

/// Follows `NOTIFY sigma_config` ('<app> <revision>'): wakes the long polls of that app and pushes the new
/// release on topic `config/<app>`; and `NOTIFY sigma_discovery` ('<app> <revision>': the app's instances
/// changed), which drops what the cache rendered from them. After the LISTEN connection comes back, the cache
/// is cleared and every app is announced again.
struct ReleaseFollower: Service {
    let store: Store
    let sets: ConfigSets
    let waiters: RevisionWaiters
    let publisher: Publisher
    let logger: Logger

    func run() async throws {
        let stream = try store.notifications(channels: ["sigma_config", "sigma_discovery"])
        for await notification in stream.cancelOnGracefulShutdown() {
            switch notification {
            case .connected:
                sets.cache.clear()
                do {
                    for row in try await store.query("SELECT app, revision FROM config_releases") {
                        await announce(try row.decode(String.self, "app"), revision: UInt64(try row.decode(Int64.self, "revision")))
                    }
                } catch {
                    logger.warning("could not read the config releases", metadata: ["error": "\(error)"])
                }
            case .notification(let channel, let payload):
                let parts = payload.split(separator: " ")
                guard parts.count == 2, let revision = UInt64(parts[1]) else { continue }
                if channel == "sigma_discovery" {
                    sets.cache.instancesChanged(String(parts[0]))
                } else {
                    await announce(String(parts[0]), revision: revision)
                }
            }
        }
        await publisher.close()
    }

    private func announce(_ app: String, revision: UInt64) async {
        // The cache first, then the long polls: a woken poll must find the new release.
        do {
            var change = Sigma_V1_ConfigChange()
            change.release = try await sets.storedRelease(app)
            waiters.advance(app, to: revision)
            publisher.publish(topic: FeedTopics.config(app), payload: try change.serializedBytes())
        } catch {
            waiters.advance(app, to: revision)
            logger.warning("could not publish a config change", metadata: ["app": "\(app)", "error": "\(error)"])
        }
    }
}
