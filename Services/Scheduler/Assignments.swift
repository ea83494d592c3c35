import Core
import Foundation
import Logging
import Protocol
import RPC
import ServiceLifecycle
import Store
import Synchronization

/// What each node must run. Every change to a node's assignments sends `NOTIFY sigma_assign` in the
/// transaction that makes it; every scheduler replica listens and publishes the new assignment (or its
/// removal) on topic "node/<name>/", so an agent may follow any replica. `GetAssignments` is the Clone
/// pattern's snapshot: the feed's sequence is read first, then the rows, so nothing falls between them.
enum Assignments {
    static let channel = "sigma_assign"
    /// States whose instance is assigned to its node (the agent runs it, or waits to restart it).
    static let runningStates = InstanceState.names(InstanceState.live)
    /// States whose IP the overlay routes to the instance's node. NeedMigration keeps its route to the node it
    /// leaves until it is bound elsewhere: other nodes then switch from the old node to the new one in one step,
    /// instead of dropping the IP in between (a peer that resolves it in that gap waits a second for ARP to retry).
    static let routedStates = InstanceState.names(InstanceState.routed)

    static func topic(_ node: String) -> String { FeedTopics.node(node) }

    /// Tells every replica that `instance`'s assignment on `node` changed.
    static func notify(_ tx: Transaction, node: String, instance: String) async throws {
        try await tx.execute("SELECT pg_notify($1, $2)", channel, "\(node) \(instance)")
    }

    /// Many nodes' changes in one statement: `changes` maps each node to its changed instances, sent in
    /// notifications of at most 150 ids (PostgreSQL's payload limit is 8,000 bytes).
    static func notify(_ tx: Transaction, changes: [String: [String]]) async throws {
        var payloads: [String] = []
        for (node, ids) in changes {
            var start = 0
            while start < ids.count {
                let end = min(start + 150, ids.count)
                payloads.append(([node] + ids[start..<end]).joined(separator: " "))
                start = end
            }
        }
        guard !payloads.isEmpty else { return }
        try await tx.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS t(p)", channel, payloads)
    }

