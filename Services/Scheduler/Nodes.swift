import Core
import Foundation
import Logging
import Protocol
import RPC
import ClientKit
import ControlPlane
import Hosting
import Store

/// Nodes: registration (SSDs and the port range go on to the Allocator), heartbeats, cordon/drain/remove, and
/// the pool figures. Health changes from missed heartbeats are the leader's job (`HealthMonitor`).
struct Nodes: Sendable {
    let store: Store
    let allocator: RPCClient
    let eventsEndpoint: String
    let heartbeatInterval: Duration
    /// Silence after which a node is declared Broken (told to agents for self-fencing).
    let brokenAfter: Duration
    /// What each accepted heartbeat grants the node's safe-mode instances.
    let lease: NodeLease
    /// What heartbeats' instance statuses change (their rows written only when something did).
    let reports: StatusReports
    /// Steady nodes' heartbeats, answered from memory and persisted in batches.
    let liveness: NodeLiveness
    let logger: Logger

    static func milliseconds(_ duration: Duration) -> UInt32 {
        UInt32(clamping: duration.wholeMilliseconds)
    }

    /// States whose instances hold their node's resources (requests, ports, SSDs).
    static let holdingStates = InstanceState.names(InstanceState.holding)

    func register(_ request: Sigma_V1_RegisterNodeRequest) async throws -> Sigma_V1_RegisterNodeResponse {
        guard Self.isValidNodeName(request.name) else {
            throw RPCError.invalidArgument("name: \(request.name.quotedForError) is not a node name (lowercase letters, digits, '.' and '-', at most 253)")
        }
        guard IPv4Address(request.hostIp) != nil else { throw RPCError.invalidArgument("host_ip: \"\(request.hostIp)\" is not an IPv4 address") }
        guard request.capacity.cpuMillis >= 0, request.capacity.memoryBytes >= 0, request.diskBytes >= 0 else {
            throw RPCError.invalidArgument("capacity: must not be negative")
        }
        for (key, value) in request.labels {
            guard LabelSelector.isValidKey(key), value.count <= 253 else {
                throw RPCError.invalidArgument("labels.\(key): not a label key, or value over 253 characters")
            }
        }
        let labels = String(decoding: try JSONSerialization.data(withJSONObject: request.labels, options: [.sortedKeys]), as: UTF8.self)
        let received = ContinuousClock.now
        // The lease is renewed here too (never for a Broken node), though none is granted: so this replica
        // answers the node's first heartbeat from memory (`NodeLiveness`), not a transaction per node when
        // thousands register at once.
        let known = try await store.transaction(isolation: .readCommitted) { tx in
            let rows = try await tx.query(
                """
                INSERT INTO nodes (name, host_ip, region, idc, isp, labels, cpu_millis, memory_bytes, disk_bytes, agent_endpoint,
                                   last_heartbeat, lease_renewed_at, lease_ttl_ms)
                VALUES ($1, $2::inet, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, now(), now(), $11)
                ON CONFLICT (name) DO UPDATE SET host_ip = $2::inet, region = $3, idc = $4, isp = $5, labels = $6::jsonb,
                    cpu_millis = $7, memory_bytes = $8, disk_bytes = $9, agent_endpoint = $10, updated_at = now(),
                    lease_renewed_at = CASE WHEN nodes.state <> 'Broken' THEN GREATEST(nodes.lease_renewed_at, now()) ELSE nodes.lease_renewed_at END,
                    lease_ttl_ms = CASE WHEN nodes.state <> 'Broken' THEN $11 ELSE nodes.lease_ttl_ms END
                RETURNING (xmax = 0) AS created, state, epoch
                """, request.name, request.hostIp, request.region, request.idc, request.isp, labels,
                request.capacity.cpuMillis, request.capacity.memoryBytes, request.diskBytes, request.agentEndpoint, lease.ttlMillis)
            let created = try rows.first?.decode(Bool.self, "created") ?? false
            let health = NodeHealth(rawValue: try rows.first?.decode(String.self, "state") ?? "") ?? .broken
            let epoch = try rows.first?.decode(Int64.self, "epoch") ?? 0
            try await Events.record(
                tx, .node, request.name, created ? "Registered" : "Updated",
                "\(request.hostIp) \(request.idc), cpu \(Quantity.formatCPU(request.capacity.cpuMillis)), memory \(Quantity.formatBytes(request.capacity.memoryBytes))")
            return NodeLiveness.Known(health: health, epoch: epoch, grantable: health == .broken ? received : received + .milliseconds(lease.ttlMillis))
        }
        liveness.learned(request.name, known)
        // The Allocator owns SSDs and host ports; it learns this node's inventory now.
        var ssds = Sigma_V1_ReportSSDsRequest()
        ssds.node = request.name
        ssds.ssds = request.ssds
        _ = try await callAllocator(AllocatorMethods.reportSSDs, ssds)
        if request.hasPortRange {
            var range = Sigma_V1_SetNodePortRangeRequest()
            range.range = request.portRange
            range.range.node = request.name
            _ = try await callAllocator(AllocatorMethods.setNodePortRange, range)
        }
        logger.info("node registered", metadata: ["node": "\(request.name)", "idc": "\(request.idc)"])
        var response = Sigma_V1_RegisterNodeResponse()
        response.node = try await get(request.name)
        response.eventsEndpoint = eventsEndpoint
        response.heartbeatIntervalMs = Self.milliseconds(heartbeatInterval)
        response.brokenAfterMs = Self.milliseconds(brokenAfter)
        return response
    }

