import Core
import Testing

/// A rule of placement is one type: a `PlacementFilter` (yes/no, with a reason) or a `PlacementScore` (a
/// preference among the nodes that pass). Both plug into the placer without touching it.
@Suite struct PlacementSeamTests {
    /// Prefers nodes labelled `tier=gold`, more than it cares about balance.
    struct PrefersGold: PlacementScore {
        var weight: Double { 10 }
        func score(_ node: NodeCandidate, for demand: PlacementDemand) -> Double { node.labels["tier"] == "gold" ? 0 : 1 }
    }

    /// Keeps instances off nodes under maintenance.
    struct NotInMaintenance: PlacementFilter {
        var changesWithPlacement: Bool { false }
        func reject(_ node: NodeCandidate, for demand: PlacementDemand) -> String? {
            node.labels["maintenance"] == "true" ? "node in maintenance" : nil
        }
    }

    static func nodes() -> [NodeCandidate] {
        let capacity = Resources(cpuMillis: 8000, memoryBytes: 16 << 30)
        var gold = NodeCandidate(name: "n0", labels: ["tier": "gold"], capacity: capacity)
        gold.requested = Resources(cpuMillis: 6000, memoryBytes: 0)
        return [gold, NodeCandidate(name: "n1", capacity: capacity),
                NodeCandidate(name: "n2", labels: ["maintenance": "true"], capacity: capacity)]
    }

    static let demand = PlacementDemand(app: "web", request: Resources(cpuMillis: 500, memoryBytes: 1 << 30),
                                        spread: SpreadPolicy(keys: ["idc"]))

    @Test func aScoreChangesTheChoiceAndBalanceStillBreaksTies() {
        var balanced = Placer(nodes: Self.nodes())
        #expect(balanced.place(Self.demand, count: 1).nodes == ["n1"], "the least requested node, by default")
        var gold = Placer(nodes: Self.nodes(), scores: PlacementScores.all + [PrefersGold()])
        #expect(gold.place(Self.demand, count: 2).nodes == ["n0", "n0"])
    }

    @Test func aFilterRejectsWithItsReason() {
        var placer = Placer(nodes: Self.nodes(), filters: PlacementFilters.all + [NotInMaintenance()])
        let outcome = placer.place(PlacementDemand(app: "big", request: Resources(cpuMillis: 4000, memoryBytes: 1 << 30)), count: 3)
        #expect(outcome.nodes == ["n1", "n1"])
        #expect(outcome.reason?.description == "0/3 nodes available: 2 insufficient cpu, 1 node in maintenance")
    }
}
