import Core
import Foundation
import Logging
import Protocol
import RPC
import Store

/// The leader's placement pass: Pending and NeedMigration instances are placed by Core's `Placer` over every
/// node, then bound in batches — IPs, host ports and SSDs from the Allocator, then one transaction that
/// checks the lease, sets node, state Scheduled and a new generation, and notifies the nodes' feeds. Those
/// left Pending get their IP ahead, before any of the page is bound (`addressAhead`).
struct Placement: Sendable {
    let store: Store
    let allocator: RPCClient
    let lease: Lease
    let logger: Logger
    /// Unplaced instances read and placed at a time; a pass goes through all of them.
    var maxPerPass = 20_000
    /// Instances bound per Allocator call and per transaction.
    var bindBatch = 5_000

    struct Unplaced {
        let id: String
        let app: String
        let ordinal: Int
        let revision: Int64
        let state: InstanceState
        let targetNode: String
        let request: Resources
        /// It holds its IP already (given ahead, while it waited for a node).
        let addressed: Bool
    }

    struct Group: Hashable {
        let app: String
        let revision: Int64
        let request: Resources
        let targetNode: String
        /// Nodes holding the ordinal's data (volumes, its SSDs), the most recently bound first: tried first.
        var homes: [VolumesTable.Home] = []
    }

    struct Binding {
        let instance: Unplaced
        let node: String
        let spec: AppSpec
    }

    /// The channel the leader listens on to place at once instead of at its next pass.
    static let channel = "sigma_pending"

    /// Wakes the leader's placement when `tx` commits (an instance needs a node).
    static func wake(_ tx: Transaction, because subject: String) async throws {
        try await tx.execute("SELECT pg_notify($1, $2)", channel, subject)
    }

    /// One pass over every unplaced instance, a page at a time; returns how many were bound.
    @discardableResult
    func run() async throws -> Int {
        var placer: Placer?
        var after: (app: String, ordinal: Int)?
        var bound = 0
        var pendingCount = 0
        while true {
            let page = try await loadUnplaced(after: after)
            guard let last = page.last else { break }
            after = (last.app, last.ordinal)
            if placer == nil { placer = Placer(nodes: try await loadNodes()) }
            let tPlace = ContinuousClock.now
            let (placed, pending) = try await place(page, on: &placer!)
            logger.debug("placed a page", metadata: ["instances": "\(page.count)", "took": "\(ContinuousClock.now - tPlace)"])
            bound += placed
            pendingCount += pending
            if page.count < maxPerPass { break }
        }
        if bound > 0 { logger.info("placed instances", metadata: ["count": "\(bound)", "pending": "\(pendingCount)"]) }
        return bound
    }

    /// Places one page and binds what found a node; returns (bound, still pending).
    private func place(_ unplaced: [Unplaced], on placer: inout Placer) async throws -> (Int, Int) {
        let specs = try await loadSpecs(Set(unplaced.map { "\($0.app)\u{0}\($0.revision)" }))
        let existing = try await loadExisting(apps: Array(Set(unplaced.map(\.app))))
        let withVolumes = Set(unplaced.filter { specs["\($0.app)\u{0}\($0.revision)"]?.keepsDataOnNode ?? false }.map(\.app))
        let homes = try await VolumesTable.homes(store, apps: Array(withVolumes))
        let (bindings, pending) = Self.decide(unplaced, specs: specs, existing: existing, homes: homes, on: &placer)
        for (ids, reason) in pending { try await recordPending(ids, reason: reason) }
        let waiting = Set(pending.flatMap(\.ids))
        try await addressAhead(unplaced.filter { waiting.contains($0.id) && $0.state == .pending && !$0.addressed }.map(\.id))
        // Pipelined: the next batch's allocation runs while this one is recorded.
        let batches = bindings.chunks(of: bindBatch)
        var bound = 0
        var next: Task<Allocated, any Error>? = batches.first.map { batch in Task { try await allocate(batch) } }
        for index in batches.indices {
            let allocated: Allocated
            do {
                allocated = try await next!.value
            } catch {
                next = nil
                throw error
            }
            next = index + 1 < batches.count ? Task { [batch = batches[index + 1]] in try await allocate(batch) } : nil
            do {
                bound += try await record(allocated)
            } catch {
                _ = try? await next?.value
                throw error
            }
        }
        return (bound, pending.reduce(0) { $0 + $1.ids.count })
    }