    func callAllocator<Request, Response>(_ method: RPCMethod<Request, Response>, _ request: Request) async throws -> Response {
        do {
            return try await allocator.call(method, request)
        } catch let error as RPCError where error.code == .unavailable || error.code == .deadlineExceeded {
            throw RPCError.unavailable("allocator: \(error.message)")
        }
    }

    /// Records a heartbeat: utilization, and each instance's state as its agent sees it. An instance on a node
    /// is (id, generation): every generation the agent still knows may be reported, and an old one never
    /// conflicts with the new one. A bad entry is refused alone (`refused`); the rest counts, and so does the
    /// node's liveness — a node turns Suspect or Broken only by silence, never by what it said. Generations this
    /// node no longer owns that still run come back in `stop`.
    func heartbeat(_ request: Sigma_V1_HeartbeatRequest) async throws -> Sigma_V1_HeartbeatResponse {
        guard !request.node.isEmpty else { throw RPCError.invalidArgument("node: required") }
        let (accepted, refused) = Self.screen(request.instances)
        let heard = NodeLiveness.Heard(at: .now, epoch: request.epoch, cpu: request.usage.cpuMillis,
                                       memory: request.usage.memoryBytes, disk: request.usage.diskBytes)
        var response: Sigma_V1_HeartbeatResponse
        if let (grant, known) = liveness.grant(node: request.node, heard) {
            // A steady node: nothing of the node is written now (`NodeLiveness`); its instances' reports are. A
            // Suspect one is Ready by this heartbeat, stored with the next flush.
            response = Sigma_V1_HeartbeatResponse()
            response.health = NodeHealth.ready.rawValue
            response.healthCode = NodeHealth.ready.code
            response.epoch = known.epoch
            response.leaseTtlMs = UInt32(clamping: grant)
            if !accepted.isEmpty || known.hasPriors || known.volumesDue || !request.releasedVolumes.isEmpty {
                (response.stop, response.releaseVolumes) = try await store.transaction(isolation: .readCommitted) { tx in
                    try await instances(tx, request, accepted, priors: known.hasPriors, volumesDue: known.volumesDue)
                }
            }
        } else {
            response = try await lockedHeartbeat(request, accepted, at: heard.at)
        }
        // Agents that predate `stop` act on ids: an id goes there only when no other generation of it was
        // reported (else they would stop the generation this node does own).
        let generations = Dictionary(accepted.map { ($0.instanceID, 1) }, uniquingKeysWith: +)
        response.stopInstances = response.stop.map(\.instanceID).filter { generations[$0] == 1 }
        response.refused = refused
        return response
    }

    /// What a heartbeat's instance statuses and volumes change: the generations to stop, the volumes to remove.
    private func instances(
        _ tx: Transaction, _ request: Sigma_V1_HeartbeatRequest, _ accepted: [Sigma_V1_InstanceStatus], priors: Bool, volumesDue: Bool
    ) async throws -> ([Sigma_V1_InstanceRef], [Sigma_V1_VolumeRef]) {
        let stop = try await reports.apply(tx, node: request.node, accepted, priors: priors)
        try await VolumesTable.released(tx, node: request.node, request.releasedVolumes)
        return (stop, volumesDue ? try await VolumesTable.due(tx, node: request.node) : [])
    }

