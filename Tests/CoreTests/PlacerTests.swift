import Core
import Testing

@Suite struct PlacerTests {
    static let gi: Int64 = 1 << 30

    static func cluster(_ spec: [(idc: String, nodes: Int)], cpu: Int64 = 8000, memory: Int64 = 16 * gi) -> [NodeCandidate] {
        spec.flatMap { idc, count in
            (0..<count).map { NodeCandidate(name: "\(idc)-n\($0)", idc: idc, capacity: Resources(cpuMillis: cpu, memoryBytes: memory)) }
        }
    }

    static func demand(cpu: Int64 = 1000, memory: Int64 = gi, spread: SpreadPolicy = .init()) -> PlacementDemand {
        PlacementDemand(app: "web", request: Resources(cpuMillis: cpu, memoryBytes: memory), spread: spread)
    }

    static func counts(_ names: [String], by key: (String) -> String) -> [String: Int] {
        names.reduce(into: [:]) { $0[key($1), default: 0] += 1 }
    }

    @Test func spreadsOverIDCsFirstThenNodesWithin() {
        // hz-a has 1 node, hz-b 3: IDCs get equal shares, nodes within hz-b share theirs.
        var placer = Placer(nodes: Self.cluster([("hz-a", 1), ("hz-b", 3)]))
        let outcome = placer.place(Self.demand(), count: 6)
        #expect(outcome.reason == nil)
        #expect(Self.counts(outcome.nodes) { String($0.prefix(4)) } == ["hz-a": 3, "hz-b": 3])
        #expect(Self.counts(outcome.nodes) { $0 } == ["hz-a-n0": 3, "hz-b-n0": 1, "hz-b-n1": 1, "hz-b-n2": 1])
    }

    @Test func sameClusterSameAnswer() {
        var first = Placer(nodes: Self.cluster([("a", 3), ("b", 3)]))
        var second = Placer(nodes: Self.cluster([("b", 3), ("a", 3)]))
        #expect(first.place(Self.demand(), count: 9).nodes == second.place(Self.demand(), count: 9).nodes)
    }

    @Test func balancePrefersTheLeastRequestedNode() {
        var nodes = Self.cluster([("a", 3)])
        nodes[0].requested = Resources(cpuMillis: 4000, memoryBytes: 0)
        nodes[1].requested = Resources(cpuMillis: 1000, memoryBytes: 0)
        var placer = Placer(nodes: nodes)
        // Spread over nodes comes first; with spread only over IDCs, balance decides.
        #expect(placer.place(Self.demand(spread: SpreadPolicy(keys: ["idc"])), count: 3).nodes == ["a-n2", "a-n1", "a-n2"])
    }

    @Test func existingInstancesWeighInTheSpread() {
        var placer = Placer(nodes: Self.cluster([("a", 2), ("b", 2)]))
        let outcome = placer.place(Self.demand(), count: 2, existing: ["a-n0": 1, "a-n1": 1])
        #expect(outcome.nodes == ["b-n0", "b-n1"])
    }

    @Test func requestsNeverOvercommitButLimitsMay() {
        // A 4-core node takes four instances that request 1 core, whatever their limits; the fifth waits.
        var placer = Placer(nodes: Self.cluster([("a", 1)], cpu: 4000))
        let outcome = placer.place(Self.demand(cpu: 1000), count: 5)
        #expect(outcome.nodes.count == 4)
        #expect(outcome.reason?.description == "0/1 nodes available: 1 insufficient cpu")
        #expect(placer.node(named: "a-n0")?.requested.cpuMillis == 4000)
    }

