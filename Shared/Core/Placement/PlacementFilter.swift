/// One yes/no rule of placement (kube-scheduler's filter plugins): a node passes, or is rejected with a short
/// reason that `sigmactl describe instance` counts ("3 insufficient cpu").
public protocol PlacementFilter: Sendable {
    /// nil when `node` may take one more instance of `demand`; otherwise why not.
    func reject(_ node: NodeCandidate, for demand: PlacementDemand) -> String?

    /// Whether the answer can change while a pass places instances (capacity, ports, SSDs are used up;
    /// health, cordons and labels are not touched by placing).
    var changesWithPlacement: Bool { get }
}

/// The node is Ready: Suspect and Broken nodes get no new instances.
public struct NodeIsReady: PlacementFilter {
    public init() {}
    public var changesWithPlacement: Bool { false }
    public func reject(_ node: NodeCandidate, for demand: PlacementDemand) -> String? {
        node.health == .ready ? nil : "node \(node.health.rawValue.lowercased())"
    }
}

/// The operator has not cordoned (or drained) the node.
public struct NodeIsNotCordoned: PlacementFilter {
    public init() {}
    public var changesWithPlacement: Bool { false }
    public func reject(_ node: NodeCandidate, for demand: PlacementDemand) -> String? {
        node.cordoned ? "node cordoned" : nil
    }
}

/// The node's labels satisfy the app's node selector.
public struct SelectorMatches: PlacementFilter {
    public init() {}
    public var changesWithPlacement: Bool { false }
    public func reject(_ node: NodeCandidate, for demand: PlacementDemand) -> String? {
        demand.selector.matches { node.value(forKey: $0) } ? nil : "selector mismatch"
    }
}

/// The node is in one of the app's required IDCs (when it names any).
public struct InRequiredIDC: PlacementFilter {
    public init() {}
    public var changesWithPlacement: Bool { false }
    public func reject(_ node: NodeCandidate, for demand: PlacementDemand) -> String? {
        demand.requiredIDCs.isEmpty || demand.requiredIDCs.contains(node.idc) ? nil : "IDC affinity mismatch"
    }
}

/// Capacity minus the requests already bound there covers the request. Limits may overcommit; requests never.
public struct FitsRequests: PlacementFilter {
    public init() {}
    public var changesWithPlacement: Bool { true }
    public func reject(_ node: NodeCandidate, for demand: PlacementDemand) -> String? {
        let free = node.unrequested
        for name in ResourceName.every where demand.request[name] > free[name] { return "insufficient \(name.rawValue)" }
        return nil
    }
}

/// Enough free healthy SSDs of at least the asked size.
public struct SSDsFree: PlacementFilter {
    public init() {}
    public var changesWithPlacement: Bool { true }
    public func reject(_ node: NodeCandidate, for demand: PlacementDemand) -> String? {
        guard let ssd = demand.ssd else { return nil }
        return node.bestSSDs(for: ssd) == nil ? "insufficient SSDs" : nil
    }
}

/// Enough free host ports in the node's range (host network mode).
public struct HostPortsFree: PlacementFilter {
    public init() {}
    public var changesWithPlacement: Bool { true }
    public func reject(_ node: NodeCandidate, for demand: PlacementDemand) -> String? {
        node.freeHostPorts >= demand.hostPorts ? nil : "insufficient host ports"
    }
}

public enum PlacementFilters {
    /// Every filter, in the order their reasons are reported.
    public static let all: [any PlacementFilter] = [
        NodeIsReady(), NodeIsNotCordoned(), SelectorMatches(), InRequiredIDC(), FitsRequests(), SSDsFree(), HostPortsFree(),
    ]

    /// The first reason `node` cannot take `demand`, or nil.
    public static func reject(_ node: NodeCandidate, for demand: PlacementDemand, filters: [any PlacementFilter] = all) -> String? {
        for filter in filters {
            if let reason = filter.reject(node, for: demand) { return reason }
        }
        return nil
    }
}