    /// Every bound instance of `app` (after a live change of its resources).
    /// A fresh token for an instance bound on `request.node` at `request.generation`: 256 random bits as 64 hex
    /// digits, of which the database keeps only the SHA-256; the one before is revoked.
    static func issueToken(_ store: Store, _ request: Sigma_V1_IssueTokenRequest) async throws -> String {
        guard UUID(uuidString: request.instanceID) != nil else {
            throw RPCError.invalidArgument("instance_id: \(request.instanceID.quotedForError) is not a UUID")
        }
        var generator = SystemRandomNumberGenerator()
        let token = (0..<4).map { _ in
            let word = generator.next() as UInt64
            let hex = String(word, radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
        let bound = try await InstancesTable.setToken(store, token, id: request.instanceID, node: request.node, generation: request.generation)
        guard bound else {
            throw RPCError.failedPrecondition(
                "instance \(request.instanceID) is not bound on node \(request.node.quotedForError) at generation \(request.generation)")
        }
        return token
    }

    static func notifyApp(_ tx: Transaction, app: String) async throws {
        try await tx.execute(
            "SELECT pg_notify($1, node || ' ' || id::text) FROM instances WHERE app = $2 AND node IS NOT NULL AND state = ANY($3::text[])",
            channel, app, runningStates)
    }

    /// An ordered app's successor may start once its predecessor turned Running (`startup: ordered`), or
    /// Running and ready (`ordered-ready`): `running` and `serving` are the instances that just did.
    static func releaseSuccessors(_ tx: Transaction, running: [String], serving: [String]) async throws {
        guard !running.isEmpty || !serving.isEmpty else { return }
        let rows = try await tx.query(
            """
            SELECT i.id::text AS predecessor, s.id::text AS id, s.node, \(startup("r.spec")) AS startup FROM instances i
            JOIN app_revisions r ON r.app = i.app AND r.revision = i.revision
            JOIN instances s ON s.app = i.app AND s.ordinal = i.ordinal + 1
            WHERE s.node IS NOT NULL AND s.state = ANY($3::text[])
              AND ((i.id = ANY($1::uuid[]) AND \(startup("r.spec")) = '\(StartupOrder.ordered.rawValue)')
                   OR (i.id = ANY($2::uuid[]) AND \(startup("r.spec")) = '\(StartupOrder.orderedReady.rawValue)'))
            """, running, serving, runningStates)
        for row in rows {
            let id = try row.decode(String.self, "id")
            let predecessor = try row.decode(String.self, "predecessor")
            let ready = try row.decode(String.self, "startup") == StartupOrder.orderedReady.rawValue ? " and ready" : ""
            try await notify(tx, node: try row.decode(String.self, "node"), instance: id)
            try await Events.record(tx, .instance, id, "StartAllowed", "predecessor \(predecessor) is Running\(ready)")
        }
    }

    /// Prior copies that are gone: each successor's agent hears again (a safe-mode one may start now), and
    /// an event says when and why.
    static func priorsGone(_ tx: Transaction, _ gone: [InstancesTable.GoneCopy], because reason: String) async throws {
        guard !gone.isEmpty else { return }
        try await notify(tx, changes: Dictionary(grouping: gone.filter { !$0.node.isEmpty }, by: \.node).mapValues { $0.map(\.id) })
        try await Events.record(tx, .instance, gone.map(\.id), "CopyGone",
                                gone.map { "generation \($0.priorGeneration) on \($0.priorNode): \(reason)" })
    }

    /// The startup order of a stored spec (`spec`: its SQL expression).
    static func startup(_ spec: String) -> String {
        "coalesce(\(spec) #>> \(AppSpec.StoredPath.startup), '\(StartupOrder.parallel.rawValue)')"
    }

    static let select = """
        SELECT i.id::text AS id, i.app, i.ordinal, i.generation, i.revision, coalesce(i.node, '') AS node, i.state, i.ip,
               coalesce((SELECT host(n.host_ip) FROM nodes n WHERE n.name = i.node), '') AS host_ip,
               i.prefix_length, i.gateway, i.host_ports::text AS host_ports, i.ssds::text AS ssds,
               i.request_cpu_millis, i.request_memory_bytes, i.limit_cpu_millis, i.limit_memory_bytes, r.spec::text AS spec,
               ((\(startup("r.spec")) = '\(StartupOrder.parallel.rawValue)' OR i.ordinal = 0 OR EXISTS (
                   SELECT 1 FROM instances p WHERE p.app = i.app AND p.ordinal = i.ordinal - 1 AND p.state = 'Running'
                   AND (p.ready OR \(startup("r.spec")) <> '\(StartupOrder.orderedReady.rawValue)')))
                AND (i.prior_node IS NULL OR \(AppSpec.StoredPath.failoverMode(of: "r.spec")) = '\(FailoverMode.fast.rawValue)')) AS may_start
        FROM instances i JOIN app_revisions r ON r.app = i.app AND r.revision = i.revision
        """

    static func snapshot(store: Store, node: String, publisher: Publisher) async throws -> Sigma_V1_GetAssignmentsResponse {
        var response = Sigma_V1_GetAssignmentsResponse()
        response.sequence = publisher.sequence(of: topic(node))
        response.feedEpoch = publisher.epoch
        let rows = try await store.query(
            """
            WITH n AS (SELECT epoch FROM nodes WHERE name = $1)
            SELECT (SELECT epoch FROM n) AS epoch, a.* FROM (\(select) WHERE i.node = $1 AND i.state = ANY($2::text[])) a
            RIGHT JOIN n ON true ORDER BY a.app, a.ordinal
            """, node, runningStates)
        guard let first = rows.first else { throw RPCError.notFound("node \(node) is not registered") }
        response.epoch = try first.decode(Int64.self, "epoch")
        var specs: [String: Sigma_V1_AppSpec] = [:]
        response.assignments = try rows.filter { try $0.decode(String?.self, "id") != nil }.map { try assignment($0, specs: &specs) }
        return response
    }

    /// One row of `select` as an assignment. `specs` caches each revision's spec across the rows of a batch.
    static func assignment(_ row: Row, specs: inout [String: Sigma_V1_AppSpec]) throws -> Sigma_V1_Assignment {
        var assignment = Sigma_V1_Assignment()
        assignment.instanceID = try row.decode(String.self, "id")
        assignment.app = try row.decode(String.self, "app")
        assignment.ordinal = try row.decode(Int32.self, "ordinal")
        assignment.generation = try row.decode(Int64.self, "generation")
        assignment.revision = try row.decode(Int64.self, "revision")
        let key = "\(assignment.app) \(assignment.revision)"
        if let spec = specs[key] {
            assignment.spec = spec
        } else {
            assignment.spec = try Apps.decode(try row.decode(String.self, "spec")).wire
            specs[key] = assignment.spec
        }
        assignment.ip = try row.decode(String.self, "ip")
        assignment.prefixLength = UInt32(clamping: try row.decode(Int.self, "prefix_length"))
        assignment.gateway = try row.decode(String.self, "gateway")
        let ports = try row.decodeJSON([String: Int].self, "host_ports")
        assignment.hostPorts = ports.mapValues { UInt32(clamping: $0) }
        assignment.ssds = try decodeSSDs(try row.decode(String.self, "ssds"))
        assignment.mayStart = try row.decode(Bool.self, "may_start")
        assignment.resources.request = Resources(
            cpuMillis: try row.decode(Int64.self, "request_cpu_millis"), memoryBytes: try row.decode(Int64.self, "request_memory_bytes")).wire
        assignment.resources.limit = Resources(
            cpuMillis: try row.decode(Int64.self, "limit_cpu_millis"), memoryBytes: try row.decode(Int64.self, "limit_memory_bytes")).wire
        return assignment
    }

    /// Every instance IP with the node that runs its current generation: the overlay's snapshot. The feed's
    /// sequence is read first, so nothing falls between the two.
    static let routesTopic = FeedTopics.routes

    static func routes(store: Store, publisher: Publisher) async throws -> Sigma_V1_GetRoutesResponse {
        var response = Sigma_V1_GetRoutesResponse()
        response.sequence = publisher.sequence(of: routesTopic)
        response.feedEpoch = publisher.epoch
        let rows = try await store.query(
            """
            SELECT i.id::text AS id, i.ip, i.node, host(n.host_ip) AS host_ip, i.generation
            FROM instances i JOIN nodes n ON n.name = i.node
            WHERE i.ip IS NOT NULL AND i.ip <> '' AND i.state = ANY($1::text[]) ORDER BY i.ip
            """, routedStates)
        response.routes = try rows.map { row in
            var route = Sigma_V1_Route()
            route.instanceID = try row.decode(String.self, "id")
            route.ip = try row.decode(String.self, "ip")
            route.node = try row.decode(String.self, "node")
            route.hostIp = try row.decode(String.self, "host_ip")
            route.generation = try row.decode(Int64.self, "generation")
            return route
        }
        return response
    }

    /// Why an instance left `node`, for the agent's stop reason.
    static func removalReason(node: String, now: String, state: String) -> String {
        switch state {
        case "Terminating", "Terminated": return "deleted"
        case "NeedMigration": return "migrated"
        default: return now != node ? (now.isEmpty ? "unbound" : "migrated to \(now)") : state
        }
    }

    static func encodeSSDs(_ ssds: [Sigma_V1_SSD]) throws -> String {
        let objects = ssds.map { ["path": $0.path, "size_bytes": $0.sizeBytes, "model": $0.model] as [String: Any] }
        return String(decoding: try JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys]), as: UTF8.self)
    }