    @Test func pendingReasonCountsEachNodesFirstFailure() {
        var nodes = Self.cluster([("a", 3)], cpu: 500)
        nodes += [NodeCandidate(name: "gpu-1", idc: "a", labels: ["gpu": "1"], capacity: Resources(cpuMillis: 8000, memoryBytes: 8 * Self.gi)),
                  NodeCandidate(name: "gpu-2", idc: "a", labels: ["gpu": "1"], capacity: Resources(cpuMillis: 8000, memoryBytes: 8 * Self.gi))]
        var demand = Self.demand()
        demand.selector = LabelSelector([.init("gpu", .doesNotExist)])
        var placer = Placer(nodes: nodes)
        let outcome = placer.place(demand, count: 1)
        #expect(outcome.nodes.isEmpty)
        #expect(outcome.reason?.description == "0/5 nodes available: 3 insufficient cpu, 2 selector mismatch")
    }

    @Test func noNodesAtAll() {
        var placer = Placer(nodes: [])
        #expect(placer.place(Self.demand(), count: 1).reason?.description == "0/0 nodes available: no node is registered")
    }

    @Test func requiredSpreadLeavesInstancesPendingRatherThanSkew() {
        // hz-a can hold one instance, hz-b many: with max skew 1 only three fit (1 + 2).
        var nodes = Self.cluster([("hz-a", 1), ("hz-b", 2)])
        nodes[0].capacity = Resources(cpuMillis: 1000, memoryBytes: 16 * Self.gi)
        var placer = Placer(nodes: nodes)
        let outcome = placer.place(Self.demand(spread: SpreadPolicy(maxSkew: 1, required: true)), count: 5)
        #expect(Self.counts(outcome.nodes) { String($0.prefix(4)) } == ["hz-a": 1, "hz-b": 2])
        #expect(outcome.reason?.description == "0/3 nodes available: 2 would break the required spread (max skew 1), 1 insufficient cpu")

        // Preferred spread places all five, as evenly as capacity allows.
        var relaxed = Placer(nodes: nodes)
        #expect(relaxed.place(Self.demand(), count: 5).nodes.count == 5)
    }

    @Test func preferredIDCsFillFirst() {
        var placer = Placer(nodes: Self.cluster([("a", 2), ("b", 2)], cpu: 2000))
        var demand = Self.demand()
        demand.preferredIDCs = ["b"]
        let outcome = placer.place(demand, count: 6)
        #expect(Array(outcome.nodes.prefix(4)).allSatisfy { $0.hasPrefix("b-") })
        #expect(Array(outcome.nodes.suffix(2)).allSatisfy { $0.hasPrefix("a-") })
    }

    @Test func ssdsAndHostPortsAreUsedUp() {
        var nodes = Self.cluster([("a", 2)])
        nodes[0].freeSSDs = [100, 200]
        nodes[1].freeSSDs = [300]
        nodes[0].freeHostPorts = 10
        nodes[1].freeHostPorts = 10
        var demand = Self.demand()
        demand.ssd = SSDRequest(count: 1, minBytes: 150)
        demand.hostPorts = 2
        var placer = Placer(nodes: nodes)
        let outcome = placer.place(demand, count: 3)
        #expect(outcome.nodes.sorted() == ["a-n0", "a-n1"])
        #expect(outcome.reason?.description == "0/2 nodes available: 2 insufficient SSDs")
        #expect(placer.node(named: "a-n0")?.freeSSDs == [100])
        #expect(placer.node(named: "a-n0")?.freeHostPorts == 8)
    }

    /// On many random clusters with room to spare, the skew is at most 1 between IDCs and between the nodes of each IDC.
    @Test(arguments: 0..<50)
    func spreadSkewAtMostOne(seed: Int) {
        var rng = SeededGenerator(seed: UInt64(seed))
        let idcs = (0..<Int.random(in: 1...5, using: &rng)).map { (idc: "idc\($0)", nodes: Int.random(in: 1...40, using: &rng)) }
        let total = idcs.reduce(0) { $0 + $1.nodes }
        let count = Int.random(in: 1...(total * 6), using: &rng)
        var placer = Placer(nodes: Self.cluster(idcs, cpu: 1_000_000, memory: 1 << 50))
        let outcome = placer.place(Self.demand(), count: count)
        #expect(outcome.nodes.count == count)
        let byIDC = Self.counts(outcome.nodes) { String($0.split(separator: "-").first!) }
        let idcCounts = idcs.map { byIDC[$0.idc, default: 0] }
        #expect(idcCounts.max()! - idcCounts.min()! <= 1, "IDC counts \(idcCounts)")
        let byNode = Self.counts(outcome.nodes) { $0 }
        for idc in idcs {
            let nodeCounts = (0..<idc.nodes).map { byNode["\(idc.idc)-n\($0)", default: 0] }
            #expect(nodeCounts.max()! - nodeCounts.min()! <= 1, "\(idc.idc) node counts \(nodeCounts)")
        }
    }

