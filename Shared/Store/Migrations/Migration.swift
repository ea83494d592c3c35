/// One numbered step of the one schema of the whole system.
///
/// Rules (docs/architecture.md, "A table or column"): a migration only adds or widens — new tables, new nullable or defaulted
/// columns, wider types — until no older service reads what a later one drops. Never edit a migration
/// that has landed; add the next number.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    public let sql: String
}

/// Every migration, in order. Add new ones at the end, with the next number.
public enum Schema {
    public static let migrations: [Migration] = [
        m0001CoreTables,
        m0002IPPools,
        m0003AllocateIPsFunction,
        m0004HostPorts,
        m0005SSDs,
        m0006AllocateIPsOneLookup,
        m0007Scheduler,
        m0008DiscoveryIndex,
        m0009Config,
        m0010AgentEndpoint,
        m0011EventsRetention,
        m0012Access,
        m0013AllocateIPsGenericPlans,
        m0014DiscoveryTriggerHashJoin,
        m0015DiscoveryFollowsApps,
        m0016LifecycleMoves,
        m0017AuditRepeats,
        m0018TeamPolicies,
        m0019TokenHashes,
        m0020ContractViews,
        m0021NodeLeases,
        m0022Volumes,
        m0023Rollouts,
        m0024RolloutRestart,
        m0025RolloutRecords,
        m0026ConfigDelete,
        m0027InstanceRestart,
        m0028UsageHistory,
        m0029DiscoveryIndexShards,
    ]

    public static var latestVersion: Int { migrations.last?.version ?? 0 }
}
