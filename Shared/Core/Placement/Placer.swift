/// Places instances on nodes: the filters decide which nodes may take one; among those the choice is
/// lexicographic —
/// 1. preferred IDCs first (while any of them has room),
/// 2. spread: level by level over the app's topology keys (default IDC, then node), the domain holding the fewest of
///    the app's instances (ties by name), so the skew is the smallest that capacity and selectors allow,
/// 3. the scores (`PlacementScores.all`; today balance: the node that would be least requested afterwards),
/// 4. the node's name, so the same cluster always gets the same answer.
/// A new yes/no rule is a `PlacementFilter`, a new preference a `PlacementScore`: one type each, listed in
/// `PlacementFilters.all` or `PlacementScores.all`.
///
/// Every eligible node is considered, without scanning them per decision: a pass builds an index per app (a domain
/// tree whose leaves keep their nodes in a heap), so one decision costs O(domains on the path + log nodes).
/// Placing only ever uses capacity up, so a node that no longer fits leaves the index for the rest of the pass.
public struct Placer: Sendable {
    public private(set) var nodes: [NodeCandidate]
    private var indexByName: [String: Int]
    public let filters: [any PlacementFilter]
    public let scores: [any PlacementScore]

    public init(nodes: [NodeCandidate], filters: [any PlacementFilter] = PlacementFilters.all,
                scores: [any PlacementScore] = PlacementScores.all) {
        self.nodes = nodes
        self.filters = filters
        self.scores = scores
        indexByName = Dictionary(nodes.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    public func node(named name: String) -> NodeCandidate? { indexByName[name].map { nodes[$0] } }

    /// Places up to `count` instances of `demand`. `existing` counts the app's instances already on each node
    /// (they weigh in the spread). Capacity taken here stays taken for later calls on this placer.
    public mutating func place(_ demand: PlacementDemand, count: Int, existing: [String: Int] = [:]) -> PlacementOutcome {
        guard count > 0 else { return PlacementOutcome(nodes: [], reason: nil) }
        var index = SpreadIndex(placer: self, demand: demand, existing: existing)
        var chosen: [String] = []
        chosen.reserveCapacity(count)
        while chosen.count < count, let node = index.next(&self) {
            chosen.append(nodes[node].name)
        }
        let reason = chosen.count < count ? explain(demand, skewBlocked: index.skewBlocked) : nil
        return PlacementOutcome(nodes: chosen, reason: reason)
    }

    /// Returns a node's share of one instance of `demand` (an instance that left it during the pass).
    public mutating func release(_ demand: PlacementDemand, from name: String) {
        guard let index = indexByName[name] else { return }
        nodes[index].requested -= demand.request
        nodes[index].freeHostPorts += demand.hostPorts
    }

    /// Why no node can take one more instance of `demand`: each node's first failing filter, counted.
    public func explain(_ demand: PlacementDemand, skewBlocked: Bool = false) -> PendingReason {
        var counts: [String: Int] = [:]
        var available = 0
        for node in nodes {
            if let reason = PlacementFilters.reject(node, for: demand, filters: filters) {
                counts[reason, default: 0] += 1
            } else {
                available += 1
            }
        }
        return PendingReason(
            total: nodes.count, available: available,
            reasons: counts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { ($0.key, $0.value) },
            spreadMaxSkew: skewBlocked && available > 0 ? demand.spread.maxSkew : nil)
    }

    mutating func take(_ demand: PlacementDemand, on index: Int) {
        nodes[index].take(demand)
    }
}

/// The result of one `place` call: the chosen node per placed instance, in order, and why the rest stay Pending.
public struct PlacementOutcome: Sendable {
    public var nodes: [String]
    public var reason: PendingReason?
}

/// Why instances stay Pending, as `sigmactl describe instance` shows it:
/// "0/5 nodes available: 3 insufficient cpu, 2 selector mismatch".
public struct PendingReason: Sendable, CustomStringConvertible, Equatable {
    public var total: Int
    public var available: Int
    public var reasons: [(reason: String, count: Int)]
    /// Set when nodes had room but using them would have broken the app's required spread.
    public var spreadMaxSkew: Int?

    public init(total: Int, available: Int, reasons: [(String, Int)], spreadMaxSkew: Int? = nil) {
        self.total = total
        self.available = available
        self.reasons = reasons.map { (reason: $0.0, count: $0.1) }
        self.spreadMaxSkew = spreadMaxSkew
    }

    public var description: String {
        if total == 0 { return "0/0 nodes available: no node is registered" }
        var text = "\(spreadMaxSkew == nil ? available : 0)/\(total) nodes available"
        var parts = reasons.map { "\($0.count) \($0.reason)" }
        if let skew = spreadMaxSkew {
            parts.insert("\(available) would break the required spread (max skew \(skew))", at: 0)
        }
        if !parts.isEmpty { text += ": " + parts.joined(separator: ", ") }
        return text
    }

    public static func == (a: PendingReason, b: PendingReason) -> Bool { a.description == b.description }
}

/// One app's placement index for one pass: eligible nodes grouped into a domain tree by the spread keys.
private struct SpreadIndex {
    /// A node in a leaf domain's heap, keyed by (instances of the app there if spread covers nodes, its
    /// score for one more, name).
    struct Entry {
        var count: Int
        var score: Double
        var name: String
        var node: Int
    }

    final class Domain {
        let name: String
        var count = 0
        var closed = false
        var children: [Domain] = []
        var heap: Heap<Entry>?
        /// The smallest count among this leaf's nodes that left the heap (they keep it for the pass).
        var closedNodesMin = Int.max

        init(name: String) { self.name = name }
    }

    let demand: PlacementDemand
    let dynamicFilters: [any PlacementFilter]
    let spreadsNodes: Bool
    /// Top-level groups, tried in order: the preferred IDCs' nodes, then the rest.
    let groups: [Domain]
    var nodeCounts: [Int: Int]
    private(set) var skewBlocked = false

    init(placer: Placer, demand: PlacementDemand, existing: [String: Int]) {
        self.demand = demand
        let staticFilters = placer.filters.filter { !$0.changesWithPlacement }
        dynamicFilters = placer.filters.filter(\.changesWithPlacement)
        spreadsNodes = demand.spread.keys.last == "node"
        let levels = spreadsNodes ? Array(demand.spread.keys.dropLast()) : demand.spread.keys

        var preferred: [Int] = []
        var others: [Int] = []
        var counts: [Int: Int] = [:]
        for (index, node) in placer.nodes.enumerated() {
            guard !staticFilters.contains(where: { $0.reject(node, for: demand) != nil }) else { continue }
            if let count = existing[node.name], count > 0 { counts[index] = count }
            if demand.preferredIDCs.contains(node.idc) { preferred.append(index) } else { others.append(index) }
        }
        nodeCounts = counts
        let spreadsNodes = spreadsNodes
        func build(_ name: String, _ members: [Int], level: Int) -> Domain {
            let domain = Domain(name: name)
            domain.count = members.reduce(0) { $0 + counts[$1, default: 0] }
            if level == levels.count {
                domain.heap = Heap(
                    members.map { index in
                        let node = placer.nodes[index]
                        return Entry(
                            count: spreadsNodes ? counts[index, default: 0] : 0,
                            score: PlacementScores.total(node, for: demand, scores: placer.scores), name: node.name, node: index)
                    }, by: SpreadIndex.inOrder)
            } else {
                var byValue: [String: [Int]] = [:]
                for index in members { byValue[placer.nodes[index].value(forKey: levels[level]) ?? "", default: []].append(index) }
                domain.children = byValue.keys.sorted().map { build($0, byValue[$0]!, level: level + 1) }
            }
            return domain
        }
        groups = [preferred, others].filter { !$0.isEmpty }.map { build("", $0, level: 0) }
    }

    static func inOrder(_ a: Entry, _ b: Entry) -> Bool {
        if a.count != b.count { return a.count < b.count }
        if a.score != b.score { return a.score < b.score }
        return a.name < b.name
    }

    /// Chooses the node for the next instance and takes its share there; nil when none may take it.
    mutating func next(_ placer: inout Placer) -> Int? {
        for group in groups where !group.closed {
            var path: [Domain] = []
            if let node = choose(in: group, placer: placer, path: &path) {
                let leaf = path.last!
                leaf.heap!.popFirst()
                placer.take(demand, on: node)
                let count = nodeCounts[node, default: 0] + 1
                nodeCounts[node] = count
                for domain in path { domain.count += 1 }
                let updated = placer.nodes[node]
                leaf.heap!.push(Entry(
                    count: spreadsNodes ? count : 0, score: PlacementScores.total(updated, for: demand, scores: placer.scores),
                    name: updated.name, node: node))
                return node
            }
        }
        return nil
    }

    /// Descends from `domain` to the best node that may take one more instance; closes domains that cannot.
    private mutating func choose(in domain: Domain, placer: Placer, path: inout [Domain]) -> Int? {
        path.append(domain)
        defer { if domain.closed { path.removeLast() } }
        if domain.heap != nil { return chooseNode(in: domain, placer: placer) }
        while true {
            var best: Domain?
            var lowest = Int.max
            for child in domain.children {
                lowest = min(lowest, child.count)
                if !child.closed && (best == nil || child.count < best!.count) { best = child }
            }
            guard let best else {
                domain.closed = true
                return nil
            }
            if demand.spread.required && best.count + 1 - lowest > demand.spread.maxSkew {
                // Every open sibling has at least as many: none may take one without breaking the skew.
                skewBlocked = true
                domain.closed = true
                return nil
            }
            if let node = choose(in: best, placer: placer, path: &path) { return node }
        }
    }

    private mutating func chooseNode(in leaf: Domain, placer: Placer) -> Int? {
        while let top = leaf.heap!.first {
            let node = placer.nodes[top.node]
            if dynamicFilters.contains(where: { $0.reject(node, for: demand) != nil }) {
                leaf.heap!.popFirst()
                leaf.closedNodesMin = min(leaf.closedNodesMin, top.count)
                continue
            }
            if demand.spread.required && spreadsNodes && top.count + 1 - min(top.count, leaf.closedNodesMin) > demand.spread.maxSkew {
                skewBlocked = true
                leaf.closed = true
                return nil
            }
            return top.node
        }
        leaf.closed = true
        return nil
    }
}
