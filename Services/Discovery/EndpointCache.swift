import Core
import Foundation
import Logging
import Protocol
import RPC
import ClientKit
import ControlPlane
import Hosting
import Store
import Synchronization

/// Each app's endpoints in memory, with the app's index (its revision in `discovery_index`, so every replica
/// answers the same index for the same state). An app is loaded on its first lookup and reloaded on every
/// `NOTIFY sigma_discovery` for it (its revision there is only a lower bound, migration 29), one reload of an
/// app at a time: notifications that come during one ask for one more after it. Blocking queries wait here.
final class EndpointCache: Sendable {
    struct Entry: Sendable {
        var index: UInt64
        var endpoints: [Sigma_V1_Endpoint]
        /// The unfiltered answer, encoded once per index (most lookups ask for exactly that).
        var encoded: [UInt8] = []
    }

    let store: Store
    let publisher: Publisher
    let eventsEndpoint: String
    let logger: Logger
    private let entries = Mutex<[String: Entry]>([:])
    private let waiters = RevisionWaiters()
    /// Apps being reloaded after a notification, and whether another came meanwhile.
    private let reloading = Mutex<[String: Bool]>([:])

    init(store: Store, publisher: Publisher, eventsEndpoint: String, logger: Logger) {
        self.store = store
        self.publisher = publisher
        self.eventsEndpoint = eventsEndpoint
        self.logger = logger
    }

    /// The app's entry, from memory or (the first time) from the database; NOT_FOUND for an app that does not exist.
    func entry(_ app: String) async throws -> Entry {
        if let entry = entries.withLock({ $0[app] }) { return entry }
        return try await reload(app)
    }

    /// Reads the app from the database, keeps it if it is newer than what memory holds, wakes the blocking
    /// queries it satisfies and publishes it on the app's topic.
    /// An app that no longer exists is dropped from memory, said on its topic, and its blocking queries wake
    /// (they answer NOT_FOUND).
    @discardableResult
    func reload(_ app: String) async throws -> Entry {
        let (loaded, exists) = try await load(app)
        guard exists else {
            forget(app, index: loaded.index)
            throw RPCError.notFound("no app \(app)")
        }
        if let known = entries.withLock({ $0[app] }), known.index >= loaded.index { return known }
        var answer = Sigma_V1_ResolveResponse()
        answer.app = app
        answer.index = loaded.index
        answer.endpoints = loaded.endpoints
        // Published first, so the cached answer carries the sequence that matches it (Clone pattern).
        let sequence = publisher.publish(topic: FeedTopics.app(app), payload: try answer.serializedBytes())
        answer.sequence = sequence
        answer.feedEpoch = publisher.epoch
        answer.eventsEndpoint = eventsEndpoint
        var entry = loaded
        entry.encoded = try answer.serializedBytes()
        let current = entries.withLock { entries -> Entry in
            if let known = entries[app], known.index >= entry.index { return known }
            entries[app] = entry
            return entry
        }
        waiters.advance(app, to: current.index)
        return current
    }

    private func forget(_ app: String, index: UInt64) {
        guard let known = entries.withLock({ $0.removeValue(forKey: app) }) else { return }
        var answer = Sigma_V1_ResolveResponse()
        answer.app = app
        answer.index = max(index, known.index + 1)
        answer.deleted = true
        if let payload: [UInt8] = try? answer.serializedBytes() { publisher.publish(topic: FeedTopics.app(app), payload: payload) }
        waiters.advance(app, to: answer.index)
        logger.info("app gone", metadata: ["app": "\(app)", "index": "\(answer.index)"])
    }

    /// Reloads every app held in memory (after the LISTEN connection came back: notifications may be lost).
    func reloadAll() async {
        for app in entries.withLock({ Array($0.keys) }) {
            do { try await reload(app) } catch {
                logger.warning("could not reload an app's endpoints", metadata: ["app": "\(app)", "error": "\(error)"])
            }
        }
    }

