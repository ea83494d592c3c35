import Core
import Testing

@Suite struct PlacementFilterTests {
    static let gi: Int64 = 1 << 30

    static func node(
        cpu: Int64 = 4000, memory: Int64 = 8 * gi, requested: Resources = .zero, health: NodeHealth = .ready,
        cordoned: Bool = false, idc: String = "hz-a", labels: [String: String] = [:], ssds: [Int64] = [], ports: Int = 100
    ) -> NodeCandidate {
        NodeCandidate(
            name: "n1", region: "cn-east", idc: idc, isp: "ct", labels: labels,
            capacity: Resources(cpuMillis: cpu, memoryBytes: memory), requested: requested, health: health,
            cordoned: cordoned, freeSSDs: ssds, freeHostPorts: ports)
    }

    static func demand(
        cpu: Int64 = 1000, memory: Int64 = gi, selector: LabelSelector = .init(), idcs: Set<String> = [],
        ssd: SSDRequest? = nil, ports: Int = 0
    ) -> PlacementDemand {
        PlacementDemand(
            app: "web", request: Resources(cpuMillis: cpu, memoryBytes: memory), selector: selector,
            requiredIDCs: idcs, ssd: ssd, hostPorts: ports)
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let filter: any PlacementFilter
        let node: NodeCandidate
        let demand: PlacementDemand
        let reason: String?
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "ready passes", filter: NodeIsReady(), node: node(), demand: demand(), reason: nil),
        Case(name: "suspect rejected", filter: NodeIsReady(), node: node(health: .suspect), demand: demand(), reason: "node suspect"),
        Case(name: "broken rejected", filter: NodeIsReady(), node: node(health: .broken), demand: demand(), reason: "node broken"),
        Case(name: "cordoned rejected", filter: NodeIsNotCordoned(), node: node(cordoned: true), demand: demand(), reason: "node cordoned"),
        Case(name: "uncordoned passes", filter: NodeIsNotCordoned(), node: node(), demand: demand(), reason: nil),
        Case(name: "empty selector matches", filter: SelectorMatches(), node: node(), demand: demand(), reason: nil),
        Case(name: "equality selector", filter: SelectorMatches(), node: node(labels: ["disk": "ssd"]),
             demand: demand(selector: LabelSelector(matchLabels: ["disk": "ssd"])), reason: nil),
        Case(name: "equality selector mismatch", filter: SelectorMatches(), node: node(labels: ["disk": "hdd"]),
             demand: demand(selector: LabelSelector(matchLabels: ["disk": "ssd"])), reason: "selector mismatch"),
        Case(name: "idc is a selector key", filter: SelectorMatches(), node: node(idc: "hz-b"),
             demand: demand(selector: LabelSelector([.init("idc", .in, ["hz-a", "hz-b"])])), reason: nil),
        Case(name: "notIn excludes", filter: SelectorMatches(), node: node(labels: ["tier": "batch"]),
             demand: demand(selector: LabelSelector([.init("tier", .notIn, ["batch"])])), reason: "selector mismatch"),
        Case(name: "notIn admits a node without the label", filter: SelectorMatches(), node: node(),
             demand: demand(selector: LabelSelector([.init("tier", .notIn, ["batch"])])), reason: nil),
        Case(name: "exists needs the label", filter: SelectorMatches(), node: node(),
             demand: demand(selector: LabelSelector([.init("gpu", .exists)])), reason: "selector mismatch"),
        Case(name: "doesNotExist", filter: SelectorMatches(), node: node(labels: ["spot": "1"]),
             demand: demand(selector: LabelSelector([.init("spot", .doesNotExist)])), reason: "selector mismatch"),
        Case(name: "required IDC", filter: InRequiredIDC(), node: node(idc: "hz-b"), demand: demand(idcs: ["hz-a"]),
             reason: "IDC affinity mismatch"),
        Case(name: "no required IDC", filter: InRequiredIDC(), node: node(idc: "hz-b"), demand: demand(), reason: nil),
        Case(name: "fits exactly", filter: FitsRequests(),
             node: node(requested: Resources(cpuMillis: 3000, memoryBytes: 7 * gi)), demand: demand(), reason: nil),
        Case(name: "cpu short by 1m", filter: FitsRequests(),
             node: node(requested: Resources(cpuMillis: 3001, memoryBytes: 0)), demand: demand(), reason: "insufficient cpu"),
        Case(name: "memory short", filter: FitsRequests(),
             node: node(requested: Resources(cpuMillis: 0, memoryBytes: 7 * gi + 1)), demand: demand(), reason: "insufficient memory"),
        Case(name: "request 0 fits a full node", filter: FitsRequests(),
             node: node(requested: Resources(cpuMillis: 4000, memoryBytes: 8 * gi)), demand: demand(cpu: 0, memory: 0), reason: nil),
        Case(name: "no SSD asked", filter: SSDsFree(), node: node(), demand: demand(), reason: nil),
        Case(name: "SSD big enough", filter: SSDsFree(), node: node(ssds: [100, 500]),
             demand: demand(ssd: SSDRequest(count: 1, minBytes: 400)), reason: nil),
        Case(name: "SSDs too small", filter: SSDsFree(), node: node(ssds: [100, 300]),
             demand: demand(ssd: SSDRequest(count: 1, minBytes: 400)), reason: "insufficient SSDs"),
        Case(name: "too few SSDs", filter: SSDsFree(), node: node(ssds: [500]),
             demand: demand(ssd: SSDRequest(count: 2, minBytes: 400)), reason: "insufficient SSDs"),
        Case(name: "host ports enough", filter: HostPortsFree(), node: node(ports: 2), demand: demand(ports: 2), reason: nil),
        Case(name: "host ports short", filter: HostPortsFree(), node: node(ports: 1), demand: demand(ports: 2),
             reason: "insufficient host ports"),
    ]

    @Test(arguments: cases)
    func rule(_ c: Case) {
        #expect(c.filter.reject(c.node, for: c.demand) == c.reason)
    }

    @Test func firstFailingFilterIsReported() {
        let broken = Self.node(requested: Resources(cpuMillis: 4000, memoryBytes: 0), health: .broken)
        #expect(PlacementFilters.reject(broken, for: Self.demand()) == "node broken")
        let full = Self.node(requested: Resources(cpuMillis: 4000, memoryBytes: 0))
        #expect(PlacementFilters.reject(full, for: Self.demand()) == "insufficient cpu")
    }
}
