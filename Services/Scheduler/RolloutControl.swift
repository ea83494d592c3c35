import Protocol
import RPC
import Store

/// An operator's hand on an app's rollout (docs/protocol.md, "Rollouts"): pause it, resume it, promote it
/// past its canaries. Each answers the rollout as it is then.
extension Apps {
    func pauseRollout(_ name: String, by requester: String) async throws -> Sigma_V1_RolloutResponse {
        _ = try await currentSpec(name)
        try await store.transaction(isolation: .readCommitted) { tx in
            guard let id = try await RolloutsTable.progressingID(tx, app: name),
                  try await RolloutsTable.pause(tx, id: id, reason: "paused by \(requester)") else {
                throw RPCError.failedPrecondition("app \(name) has no rollout in progress")
            }
            try await Events.record(tx, .app, name, "RolloutPaused", "by \(requester)")
        }
        return try await newestRollout(name)
    }

    /// Every instance gets a new generation with the same spec: a new revision (change cause "restart")
    /// whose rollout replaces them all, under the app's strategy (one rollout under way is superseded).
    func restartRollout(_ name: String, by requester: String) async throws -> Sigma_V1_RolloutResponse {
        try await store.transaction(isolation: .serializable) { tx in
            let rows = try await tx.query("SELECT spec::text AS spec, revision FROM apps WHERE name = $1 AND NOT deleted FOR UPDATE", name)
            guard let row = rows.first else { throw RPCError.notFound("no app \(name)") }
            let spec = try Self.decode(try row.decode(String.self, "spec"))
            guard spec.replicas > 0 else { throw RPCError.failedPrecondition("app \(name) has no instances to restart (replicas: 0)") }
            let from = try row.decode(Int64.self, "revision")
            try await writeRevision(tx, spec, json: try Self.encode(spec), revision: from + 1, cause: "restart", by: requester)
            try await RolloutsTable.start(tx, app: name, from: from, to: from + 1, cause: "restart", by: requester, strategy: spec.rollout,
                                          restart: true)
            try await Events.record(tx, .app, name, "RolloutStarted",
                                    "revision \(from) → \(from + 1): restart of every instance, at most \(spec.rollout.maxUnavailable) unavailable")
            try await Placement.wake(tx, because: name)
        }
        logger.info("app restarted", metadata: ["app": "\(name)"])
        return try await newestRollout(name)
    }

    /// A Paused rollout goes on; one paused after its canaries pauses again at once (promote it instead).
    func resumeRollout(_ name: String, by requester: String) async throws -> Sigma_V1_RolloutResponse {
        try await proceed(name, promote: false, by: requester, event: "RolloutResumed", refusal: "has no paused rollout")
    }

    /// The rollout replaces the rest of the instances too (it was paused after its canaries, or has canaries
    /// still becoming available).
    func promoteRollout(_ name: String, by requester: String) async throws -> Sigma_V1_RolloutResponse {
        try await proceed(name, promote: true, by: requester, event: "RolloutPromoted", refusal: "has no rollout to promote")
    }

    private func proceed(_ name: String, promote: Bool, by requester: String, event: String, refusal: String) async throws
        -> Sigma_V1_RolloutResponse
    {
        _ = try await currentSpec(name)
        try await store.transaction(isolation: .readCommitted) { tx in
            guard try await RolloutsTable.proceed(tx, app: name, promote: promote) != nil else {
                throw RPCError.failedPrecondition("app \(name) \(refusal)")
            }
            try await Events.record(tx, .app, name, event, "by \(requester)")
            try await Placement.wake(tx, because: name)
        }
        return try await newestRollout(name)
    }

    private func newestRollout(_ name: String) async throws -> Sigma_V1_RolloutResponse {
        var response = Sigma_V1_RolloutResponse()
        if let rollout = try await RolloutsTable.list(store, app: name, limit: 1).first { response.rollout = rollout }
        return response
    }
}