    /// The indexed placer gives exactly the answer of a brute-force scan over every node, decision by decision,
    /// on random clusters with tight capacity, selectors, cordons, unhealthy nodes, SSDs, ports and spread rules.
    @Test(arguments: 0..<200)
    func matchesBruteForce(seed: Int) {
        var rng = SeededGenerator(seed: UInt64(seed) &+ 1000)
        var nodes: [NodeCandidate] = []
        for index in 0..<Int.random(in: 1...50, using: &rng) {
            var node = NodeCandidate(
                name: "n\(String(index + 100))", region: ["r1", "r2"].randomElement(using: &rng)!,
                idc: ["a", "b", "c", "d"].randomElement(using: &rng)!,
                labels: Bool.random(using: &rng) ? ["disk": ["ssd", "hdd"].randomElement(using: &rng)!] : [:],
                capacity: Resources(cpuMillis: Int64.random(in: 0...16, using: &rng) * 500, memoryBytes: Int64.random(in: 1...32, using: &rng) * Self.gi),
                freeSSDs: (0..<Int.random(in: 0...3, using: &rng)).map { _ in Int64.random(in: 1...4, using: &rng) * 100 },
                freeHostPorts: Int.random(in: 0...8, using: &rng))
            node.requested = Resources(cpuMillis: Int64.random(in: 0...4, using: &rng) * 250, memoryBytes: Int64.random(in: 0...4, using: &rng) * Self.gi)
            node.health = Int.random(in: 0..<10, using: &rng) == 0 ? .suspect : .ready
            node.cordoned = Int.random(in: 0..<10, using: &rng) == 0
            nodes.append(node)
        }
        let keys = [["idc", "node"], ["node"], ["idc"], [], ["region", "idc", "node"], ["disk", "node"]].randomElement(using: &rng)!
        var demand = PlacementDemand(
            app: "web", request: Resources(cpuMillis: Int64.random(in: 0...4, using: &rng) * 250, memoryBytes: Int64.random(in: 0...2, using: &rng) * Self.gi),
            spread: SpreadPolicy(keys: keys, maxSkew: Int.random(in: 1...2, using: &rng), required: Bool.random(using: &rng)))
        if Bool.random(using: &rng) { demand.selector = LabelSelector([.init("disk", .notIn, ["hdd"])]) }
        if Int.random(in: 0..<3, using: &rng) == 0 { demand.preferredIDCs = ["b"] }
        if Int.random(in: 0..<4, using: &rng) == 0 { demand.requiredIDCs = ["a", "c"] }
        if Int.random(in: 0..<3, using: &rng) == 0 { demand.ssd = SSDRequest(count: Int.random(in: 1...2, using: &rng), minBytes: 150) }
        demand.hostPorts = Int.random(in: 0...2, using: &rng)
        let existing = Dictionary(nodes.filter { _ in Int.random(in: 0..<4, using: &rng) == 0 }.map { ($0.name, Int.random(in: 1...3, using: &rng)) }, uniquingKeysWith: +)
        let count = Int.random(in: 1...150, using: &rng)

        var placer = Placer(nodes: nodes)
        let outcome = placer.place(demand, count: count, existing: existing)
        var reference = BruteForcePlacer(nodes: nodes, demand: demand, existing: existing)
        let expected = reference.place(count: count)
        #expect(outcome.nodes == expected, "seed \(seed), keys \(keys)")
        #expect((outcome.reason == nil) == (expected.count == count))
        for node in placer.nodes { #expect(node.requested.fits(in: node.capacity) || nodes.first { $0.name == node.name }!.requested == node.requested) }
    }
}

/// The placement rules written the slow, obvious way: every decision looks at every node.
struct BruteForcePlacer {
    var nodes: [NodeCandidate]
    let demand: PlacementDemand
    var counts: [String: Int]
    let eligible: Set<String>

