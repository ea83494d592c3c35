/// One preference of placement (kube-scheduler's score plugins): among the nodes that pass every filter, the
/// one with the lowest weighted sum of scores wins, after the preferred IDCs and the spread (`Placer`).
///
/// A score depends on the node and the demand alone, never on the other nodes: the placer keeps each leaf
/// domain's nodes in a heap by score and recomputes only the node it just placed on, so a decision stays
/// O(log nodes). (kube-scheduler normalises scores across nodes; that would cost a rescan per decision.)
public protocol PlacementScore: Sendable {
    /// Lower is better; `node` as it is before one more instance of `demand` goes there.
    func score(_ node: NodeCandidate, for demand: PlacementDemand) -> Double

    /// How much this score counts in the sum.
    var weight: Double { get }
}

/// Balance: the node that would be least requested afterwards (the mean of its CPU and memory fractions).
public struct LeastRequested: PlacementScore {
    public let weight: Double
    public init(weight: Double = 1) { self.weight = weight }
    public func score(_ node: NodeCandidate, for demand: PlacementDemand) -> Double {
        node.requestedFraction(adding: demand.request)
    }
}

public enum PlacementScores {
    /// Every score the scheduler uses.
    public static let all: [any PlacementScore] = [LeastRequested()]

    /// The weighted sum of `scores` for one more instance of `demand` on `node`.
    public static func total(_ node: NodeCandidate, for demand: PlacementDemand, scores: [any PlacementScore] = all) -> Double {
        scores.reduce(0) { $0 + $1.weight * $1.score(node, for: demand) }
    }
}