    static func decodeSSDs(_ json: String) throws -> [Sigma_V1_SSD] {
        let objects = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] ?? []
        return objects.map { object in
            var ssd = Sigma_V1_SSD()
            ssd.path = object["path"] as? String ?? ""
            ssd.sizeBytes = (object["size_bytes"] as? NSNumber)?.uint64Value ?? 0
            ssd.model = object["model"] as? String ?? ""
            return ssd
        }
    }
}

/// Follows `sigma_assign` and publishes each changed assignment on its node's topic. Notifications that
/// arrive while a batch is being published are merged into the next one (one query per batch, the latest
/// state of each instance). After the listening connection comes back (notifications may have been lost),
/// every node's topic gets an empty "resync" event, which agents answer with a GetAssignments snapshot.
struct AssignmentFeed: Service {
    let store: Store
    let publisher: Publisher
    let logger: Logger

    struct Pending {
        var pairs: [(node: String, instance: String)] = []
        var seen = Set<String>()
        var resync = false
    }

    func run() async throws {
        let stream = try store.notifications(channels: [Assignments.channel])
        let pending = Mutex(Pending())
        let (wakeups, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let reader = Task {
            for await notification in stream {
                pending.withLock { pending in
                    switch notification {
                    case .connected:
                        pending.resync = true
                    case .notification(_, let payload):
                        let parts = payload.split(separator: " ").map(String.init)
                        for instance in parts.dropFirst() where pending.seen.insert("\(parts[0]) \(instance)").inserted {
                            pending.pairs.append((parts[0], instance))
                        }
                    }
                }
                wake.yield()
            }
            wake.finish()
        }
        defer { reader.cancel() }
        for await _ in wakeups.cancelOnGracefulShutdown() {
            let batch = pending.withLock { pending -> Pending in
                defer { pending = Pending() }
                return pending
            }
            if batch.resync { await resyncAll() }
            if !batch.pairs.isEmpty { await publish(batch.pairs) }
        }
        await publisher.close()
    }

    private func resyncAll() async {
        do {
            for row in try await store.query("SELECT name FROM nodes") {
                publisher.publish(topic: Assignments.topic(try row.decode(String.self, "name")), payload: [])
            }
            publisher.publish(topic: Assignments.routesTopic, payload: [])
        } catch {
            logger.warning("could not list nodes for a resync", metadata: ["error": "\(error)"])
        }
    }

    private func publish(_ pairs: [(node: String, instance: String)]) async {
        do {
            let rows = try await store.query("\(Assignments.select) WHERE i.id = ANY($1::uuid[])", Array(Set(pairs.map(\.instance))))
            var current: [String: (assignment: Sigma_V1_Assignment, node: String, state: String, hostIP: String)] = [:]
            var specs: [String: Sigma_V1_AppSpec] = [:]
            for row in rows {
                let assignment = try Assignments.assignment(row, specs: &specs)
                current[assignment.instanceID] = (
                    assignment, try row.decode(String.self, "node"), try row.decode(String.self, "state"), try row.decode(String.self, "host_ip"))
            }
            // The overlay's feed: each changed instance's route (once per batch, whatever nodes it touched).
            for instance in Set(pairs.map(\.instance)) {
                var event = Sigma_V1_RouteEvent()
                event.route.instanceID = instance
                if let now = current[instance], !now.node.isEmpty, !now.assignment.ip.isEmpty,
                   Assignments.routedStates.contains(now.state)
                {
                    event.route.ip = now.assignment.ip
                    event.route.node = now.node
                    event.route.hostIp = now.hostIP
                    event.route.generation = now.assignment.generation
                } else {
                    event.route.ip = current[instance]?.assignment.ip ?? ""
                    event.removed = true
                }
                publisher.publish(topic: Assignments.routesTopic, payload: try event.serializedBytes())
            }
            for (node, instance) in pairs {
                var event = Sigma_V1_AssignmentEvent()
                if let now = current[instance] {
                    event.assignment = now.assignment
                    event.removed = now.node != node || !Assignments.runningStates.contains(now.state)
                    if event.removed { event.reason = Assignments.removalReason(node: node, now: now.node, state: now.state) }
                } else {
                    event.assignment.instanceID = instance
                    event.removed = true
                    event.reason = "deleted"
                }
                publisher.publish(topic: Assignments.topic(node), payload: try event.serializedBytes())
            }
        } catch {
            // What could not be loaded is told to resync, so no agent misses it.
            logger.warning("could not load assignments; nodes told to resync", metadata: ["error": "\(error)"])
            for node in Set(pairs.map(\.node)) { publisher.publish(topic: Assignments.topic(node), payload: []) }
            publisher.publish(topic: Assignments.routesTopic, payload: [])
        }
    }
}