    /// A heartbeat through the transaction that locks the node's row: its health may change, its lease is
    /// renewed now, and this replica learns the node's state for the heartbeats after.
    private func lockedHeartbeat(
        _ request: Sigma_V1_HeartbeatRequest, _ accepted: [Sigma_V1_InstanceStatus], at received: ContinuousClock.Instant
    ) async throws -> Sigma_V1_HeartbeatResponse {
        let (response, known) = try await store.transaction(isolation: .readCommitted) { tx in
            let rows = try await tx.query(
                "SELECT state, epoch FROM nodes WHERE name = $1 FOR UPDATE", request.node)
            guard let row = rows.first else {
                throw RPCError.notFound("node \(request.node) is not registered; call RegisterNode first")
            }
            let health = NodeHealth(rawValue: try row.decode(String.self, "state")) ?? .ready
            let epoch = try row.decode(Int64.self, "epoch")
            let fenced = request.epoch == epoch
            let next = health.afterHeartbeat(fenced: fenced)
            // The lease is granted only at the node's current epoch: a node that must fence gets none until it has.
            let granted = fenced && next != .broken ? lease.ttlMillis : 0
            try await tx.execute(
                """
                UPDATE nodes SET last_heartbeat = now(), state = $2, usage_cpu_millis = $3, usage_memory_bytes = $4,
                    usage_disk_bytes = $5,
                    lease_renewed_at = CASE WHEN $6::bigint > 0 THEN GREATEST(lease_renewed_at, now()) ELSE lease_renewed_at END,
                    lease_ttl_ms = CASE WHEN $6::bigint > 0 THEN $6::bigint ELSE lease_ttl_ms END
                WHERE name = $1
                """, request.node, next.rawValue, request.usage.cpuMillis, request.usage.memoryBytes, request.usage.diskBytes, granted)
            if next != health {
                try await Events.record(tx, .node, request.node, next.rawValue,
                                        health == .broken ? "fenced at epoch \(epoch); back in service" : "heartbeats resumed")
            }
            var response = Sigma_V1_HeartbeatResponse()
            response.health = next.rawValue
            response.healthCode = next.code
            response.epoch = epoch
            response.fence = !fenced && health == .broken || request.epoch > epoch
            response.leaseTtlMs = UInt32(clamping: granted)
            (response.stop, response.releaseVolumes) = try await instances(tx, request, accepted, priors: true, volumesDue: true)
            // Counted from before the transaction began, so never past what it persists.
            let grantable = granted > 0 ? received + .milliseconds(granted) : received
            return (response, NodeLiveness.Known(health: next, epoch: epoch, grantable: grantable))
        }
        liveness.learned(request.node, known)
        return response
    }

    /// Splits a heartbeat's entries into those taken and those refused, each refusal saying why.
    static func screen(_ statuses: [Sigma_V1_InstanceStatus]) -> (accepted: [Sigma_V1_InstanceStatus], refused: [Sigma_V1_RefusedEntry]) {
        var accepted: [Sigma_V1_InstanceStatus] = []
        var refused: [Sigma_V1_RefusedEntry] = []
        var seen = Set<String>()
        for var status in statuses {
            var entry = Sigma_V1_RefusedEntry()
            entry.instanceID = String(status.instanceID.prefix(64))
            entry.generation = status.generation
            entry.code = .invalidArgument
            if UUID(uuidString: status.instanceID) == nil {
                entry.message = "instance_id: \"\(status.instanceID.prefix(64))\" is not a UUID"
            } else if InstanceState(name: status.state, code: status.stateCode) == nil {
                entry.message = "state: \"\(status.state.prefix(64))\" (state_code \(status.stateCode.rawValue)) is not a known state, or the two disagree"
            } else if let state = InstanceState(name: status.state, code: status.stateCode), !InstanceState.reportable.contains(state) {
                entry.message = "state: \(state.rawValue) is not a state an agent reports (\(InstanceState.names(InstanceState.reportable).joined(separator: ", ")))"
            } else if !seen.insert("\(status.instanceID.lowercased())/\(status.generation)").inserted {
                entry.message = "generation \(status.generation) of \(status.instanceID) reported twice"
            } else {
                status.instanceID = status.instanceID.lowercased()
                status.state = InstanceState(name: status.state, code: status.stateCode)!.rawValue
                accepted.append(status)
                continue
            }
            refused.append(entry)
        }
        return (accepted, refused)
    }