    /// Where each instance of a page goes: grouped by app, revision, request, target node and volume homes;
    /// an ordinal with volumes tries the nodes that hold them first, most recent first. The rest stays Pending
    /// with the reason.
    static func decide(_ unplaced: [Unplaced], specs: [String: AppSpec], existing: [String: [String: Int]],
                       homes: [String: [VolumesTable.Home]], on placer: inout Placer) -> ([Binding], [(ids: [String], reason: String)]) {
        var groups: [Group: [Unplaced]] = [:]
        var order: [Group] = []
        for instance in unplaced {
            var group = Group(app: instance.app, revision: instance.revision, request: instance.request, targetNode: instance.targetNode)
            if instance.targetNode.isEmpty { group.homes = homes["\(instance.app)\u{0}\(instance.ordinal)"] ?? [] }
            if groups[group] == nil { order.append(group) }
            groups[group, default: []].append(instance)
        }
        var bindings: [Binding] = []
        var pending: [(ids: [String], reason: String)] = []
        for group in order {
            guard let spec = specs["\(group.app)\u{0}\(group.revision)"] else { continue }
            var demand = PlacementDemand(spec: spec)
            demand.request = group.request
            if !group.targetNode.isEmpty {
                demand.selector.requirements.append(.init("node", .in, [group.targetNode]))
                demand.spread.required = false
            }
            var members = groups[group]![...]
            // Where its volumes are, if that node can take it; else anywhere (with new volumes there).
            for home in group.homes where !members.isEmpty {
                var there = demand
                there.selector.requirements.append(.init("node", .in, [home.node]))
                there.spread.required = false
                // Its SSDs are its own there already: none is taken from the node's free ones.
                if let ssd = there.ssd, home.heldSSDs >= ssd.count { there.ssd = nil }
                for node in placer.place(there, count: members.count, existing: existing[group.app] ?? [:]).nodes {
                    bindings.append(Binding(instance: members.removeFirst(), node: node, spec: spec))
                }
            }
            guard !members.isEmpty else { continue }
            let outcome = placer.place(demand, count: members.count, existing: existing[group.app] ?? [:])
            for (instance, node) in zip(members, outcome.nodes) {
                bindings.append(Binding(instance: instance, node: node, spec: spec))
            }
            if let reason = outcome.reason {
                pending.append((members.dropFirst(outcome.nodes.count).map(\.id), reason.description))
            }
        }
        return (bindings, pending)
    }

    /// Unplaced instances in (app, ordinal) order, a page after `after`.
    func loadUnplaced(after: (app: String, ordinal: Int)?) async throws -> [Unplaced] {
        let rows = try await store.query(
            """
            SELECT id::text AS id, app, ordinal, revision, state, target_node, request_cpu_millis, request_memory_bytes, ip <> '' AS addressed
            FROM instances WHERE ((node IS NULL AND state = 'Pending') OR state = 'NeedMigration') AND (app, ordinal) > ($2, $3)
            ORDER BY app, ordinal LIMIT $1
            """, maxPerPass, after?.app ?? "", after?.ordinal ?? -1)
        return try rows.map { row in
            Unplaced(
                id: try row.decode(String.self, "id"), app: try row.decode(String.self, "app"),
                ordinal: try row.decode(Int.self, "ordinal"), revision: try row.decode(Int64.self, "revision"),
                state: InstanceState(rawValue: try row.decode(String.self, "state")) ?? .pending,
                targetNode: try row.decode(String.self, "target_node"),
                request: Resources(cpuMillis: try row.decode(Int64.self, "request_cpu_millis"), memoryBytes: try row.decode(Int64.self, "request_memory_bytes")),
                addressed: try row.decode(Bool.self, "addressed"))
        }
    }

    func loadSpecs(_ keys: Set<String>) async throws -> [String: AppSpec] {
        let pairs = keys.map { $0.split(separator: "\u{0}").map(String.init) }
        let rows = try await store.query(
            """
            SELECT r.app, r.revision, r.spec::text AS spec FROM app_revisions r
            JOIN unnest($1::text[], $2::bigint[]) AS k(app, revision) ON k.app = r.app AND k.revision = r.revision
            """, pairs.map { $0[0] }, pairs.map { Int64($0[1])! })
        var specs: [String: AppSpec] = [:]
        for row in rows {
            specs["\(try row.decode(String.self, "app"))\u{0}\(try row.decode(Int64.self, "revision"))"] = try Apps.decode(try row.decode(String.self, "spec"))
        }
        return specs
    }