    init(nodes: [NodeCandidate], demand: PlacementDemand, existing: [String: Int]) {
        self.nodes = nodes
        self.demand = demand
        let statics: [any PlacementFilter] = [NodeIsReady(), NodeIsNotCordoned(), SelectorMatches(), InRequiredIDC()]
        let eligible = Set(nodes.filter { node in statics.allSatisfy { $0.reject(node, for: demand) == nil } }.map(\.name))
        self.eligible = eligible
        counts = existing.filter { eligible.contains($0.key) }
    }

    mutating func place(count: Int) -> [String] {
        var chosen: [String] = []
        while chosen.count < count, let name = next() {
            let index = nodes.firstIndex { $0.name == name }!
            nodes[index].requested += demand.request
            nodes[index].freeHostPorts -= demand.hostPorts
            if let ssd = demand.ssd {
                for size in nodes[index].freeSSDs.filter({ $0 >= ssd.minBytes }).sorted().prefix(ssd.count) {
                    nodes[index].freeSSDs.remove(at: nodes[index].freeSSDs.firstIndex(of: size)!)
                }
            }
            counts[name, default: 0] += 1
            chosen.append(name)
        }
        return chosen
    }

    func next() -> String? {
        let candidates = nodes.filter { eligible.contains($0.name) }
        let preferred = candidates.filter { demand.preferredIDCs.contains($0.idc) }
        let others = candidates.filter { !demand.preferredIDCs.contains($0.idc) }
        for group in [preferred, others] where !group.isEmpty {
            if let name = choose(in: group, level: 0) { return name }
        }
        return nil
    }

    var spreadsNodes: Bool { demand.spread.keys.last == "node" }
    var levels: [String] { spreadsNodes ? Array(demand.spread.keys.dropLast()) : demand.spread.keys }

    func count(of group: [NodeCandidate]) -> Int { group.reduce(0) { $0 + counts[$1.name, default: 0] } }

    func fits(_ node: NodeCandidate) -> Bool { PlacementFilters.reject(node, for: demand) == nil }

    func choose(in scope: [NodeCandidate], level: Int) -> String? {
        if level == levels.count {
            let lowest = scope.map { counts[$0.name, default: 0] }.min() ?? 0
            func fraction(_ node: NodeCandidate) -> Double {
                func f(_ used: Int64, _ total: Int64) -> Double { total > 0 ? Double(used) / Double(total) : 1 }
                let after = node.requested + demand.request
                return (f(after.cpuMillis, node.capacity.cpuMillis) + f(after.memoryBytes, node.capacity.memoryBytes)) / 2
            }
            let best = scope.filter(fits).min { a, b in
                let ca = spreadsNodes ? counts[a.name, default: 0] : 0
                let cb = spreadsNodes ? counts[b.name, default: 0] : 0
                return (ca, fraction(a), a.name) < (cb, fraction(b), b.name)
            }
            guard let best else { return nil }
            if demand.spread.required && spreadsNodes && counts[best.name, default: 0] + 1 - lowest > demand.spread.maxSkew { return nil }
            return best.name
        }
        let domains = Dictionary(grouping: scope) { $0.value(forKey: levels[level]) ?? "" }
        let lowest = domains.values.map(count).min() ?? 0
        let ordered = domains.sorted { (count(of: $0.value), $0.key) < (count(of: $1.value), $1.key) }
        for (_, members) in ordered where members.contains(where: fits) {
            if demand.spread.required && count(of: members) + 1 - lowest > demand.spread.maxSkew { return nil }
            if let name = choose(in: members, level: level + 1) { return name }
        }
        return nil
    }
}
