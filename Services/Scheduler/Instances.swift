import Core
import Foundation
import Logging
import Protocol
import RPC
import ClientKit
import ControlPlane
import Hosting
import Store

/// Instances: listing and describing (with events), termination, live resource updates, manual migration.
struct Instances: Sendable {
    let store: Store
    let logger: Logger

    /// Bound instances of `app` from `fromOrdinal` up turn Terminating (their agents stop them); unbound ones
    /// are Terminated at once. The leader releases what they held and removes them.
    static func terminate(_ tx: Transaction, app: String, fromOrdinal: Int, reason: String) async throws {
        let rows = try await InstancesTable.terminate(tx, app: app, fromOrdinal: fromOrdinal, reason: reason)
        guard !rows.isEmpty else { return }
        var ids: [String] = []
        var messages: [String] = []
        for row in rows {
            ids.append(row.id)
            messages.append(reason)
            if !row.node.isEmpty { try await Assignments.notify(tx, node: row.node, instance: row.id) }
        }
        try await Events.record(tx, .instance, ids, "Terminating", messages)
        try await Placement.wake(tx, because: app)
    }

    func list(_ request: Sigma_V1_ListInstancesRequest) async throws -> [Sigma_V1_Instance] {
        if !request.state.isEmpty && InstanceState(rawValue: request.state) == nil {
            throw RPCError.invalidArgument("state: \"\(request.state)\" is not one of \(InstanceState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let rows = try await store.query(
            """
            SELECT \(InstancesTable.listColumns) FROM instances i LEFT JOIN nodes n ON n.name = i.node
            WHERE ($1 = '' OR i.app = $1) AND ($2 = '' OR i.node = $2) AND ($3 = '' OR i.state = $3)
            ORDER BY i.app, i.ordinal
            """, request.app, request.node, request.state)
        return try rows.map(InstancesTable.instance)
    }

    func get(_ request: Sigma_V1_GetInstanceRequest) async throws -> Sigma_V1_GetInstanceResponse {
        var response = Sigma_V1_GetInstanceResponse()
        response.instance = try await find(request)
        response.events = try await Events.list(store: store, kind: "instance", name: response.instance.id, limit: 100)
        return response
    }

    /// The instance named by id, or by app and ordinal; NOT_FOUND when there is none.
    func find(_ request: Sigma_V1_GetInstanceRequest) async throws -> Sigma_V1_Instance {
        let rows: [Row]
        if !request.id.isEmpty {
            guard UUID(uuidString: request.id) != nil else { throw RPCError.invalidArgument("id: \"\(request.id)\" is not a UUID") }
            rows = try await store.query(
                "SELECT \(InstancesTable.listColumns) FROM instances i LEFT JOIN nodes n ON n.name = i.node WHERE i.id = $1::uuid", request.id)
        } else if !request.app.isEmpty {
            rows = try await store.query(
                "SELECT \(InstancesTable.listColumns) FROM instances i LEFT JOIN nodes n ON n.name = i.node WHERE i.app = $1 AND i.ordinal = $2",
                request.app, Int(request.ordinal))
        } else {
            throw RPCError.invalidArgument("id, or app and ordinal: required")
        }
        guard let row = rows.first else {
            throw RPCError.notFound(request.id.isEmpty ? "no instance \(request.app)-\(request.ordinal)" : "no instance \(request.id)")
        }
        return try InstancesTable.instance(row)
    }

    /// Live limits (and requests, if they still fit) for an app's instances or one instance; the agents apply
    /// them without a restart. For a whole app the spec changes too, as a new revision.
    func updateResources(_ request: Sigma_V1_UpdateResourcesRequest, apps: Apps, by requester: String) async throws
        -> Sigma_V1_UpdateResourcesResponse
    {
        let resources = ResourceRequirements(wire: request.resources)
        let problems = resources.problems()
        guard problems.isEmpty else { throw RPCError.invalidSpec(problems, prefix: "") }
        var response = Sigma_V1_UpdateResourcesResponse()
        if request.instanceID.isEmpty {
            guard !request.app.isEmpty else { throw RPCError.invalidArgument("app or instance_id: required") }
            var spec = try await apps.currentSpec(request.app)
            spec.resources = resources
            _ = try await apps.apply(spec, cause: "set resources: request \(resources.request), limit \(resources.limit)", by: requester)
            var list = Sigma_V1_ListInstancesRequest()
            list.app = request.app
            response.instances = try await self.list(list)
            return response
        }
        guard UUID(uuidString: request.instanceID) != nil else {
            throw RPCError.invalidArgument("instance_id: \"\(request.instanceID)\" is not a UUID")
        }
        try await store.transaction(isolation: .serializable) { tx in
            let rows = try await tx.query(
                "SELECT app, request_cpu_millis, request_memory_bytes, coalesce(node, '') AS node FROM instances WHERE id = $1::uuid FOR UPDATE",
                request.instanceID)
            guard let row = rows.first else { throw RPCError.notFound("no instance \(request.instanceID)") }
            let app = try row.decode(String.self, "app")
            let old = Resources(cpuMillis: try row.decode(Int64.self, "request_cpu_millis"), memoryBytes: try row.decode(Int64.self, "request_memory_bytes"))
            try await apps.checkRequestsFit(tx, app: app, instance: request.instanceID.lowercased(), from: old, to: resources.request)
            try await InstancesTable.setResources(tx, id: request.instanceID, resources)
            try await Events.record(tx, .instance, request.instanceID.lowercased(), "ResourcesChanged",
                                    "request \(resources.request), limit \(resources.limit)")
            let node = try row.decode(String.self, "node")
            if !node.isEmpty { try await Assignments.notify(tx, node: node, instance: request.instanceID.lowercased()) }
        }
        var get = Sigma_V1_GetInstanceRequest()
        get.id = request.instanceID
        response.instances = [try await find(get)]
        return response
    }

    /// Moves an instance: it stops on its node and is placed again (on `to_node` if given) with the same IP.
    func migrate(_ request: Sigma_V1_MigrateInstanceRequest) async throws -> Sigma_V1_MigrateInstanceResponse {
        guard UUID(uuidString: request.instanceID) != nil else {
            throw RPCError.invalidArgument("instance_id: \"\(request.instanceID)\" is not a UUID")
        }
        try await store.transaction(isolation: .readCommitted) { tx in
            let rows = try await tx.query(
                "SELECT app, state, coalesce(node, '') AS node FROM instances WHERE id = $1::uuid FOR UPDATE", request.instanceID)
            guard let row = rows.first else { throw RPCError.notFound("no instance \(request.instanceID)") }
            let state = InstanceState(rawValue: try row.decode(String.self, "state")) ?? .pending
            let node = try row.decode(String.self, "node")
            guard InstanceState.live.contains(state), !node.isEmpty else {
                throw RPCError.failedPrecondition("instance \(request.instanceID) is \(state.rawValue), not running on a node")
            }
            if !request.toNode.isEmpty {
                guard request.toNode != node else { throw RPCError.failedPrecondition("instance already runs on \(node)") }
                let target = try await tx.query("SELECT state, schedulable FROM nodes WHERE name = $1", request.toNode)
                guard let t = target.first else { throw RPCError.notFound("no node \(request.toNode)") }
                guard try t.decode(String.self, "state") == "Ready", try t.decode(Bool.self, "schedulable") else {
                    throw RPCError.failedPrecondition("node \(request.toNode) is not Ready and schedulable")
                }
            }
            try await InstancesTable.migrate(tx, id: request.instanceID, targetNode: request.toNode)
            try await Events.record(tx, .instance, request.instanceID.lowercased(), "NeedMigration",
                                    "moved by hand off \(node)" + (request.toNode.isEmpty ? "" : " to \(request.toNode)"))
            try await Assignments.notify(tx, node: node, instance: request.instanceID.lowercased())
            try await Placement.wake(tx, because: try row.decode(String.self, "app"))
        }
        var get = Sigma_V1_GetInstanceRequest()
        get.id = request.instanceID
        var response = Sigma_V1_MigrateInstanceResponse()
        response.instance = try await find(get)
        return response
    }
}

extension Instances {
    /// `RestartInstance`: a new generation of one instance. On its node (a live state) it is bound there again
    /// in the same transaction, keeping its IP, host ports and SSDs: its agent stops the old generation and
    /// starts the new one (no other copy can start meanwhile). One that ended is moved (NeedMigration) and
    /// placement puts it where it fits, its volumes' node first.
    func restart(_ request: Sigma_V1_GetInstanceRequest, by requester: String) async throws -> Sigma_V1_RestartInstanceResponse {
        let id = try await find(request).id
        try await store.transaction(isolation: .readCommitted) { tx in
            let rows = try await tx.query(
                """
                SELECT app, state, coalesce(node, '') AS node, ip, prefix_length, gateway, host_ports::text AS ports, ssds::text AS ssds
                FROM instances WHERE id = $1::uuid FOR UPDATE
                """, id)
            guard let row = rows.first else { throw RPCError.notFound("no instance \(id)") }
            let app = try row.decode(String.self, "app")
            let stateName = try row.decode(String.self, "state")
            guard let state = InstanceState(rawValue: stateName) else { throw RPCError.internal("instance \(id) is in state \(stateName)") }
            let node = try row.decode(String.self, "node")
            if InstanceState.live.contains(state) && !node.isEmpty {
                try await InstancesTable.restarting(tx, id: id, reason: "restarted by \(requester)")
                var again = Placement.Allocated()
                again.ids = [id]
                again.nodes = [node]
                again.ips = [try row.decode(String.self, "ip")]
                again.prefixes = [try row.decode(Int.self, "prefix_length")]
                again.gateways = [try row.decode(String.self, "gateway")]
                again.ports = [try row.decode(String.self, "ports")]
                again.ssds = [try row.decode(String.self, "ssds")]
                try await Events.record(tx, .instance, id, "Restarted", "by \(requester), on \(node)")
                guard try await InstancesTable.bind(tx, again, channel: Assignments.channel) == 1 else {
                    throw RPCError.unavailable("instance \(id) changed meanwhile; try again")
                }
            } else if InstanceState.endings.contains(state) {
                try await InstancesTable.restarting(tx, id: id, reason: "restarted by \(requester) after it ended \(state.rawValue)")
                try await Events.record(tx, .instance, id, "Restarted", "by \(requester), after it ended \(state.rawValue)")
                try await Placement.wake(tx, because: app)
            } else {
                let why = switch state {
                case .pending: "not placed yet"
                case .needMigration: "being placed again already"
                default: "being stopped"
                }
                throw RPCError.failedPrecondition("instance \(id) is \(state.rawValue): \(why); nothing to restart")
            }
        }
        var restarted = Sigma_V1_GetInstanceRequest()
        restarted.id = id
        var response = Sigma_V1_RestartInstanceResponse()
        response.instance = try await find(restarted)
        return response
    }
}