    /// Ready → Suspect, and Ready or Suspect → Broken (its epoch rises), for nodes silent longer than the
    /// thresholds (seconds). Returns (name, new state, epoch) of each changed. Rows are locked in name order,
    /// as the liveness flush locks them (`NodesFlush`), so the two never deadlock.
    static func markSilent(_ tx: Transaction, suspectAfter: Double, brokenAfter: Double) async throws -> [(String, String, Int64)] {
        let rows = try await tx.query(
            """
            WITH silent AS (
                SELECT name FROM nodes
                WHERE (state = 'Ready' AND last_heartbeat < now() - $1 * interval '1 millisecond')
                   OR (state = 'Suspect' AND last_heartbeat < now() - $2 * interval '1 millisecond')
                ORDER BY name FOR UPDATE
            )
            UPDATE nodes n SET
                state = CASE WHEN n.last_heartbeat < now() - $2 * interval '1 millisecond' THEN 'Broken' ELSE 'Suspect' END,
                epoch = CASE WHEN n.last_heartbeat < now() - $2 * interval '1 millisecond' THEN n.epoch + 1 ELSE n.epoch END,
                updated_at = now()
            FROM silent s
            WHERE n.name = s.name AND ((n.state = 'Ready' AND n.last_heartbeat < now() - $1 * interval '1 millisecond')
               OR (n.state = 'Suspect' AND n.last_heartbeat < now() - $2 * interval '1 millisecond'))
            RETURNING n.name, n.state, n.epoch
            """, Upkeep.millis(suspectAfter), Upkeep.millis(brokenAfter))
        return try rows.map { (try $0.decode(String.self, "name"), try $0.decode(String.self, "state"), try $0.decode(Int64.self, "epoch")) }
    }

    func cordon(_ name: String, schedulable: Bool, draining: Bool, reason: String) async throws -> Sigma_V1_Node {
        try await store.transaction(isolation: .readCommitted) { tx in
            let updated = try await tx.execute(
                "UPDATE nodes SET schedulable = $2, draining = $3, updated_at = now() WHERE name = $1", name, schedulable, draining)
            guard updated > 0 else { throw RPCError.notFound("no node \(name)") }
            try await Events.record(tx, .node, name, reason)
        }
        logger.info("node \(reason.lowercased())", metadata: ["node": "\(name)"])
        return try await get(name)
    }

    /// Removes a node that no longer holds instances (drain it first); its SSDs and port range go with it.
    func remove(_ name: String) async throws -> Sigma_V1_Node {
        let node = try await get(name)
        try await store.transaction(isolation: .readCommitted) { tx in
            let rows = try await tx.query(
                "SELECT count(*)::bigint AS n FROM instances WHERE node = $1 AND state = ANY($2::text[])", name, Self.holdingStates)
            let holding = try rows.first?.decode(Int64.self, "n") ?? 0
            guard holding == 0 else {
                throw RPCError.failedPrecondition("node \(name) still holds \(holding) instance(s); drain it first")
            }
            // Copies it may still run of safe-mode instances placed elsewhere keep them from starting until it
            // reports them stopped or its lease has certainly lapsed; without the node that would be never.
            let priors = try await tx.query(
                """
                SELECT count(*)::bigint AS n FROM instances i JOIN nodes n ON n.name = i.prior_node
                JOIN app_revisions r ON r.app = i.app AND r.revision = i.revision
                WHERE i.prior_node = $3 AND \(AppSpec.StoredPath.failoverMode(of: "r.spec")) = '\(FailoverMode.safe.rawValue)'
                  AND NOT \(InstancesTable.leaseLapsed)
                """, NodeLease.clockDrift, lease.marginMillis, name)
            let waiting = try priors.first?.decode(Int64.self, "n") ?? 0
            guard waiting == 0 else {
                throw RPCError.failedPrecondition(
                    "node \(name) may still run \(waiting) copy(ies) of safe-mode instances placed elsewhere: remove it once it reported them stopped or its lease has lapsed")
            }
            try await InstancesTable.forgetNode(tx, node: name)
            try await tx.execute("DELETE FROM nodes WHERE name = $1", name)
            try await Events.record(tx, .node, name, "Removed")
        }
        liveness.forget(name)
        logger.info("node removed", metadata: ["node": "\(name)"])
        return node
    }

