/// How a changed template rolls through an app's instances (docs/protocol.md, "Rollouts"). An instance is
/// available when it is Running and has been ready for `minReadySeconds`; a rollout replaces old instances in
/// ordinal order while no more than `maxUnavailable` of the app's instances, old or new, are unavailable.
public struct UpdateStrategy: Hashable, Sendable, Codable {
    /// How many of the app's instances may be unavailable at once during a rollout (at least 1).
    public var maxUnavailable: Int
    /// How long a new instance must stay ready before it counts as available.
    public var minReadySeconds: Int
    /// A rollout during which no new instance becomes available for this long has failed.
    public var progressDeadlineSeconds: Int
    /// A failed rollout returns the app to the last revision whose rollout succeeded (as a new revision).
    public var autoRevert: Bool
    /// The first this many instances are replaced, then the rollout pauses once they are available, until it
    /// is promoted (`PromoteRollout`, or `autoPromote`); 0: no canaries.
    public var canary: Int
    /// Canaries available (for minReadySeconds) promote the rollout by themselves.
    public var autoPromote: Bool

    public static let defaultProgressDeadlineSeconds = 600
    /// A new instance that restarted this many times during its rollout is crash-looping: the rollout failed.
    public static let crashLoopRestarts = 3

    public enum CodingKeys: String, CodingKey { case maxUnavailable, minReadySeconds, progressDeadlineSeconds, autoRevert, canary, autoPromote }

    public init(maxUnavailable: Int = 1, minReadySeconds: Int = 0,
                progressDeadlineSeconds: Int = UpdateStrategy.defaultProgressDeadlineSeconds, autoRevert: Bool = false,
                canary: Int = 0, autoPromote: Bool = false) {
        self.maxUnavailable = maxUnavailable
        self.minReadySeconds = minReadySeconds
        self.progressDeadlineSeconds = progressDeadlineSeconds
        self.autoRevert = autoRevert
        self.canary = canary
        self.autoPromote = autoPromote
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            maxUnavailable: try c.decode(Int.self, forKey: .maxUnavailable), minReadySeconds: try c.decode(Int.self, forKey: .minReadySeconds),
            progressDeadlineSeconds: try c.decode(Int.self, forKey: .progressDeadlineSeconds), autoRevert: try c.decode(Bool.self, forKey: .autoRevert),
            canary: try c.decodeIfPresent(Int.self, forKey: .canary) ?? 0, autoPromote: try c.decodeIfPresent(Bool.self, forKey: .autoPromote) ?? false)
    }

    func problems() -> [SpecProblem] {
        var problems: [SpecProblem] = []
        func check(_ ok: Bool, _ field: String, _ reason: String) {
            if !ok { problems.append(SpecProblem(field: "update.\(field)", reason: reason)) }
        }
        check((1...100_000).contains(maxUnavailable), "maxUnavailable", "\(maxUnavailable) is not between 1 and 100000")
        check((0...3600).contains(minReadySeconds), "minReadySeconds", "\(minReadySeconds) is not between 0 and 3600")
        check((10...86_400).contains(progressDeadlineSeconds), "progressDeadlineSeconds",
              "\(progressDeadlineSeconds) is not between 10 and 86400")
        check((0...100_000).contains(canary), "canary", "\(canary) is not between 0 and 100000")
        check(!autoPromote || canary > 0, "autoPromote", "needs canary (the number of instances replaced first)")
        check(progressDeadlineSeconds > minReadySeconds, "progressDeadlineSeconds",
              "\(progressDeadlineSeconds) must be more than minReadySeconds (\(minReadySeconds))")
        return problems
    }
}