    /// A notification: a change of `app` committed. Reloaded unless memory doesn't hold it (its first lookup
    /// reads it); never waited for here, so the notifications of other apps go on meanwhile.
    func announced(_ app: String) {
        guard entries.withLock({ $0[app] != nil }) else { return }
        let start = reloading.withLock { reloading -> Bool in
            guard reloading[app] == nil else {
                reloading[app] = true
                return false
            }
            reloading[app] = false
            return true
        }
        guard start else { return }
        Task {
            repeat {
                do { try await reload(app) } catch let error as RPCError where error.code == .notFound {
                    // deleted: dropped and said by reload
                } catch {
                    logger.warning("could not reload an app's endpoints", metadata: ["app": "\(app)", "error": "\(error)"])
                }
            } while reloading.withLock { reloading -> Bool in
                if reloading[app] == true {
                    reloading[app] = false
                    return true
                }
                reloading[app] = nil
                return false
            }
        }
    }

    /// Waits until the app's index is above `above`, or `timeout` passes, or the task is cancelled.
    func wait(_ app: String, above: UInt64, timeout: Duration) async {
        await waiters.wait(for: app, above: above, timeout: timeout)
    }

    /// The app's index and endpoints, read together in one snapshot.
    private func load(_ app: String) async throws -> (entry: Entry, exists: Bool) {
        try await store.transaction(isolation: .repeatableRead) { tx in
            let head = try await tx.query(
                """
                SELECT EXISTS (SELECT 1 FROM app_directory WHERE name = $1) AS known,
                       coalesce((SELECT revision FROM app_index WHERE app = $1), 0)::bigint AS revision
                """, app)[0]
            let revision = UInt64(try head.decode(Int64.self, "revision"))
            guard try head.decode(Bool.self, "known") else { return (Entry(index: revision, endpoints: []), false) }
            let rows = try await tx.query(
                """
                SELECT id::text AS id, ordinal, ip, state, ready, node, generation, restarts,
                       coalesce((extract(epoch FROM next_retry_at) * 1000)::bigint, 0) AS next_retry_ms,
                       host_ip, idc, host_ports::text AS host_ports, ports::text AS ports
                FROM instance_directory
                WHERE app = $1 AND state <> 'Terminated'
                ORDER BY ordinal
                """, app)
            return (Entry(index: revision, endpoints: try rows.map(Self.endpoint)), true)
        }
    }

    static func endpoint(_ row: Row) throws -> Sigma_V1_Endpoint {
        var endpoint = Sigma_V1_Endpoint()
        endpoint.instanceID = try row.decode(String.self, "id")
        endpoint.ordinal = try row.decode(Int32.self, "ordinal")
        endpoint.ip = try row.decode(String.self, "ip")
        endpoint.state = try row.decode(String.self, "state")
        endpoint.ready = try row.decode(Bool.self, "ready") && endpoint.state == InstanceState.running.rawValue
        endpoint.stateCode = InstanceState(rawValue: endpoint.state)?.code ?? .instanceStateUnspecified
        endpoint.restarts = try row.decode(Int32.self, "restarts")
        endpoint.nextRetryUnixMs = try row.decode(Int64.self, "next_retry_ms")
        endpoint.node = try row.decode(String.self, "node")
        endpoint.generation = try row.decode(Int64.self, "generation")
        endpoint.hostIp = try row.decode(String.self, "host_ip")
        endpoint.idc = try row.decode(String.self, "idc")
        let hostPorts = try row.decodeJSON([String: Int].self, "host_ports")
        let ports = try JSONSerialization.jsonObject(with: Data(try row.decode(String.self, "ports").utf8)) as? [[String: Any]] ?? []
        endpoint.ports = ports.map { port in
            var out = Sigma_V1_EndpointPort()
            out.name = port["name"] as? String ?? ""
            out.containerPort = UInt32(clamping: port["containerPort"] as? Int ?? 0)
            out.protocol = port["protocol"] as? String ?? "tcp"
            out.hostPort = UInt32(clamping: hostPorts[out.name] ?? 0)
            return out
        }
        return endpoint
    }
}
