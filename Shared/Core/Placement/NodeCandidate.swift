/// The scheduler's view of one node while it places instances: where it is, what it has, what is taken.
public struct NodeCandidate: Hashable, Sendable {
    public var name: String
    public var region: String
    public var idc: String
    public var isp: String
    public var labels: [String: String]
    public var capacity: Resources
    /// The sum of the requests of the instances bound to this node.
    public var requested: Resources
    public var health: NodeHealth
    public var cordoned: Bool
    /// Sizes of the node's free healthy SSDs, in bytes.
    public var freeSSDs: [Int64]
    /// Host ports still free in the node's range.
    public var freeHostPorts: Int

    public init(
        name: String, region: String = "", idc: String = "", isp: String = "", labels: [String: String] = [:],
        capacity: Resources, requested: Resources = .zero, health: NodeHealth = .ready, cordoned: Bool = false,
        freeSSDs: [Int64] = [], freeHostPorts: Int = HostPortRange.default.count
    ) {
        self.name = name
        self.region = region
        self.idc = idc
        self.isp = isp
        self.labels = labels
        self.capacity = capacity
        self.requested = requested
        self.health = health
        self.cordoned = cordoned
        self.freeSSDs = freeSSDs.sorted()
        self.freeHostPorts = freeHostPorts
    }

    /// A label's value; the topology keys `node`, `region`, `idc` and `isp` come from the node's own fields.
    public func value(forKey key: String) -> String? {
        switch key {
        case "node": name
        case "region": region
        case "idc": idc
        case "isp": isp
        default: labels[key]
        }
    }

    /// Capacity not yet promised to requests.
    public var unrequested: Resources { capacity - requested }

    /// How full the node would be with `extra` more requested: the mean of its fractions of each resource.
    func requestedFraction(adding extra: Resources) -> Double {
        func fraction(_ used: Int64, _ total: Int64) -> Double { total > 0 ? Double(used) / Double(total) : 1 }
        let after = requested + extra
        var sum = 0.0
        for name in ResourceName.every { sum += fraction(after[name], capacity[name]) }
        return sum / Double(ResourceName.every.count)
    }

    /// The smallest free SSDs that satisfy `ssd`, or nil when too few are big enough (best fit, as the Allocator does).
    func bestSSDs(for ssd: SSDRequest) -> [Int64]? {
        let fitting = freeSSDs.filter { $0 >= ssd.minBytes }
        return fitting.count >= ssd.count ? Array(fitting.prefix(ssd.count)) : nil
    }

    /// Takes one instance's share of this node.
    mutating func take(_ demand: PlacementDemand) {
        requested += demand.request
        freeHostPorts -= demand.hostPorts
        if let ssd = demand.ssd, let chosen = bestSSDs(for: ssd) {
            for size in chosen {
                if let index = freeSSDs.firstIndex(of: size) { freeSSDs.remove(at: index) }
            }
        }
    }
}

/// What placing one instance of an app needs, taken from its spec.
public struct PlacementDemand: Hashable, Sendable {
    public var app: String
    public var request: Resources
    public var selector: LabelSelector
    public var requiredIDCs: Set<String>
    public var preferredIDCs: Set<String>
    public var spread: SpreadPolicy
    public var ssd: SSDRequest?
    public var hostPorts: Int

    public init(
        app: String, request: Resources, selector: LabelSelector = .init(), requiredIDCs: Set<String> = [],
        preferredIDCs: Set<String> = [], spread: SpreadPolicy = .init(), ssd: SSDRequest? = nil, hostPorts: Int = 0
    ) {
        self.app = app
        self.request = request
        self.selector = selector
        self.requiredIDCs = requiredIDCs
        self.preferredIDCs = preferredIDCs
        self.spread = spread
        self.ssd = ssd
        self.hostPorts = hostPorts
    }

    public init(spec: AppSpec) {
        self.init(
            app: spec.name, request: spec.resources.request, selector: spec.nodeSelector,
            requiredIDCs: Set(spec.idcAffinity.required), preferredIDCs: Set(spec.idcAffinity.preferred),
            spread: spec.spread, ssd: spec.ssd, hostPorts: spec.hostPortCount)
    }
}