    /// Every node with what is taken on it. Free SSDs and host ports come from the Allocator's views
    /// (`free_ssds`, `host_port_use`: the Allocator alone writes its tables, and it checks again when it allocates).
    func loadNodes() async throws -> [NodeCandidate] {
        let rows = try await store.query(
            """
            SELECT n.name, n.region, n.idc, n.isp, n.labels::text AS labels, n.cpu_millis, n.memory_bytes, n.state, n.schedulable,
                   coalesce(s.cpu, 0)::bigint AS requested_cpu, coalesce(s.memory, 0)::bigint AS requested_memory,
                   coalesce(d.sizes, '') AS ssds,
                   (coalesce(u.range_size, $2) - coalesce(u.used, 0))::bigint AS free_ports
            FROM nodes n
            LEFT JOIN (SELECT node, sum(request_cpu_millis) AS cpu, sum(request_memory_bytes) AS memory FROM instances
                       WHERE node IS NOT NULL AND state = ANY($1::text[]) GROUP BY node) s ON s.node = n.name
            LEFT JOIN (SELECT node, string_agg(size_bytes::text, ',') AS sizes FROM free_ssds GROUP BY node) d ON d.node = n.name
            LEFT JOIN host_port_use u ON u.node = n.name
            """, Nodes.holdingStates, HostPortRange.default.count)
        return try rows.map { row in
            NodeCandidate(
                name: try row.decode(String.self, "name"), region: try row.decode(String.self, "region"),
                idc: try row.decode(String.self, "idc"), isp: try row.decode(String.self, "isp"),
                labels: try row.decodeJSON([String: String].self, "labels"),
                capacity: Resources(cpuMillis: try row.decode(Int64.self, "cpu_millis"), memoryBytes: try row.decode(Int64.self, "memory_bytes")),
                requested: Resources(cpuMillis: try row.decode(Int64.self, "requested_cpu"), memoryBytes: try row.decode(Int64.self, "requested_memory")),
                health: NodeHealth(rawValue: try row.decode(String.self, "state")) ?? .broken,
                cordoned: !(try row.decode(Bool.self, "schedulable")),
                freeSSDs: try row.decode(String.self, "ssds").split(separator: ",").compactMap { Int64($0) },
                freeHostPorts: Int(try row.decode(Int64.self, "free_ports")))
        }
    }

    /// Each app's bound instances per node, for the spread.
    func loadExisting(apps: [String]) async throws -> [String: [String: Int]] {
        let rows = try await store.query(
            """
            SELECT app, node, count(*)::bigint AS n FROM instances
            WHERE app = ANY($1::text[]) AND node IS NOT NULL AND state = ANY($2::text[]) AND state <> 'NeedMigration'
            GROUP BY app, node
            """, apps, Nodes.holdingStates)
        var existing: [String: [String: Int]] = [:]
        for row in rows {
            existing[try row.decode(String.self, "app"), default: [:]][try row.decode(String.self, "node")] = Int(try row.decode(Int64.self, "n"))
        }
        return existing
    }

    private func recordPending(_ ids: [String], reason: String) async throws {
        try await lease.renewIfDue()
        try await store.transaction(isolation: .readCommitted) { tx in
            try await lease.check(tx)
            let names = try await InstancesTable.setPendingReason(tx, ids: ids, reason: reason)
            try await Events.record(tx, .instance, names, "FailedScheduling", Array(repeating: reason, count: names.count))
        }
    }

    /// A batch with what the Allocator handed out, as columns for the binding statement.
    struct Allocated: Sendable {
        var ids: [String] = []
        var nodes: [String] = []
        var ips: [String] = []
        var prefixes: [Int] = []
        var gateways: [String] = []
        var ports: [String] = []
        var ssds: [String] = []
        /// Instances the Allocator could not serve, with its reason: they stay unplaced.
        var failed: [String: String] = [:]
        var took: Duration = .zero
    }

    /// Allocates what the batch needs: IPs in one call, host ports and SSDs per instance.
    private func allocate(_ batch: [Binding]) async throws -> Allocated {
        let tStart = ContinuousClock.now
        var failed: [String: String] = [:]

        var ips: [String: Sigma_V1_IPAllocation] = [:]
        // Moving instances, and those given their IP ahead, keep the IP they hold, so an exhausted pool must not
        // hold them back: they go first.
        let holding = { (binding: Binding) in binding.instance.state == .needMigration || binding.instance.addressed }
        let moving = batch.filter(holding).map(\.instance.id)
        let fresh = batch.filter { !holding($0) }.map(\.instance.id)
        for ids in [moving, fresh] where !ids.isEmpty {
            for (id, reason) in try await allocateIPs(ids, into: &ips) { failed[id] = reason }
        }

        let ports = try await allocateHostPorts(batch, failed: &failed)
        let ssds = try await allocateSSDs(batch, failed: &failed)

        let ready = batch.filter { failed[$0.instance.id] == nil && ips[$0.instance.id] != nil }
        var columns = Allocated()
        columns.failed = failed
        for binding in ready {
            let id = binding.instance.id
            let ip = ips[id]!
            var named: [String: UInt32] = [:]
            for (port, number) in zip(binding.spec.ports, ports[id] ?? []) { named[port.name] = number }
            columns.ids.append(id)
            columns.nodes.append(binding.node)
            columns.ips.append(ip.address)
            columns.prefixes.append(Int(ip.prefixLength))
            columns.gateways.append(ip.gateway)
            columns.ports.append(String(decoding: try JSONSerialization.data(withJSONObject: named, options: [.sortedKeys]), as: UTF8.self))
            columns.ssds.append(try Assignments.encodeSSDs(ssds[id] ?? []))
        }
        columns.took = ContinuousClock.now - tStart
        return columns
    }

