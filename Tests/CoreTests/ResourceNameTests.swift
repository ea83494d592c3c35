import Core
import Manifest
import Testing

/// Resources are named quantities: Core's arithmetic, checks, fit filter, balance score and the manifest go
/// over `ResourceName.allCases`, so a new resource is a field and a case (and its plumbing outside Core).
@Suite struct ResourceNameTests {
    @Test func everyFieldOfResourcesHasAName() {
        #expect(Mirror(reflecting: Resources()).children.count == ResourceName.allCases.count,
                "Resources has a field without a ResourceName case (or the other way round)")
        for (index, name) in ResourceName.allCases.enumerated() {
            var resources = Resources()
            resources[name] = Int64(index + 7)
            #expect(ResourceName.allCases.allSatisfy { resources[$0] == ($0 == name ? Int64(index + 7) : 0) }, "\(name) is not its own field")
        }
    }

    @Test func eachNameIsCheckedFilteredAndWrittenLikeTheOthers() throws {
        for name in ResourceName.allCases {
            var request = Resources(), limit = Resources()
            request[name] = 2048
            limit[name] = 1024
            #expect(ResourceRequirements(request: request, limit: limit).problems().map(\.field) == ["resources.limit.\(name.rawValue)"])
            #expect(name.parse(name.format(123_456_000)) == 123_456_000)

            var node = NodeCandidate(name: "n", capacity: Resources(cpuMillis: 4000, memoryBytes: 8 << 30))
            node.requested[name] = node.capacity[name]
            let demand = PlacementDemand(app: "a", request: Resources(cpuMillis: 1, memoryBytes: 1))
            #expect(PlacementFilters.reject(node, for: demand) == "insufficient \(name.rawValue)")

            let manifest = "name: a\nimage: host\nresources:\n  request: {\(name.rawValue): \(name.format(request[name]))}\n"
            #expect(try AppManifest.parse(manifest).first?.resources.request == request)
        }
    }
}