    func get(_ name: String) async throws -> Sigma_V1_Node {
        guard let node = try await list(name: name).first else { throw RPCError.notFound("no node \(name)") }
        return node
    }

    func list(name: String = "") async throws -> [Sigma_V1_Node] {
        let rows = try await store.query(
            """
            SELECT n.name, host(n.host_ip) AS host_ip, n.region, n.idc, n.isp, n.labels::text AS labels,
                   n.cpu_millis, n.memory_bytes, n.disk_bytes, n.state, n.schedulable, n.draining, n.epoch, n.agent_endpoint,
                   coalesce((extract(epoch FROM n.last_heartbeat) * 1000)::bigint, 0) AS heartbeat_ms,
                   n.usage_cpu_millis, n.usage_memory_bytes, n.usage_disk_bytes,
                   coalesce(s.request_cpu, 0)::bigint AS request_cpu, coalesce(s.request_memory, 0)::bigint AS request_memory,
                   coalesce(s.limit_cpu, 0)::bigint AS limit_cpu, coalesce(s.limit_memory, 0)::bigint AS limit_memory,
                   coalesce(s.instances, 0)::bigint AS instances
            FROM nodes n
            LEFT JOIN (
                SELECT node, sum(request_cpu_millis) AS request_cpu, sum(request_memory_bytes) AS request_memory,
                       sum(limit_cpu_millis) AS limit_cpu, sum(limit_memory_bytes) AS limit_memory, count(*) AS instances
                FROM instances WHERE node IS NOT NULL AND state = ANY($2::text[]) GROUP BY node
            ) s ON s.node = n.name
            WHERE $1 = '' OR n.name = $1
            ORDER BY n.name
            """, name, Self.holdingStates)
        return try rows.map(Self.node)
    }

    static func node(_ row: Row) throws -> Sigma_V1_Node {
        var node = Sigma_V1_Node()
        node.name = try row.decode(String.self, "name")
        node.hostIp = try row.decode(String.self, "host_ip")
        node.region = try row.decode(String.self, "region")
        node.idc = try row.decode(String.self, "idc")
        node.isp = try row.decode(String.self, "isp")
        node.labels = try row.decodeJSON([String: String].self, "labels")
        node.capacity = Resources(cpuMillis: try row.decode(Int64.self, "cpu_millis"), memoryBytes: try row.decode(Int64.self, "memory_bytes")).wire
        node.diskBytes = try row.decode(Int64.self, "disk_bytes")
        node.health = try row.decode(String.self, "state")
        node.healthCode = NodeHealth(rawValue: node.health)?.code ?? .nodeHealthUnspecified
        node.cordoned = !(try row.decode(Bool.self, "schedulable"))
        node.draining = try row.decode(Bool.self, "draining")
        node.epoch = try row.decode(Int64.self, "epoch")
        node.agentEndpoint = try row.decode(String.self, "agent_endpoint")
        node.lastHeartbeatUnixMs = try row.decode(Int64.self, "heartbeat_ms")
        node.usage.cpuMillis = try row.decode(Int64.self, "usage_cpu_millis")
        node.usage.memoryBytes = try row.decode(Int64.self, "usage_memory_bytes")
        node.usage.diskBytes = try row.decode(Int64.self, "usage_disk_bytes")
        node.requested = Resources(cpuMillis: try row.decode(Int64.self, "request_cpu"), memoryBytes: try row.decode(Int64.self, "request_memory")).wire
        node.limits = Resources(cpuMillis: try row.decode(Int64.self, "limit_cpu"), memoryBytes: try row.decode(Int64.self, "limit_memory")).wire
        node.instances = UInt32(clamping: try row.decode(Int64.self, "instances"))
        return node
    }

    static func isValidNodeName(_ name: String) -> Bool {
        guard let first = name.first, let last = name.last, name.count <= 253 else { return false }
        let allowed: (Character) -> Bool = { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "." || $0 == "-") }
        return name.allSatisfy(allowed) && first != "." && first != "-" && last != "." && last != "-"
    }
}