    /// Host ports per instance that needs them (host network mode), one call each; a node out of ports fails
    /// only its instance.
    private func allocateHostPorts(_ batch: [Binding], failed: inout [String: String]) async throws -> [String: [UInt32]] {
        var ports: [String: [UInt32]] = [:]
        let portItems = batch.filter { $0.spec.hostPortCount > 0 }.map { binding in
            var item = Sigma_V1_HostPortRequest()
            item.node = binding.node
            item.instanceID = binding.instance.id
            item.count = UInt32(binding.spec.hostPortCount)
            return item
        }
        for item in portItems {
            var request = Sigma_V1_AllocateHostPortsRequest()
            request.items = [item]
            do {
                ports[item.instanceID] = try await allocator.call(AllocatorMethods.allocateHostPorts, request).allocations.first?.ports ?? []
            } catch let error as RPCError where error.code == .resourceExhausted || error.code == .notFound {
                failed[item.instanceID] = "no host ports on \(item.node): \(error.message)"
            }
        }
        return ports
    }

    /// SSDs per instance that asks for them and has not failed yet, one call each.
    private func allocateSSDs(_ batch: [Binding], failed: inout [String: String]) async throws -> [String: [Sigma_V1_SSD]] {
        var ssds: [String: [Sigma_V1_SSD]] = [:]
        for binding in batch where binding.spec.ssd != nil && failed[binding.instance.id] == nil {
            var item = Sigma_V1_SSDRequest()
            item.node = binding.node
            item.instanceID = binding.instance.id
            item.count = UInt32(binding.spec.ssd!.count)
            item.minBytes = UInt64(binding.spec.ssd!.minBytes)
            var request = Sigma_V1_AllocateSSDsRequest()
            request.items = [item]
            do {
                ssds[item.instanceID] = try await allocator.call(AllocatorMethods.allocateSSDs, request).ssds
            } catch let error as RPCError where error.code == .resourceExhausted || error.code == .notFound {
                failed[item.instanceID] = "no SSD on \(item.node): \(error.message)"
            }
        }
        return ssds
    }

    /// IPs for `ids` in one call. When the pool cannot serve them all (the Allocator then hands out none), as
    /// many as it has free are asked for once more. Returns the ids left without an IP, with the reason.
    func allocateIPs(_ ids: [String], into ips: inout [String: Sigma_V1_IPAllocation]) async throws -> [String: String] {
        var request = Sigma_V1_AllocateIPsRequest()
        request.instanceIds = ids
        do {
            for allocation in try await allocator.call(AllocatorMethods.allocateIPs, request).allocations {
                ips[allocation.instanceID] = allocation
            }
            return [:]
        } catch let error as RPCError where error.code == .resourceExhausted || error.code == .failedPrecondition {
            let reason = "no instance IP: \(error.message)"
            var left = Dictionary(uniqueKeysWithValues: ids.map { ($0, reason) })
            guard error.code == .resourceExhausted else { return left }
            let free = try await allocator.call(AllocatorMethods.listIPPools, .init()).usage.reduce(0) { $0 + Int($1.free) }
            guard free > 0 else { return left }
            request.instanceIds = Array(ids.prefix(free))
            do {
                for allocation in try await allocator.call(AllocatorMethods.allocateIPs, request).allocations {
                    ips[allocation.instanceID] = allocation
                    left[allocation.instanceID] = nil
                }
            } catch let error as RPCError where error.code == .resourceExhausted {
                // Taken meanwhile by another caller; the next pass tries again.
            }
            return left
        }
    }

    /// Records an allocated batch: bound instances, their events and notifications; instances the Allocator
    /// could not serve stay unplaced with its reason. Returns how many were bound.
    private func record(_ values: Allocated) async throws -> Int {
        try await lease.renewIfDue()
        let tStart = ContinuousClock.now
        let bound = try await store.transaction(isolation: .readCommitted) { tx -> Int in
            try await lease.check(tx)
            return try await InstancesTable.bind(tx, values, channel: Assignments.channel)
        }
        for (reason, ids) in Dictionary(grouping: values.failed.keys, by: { values.failed[$0]! }) {
            try await recordPending(ids, reason: reason)
        }
        logger.debug("bound a batch", metadata: ["count": "\(bound)", "allocate": "\(values.took)", "record": "\(ContinuousClock.now - tStart)"])
        return bound
    }
}
