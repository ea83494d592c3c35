import DiscoveryClient
import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// Faults the control plane must ride out by itself.
@Suite(.serialized) struct FaultTests {
    /// Two simulated nodes running app web (3 instances) and one config version of it: what a fault must not
    /// lose. `body` gets the config center's client and that version.
    static func withWebRunning(
        _ cluster: SchedulerCluster, _ body: (RPCClient, Sigma_V1_PublishConfigResponse) async throws -> Void
    ) async throws {
        let agents = ["n1", "n2"].map { SimulatedAgent($0, client: cluster.client) }
        for agent in agents { try await agent.register(idc: "idc-\(agent.name)", cpu: 8000) }
        agents.forEach { $0.start() }
        defer { agents.forEach { $0.stop() } }
        try await cluster.apply("web", replicas: 3, cpu: 100)
        try await cluster.eventually("web running") { try await cluster.allRunning("web", 3) }
        let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
        try await body(config, try await ConfigCenterTests.publish(config, "web", [ConfigCenterTests.file("/etc/web.conf", "v=1")]))
    }

    /// The write a test makes during or after the fault: app "after", 2 instances.
    static var after: Sigma_V1_ApplyAppRequest {
        var apply = Sigma_V1_ApplyAppRequest()
        apply.spec.name = "after"
        apply.spec.image = "oci:/images/after:1"
        apply.spec.replicas = 2
        apply.spec.resources.request.cpuMillis = 100
        apply.spec.resources.request.memoryBytes = 64 << 20
        return apply
    }

    /// PostgreSQL stops under a running cluster and comes back: meanwhile writes are refused with a typed status
    /// and Discovery still answers from memory; afterwards every service works again without a restart, and
    /// Discovery follows changes again (its LISTEN connection is made anew).
    @Test func everyServiceRecoversByItselfWhenPostgreSQLRestarts() async throws {
        try await withPrivatePostgres { postgres in
            try await SchedulerCluster.with(discoveries: 1, configs: 1, brokenAfter: 60, databaseURL: postgres.url) { cluster in
                try await Self.withWebRunning(cluster) { config, _ in
                    let discovery = try DiscoveryClient(endpoints: cluster.discoveryEndpoints, timeout: .seconds(5), logger: quietLogger)
                    defer { discovery.close() }
                    try await cluster.eventually("discovery sees web") { try await discovery.resolve("web").endpoints.count == 3 }

                    try await postgres.stop()
                    let apply = Self.after
                    do {
                        _ = try await cluster.client.call(SchedulerMethods.applyApp, apply, timeout: .seconds(2))
                        Issue.record("an apply was acknowledged while PostgreSQL was down")
                    } catch let error as RPCError {
                        #expect([.unavailable, .deadlineExceeded].contains(error.code), "\(error)")
                    }
                    // Served from memory meanwhile.
                    #expect(try await discovery.resolve("web").endpoints.count == 3)

                    try await postgres.start()
                    try await cluster.eventually("an apply succeeds again", within: .seconds(60)) {
                        (try? await cluster.client.call(SchedulerMethods.applyApp, apply, timeout: .seconds(5))) != nil
                    }
                    try await cluster.eventually("its instances run") { try await cluster.allRunning("after", 2) }
                    try await cluster.eventually("discovery follows the database again", within: .seconds(30)) {
                        (try? await discovery.resolve("after").endpoints.count) == 2
                    }
                    // A publish is not idempotent (docs/protocol.md): one that committed but answered after the
                    // call's deadline (a loaded machine) is a version too, and the next try makes another.
                    var published: Int64 = 0
                    try await cluster.eventually("the config center publishes again", within: .seconds(30)) {
                        published = (try? await ConfigCenterTests.publish(config, "web", [ConfigCenterTests.file("/etc/web.conf", "v=2")]).version.version) ?? 0
                        return published >= 2
                    }
                    var current = Sigma_V1_GetConfigRequest()
                    current.app = "web"
                    let got = try await config.call(ConfigMethods.get, current)
                    #expect(got.version.version == published && got.version.files.map { String(decoding: $0.content, as: UTF8.self) } == ["v=2"])
                    // Nothing acknowledged was lost, and no address was given twice.
                    #expect(try await cluster.instances("web").count == 3)
                    let ips = try await cluster.instances("web").map(\.ip) + cluster.instances("after").map(\.ip)
                    #expect(Set(ips).count == 5 && !ips.contains(""))
                    for endpoint in [cluster.endpoints[0], cluster.allocatorEndpoint, cluster.configEndpoints[0], cluster.discoveryEndpoints[0]] {
                        #expect(try await SchedulerCluster.rpcClient([endpoint]).call(CommonMethods.health, .init()).healthy, "\(endpoint)")
                    }
                }
            }
        }
    }
}

@Suite(.serialized) struct FailoverTests {
    /// A primary/standby pair behind one multi-host URL: the primary dies, the standby is promoted, and every
    /// service follows by itself; what was acknowledged before (synchronous replication) is all there.
    @Test func servicesFollowAPromotedStandbyAndNothingAcknowledgedIsLost() async throws {
        try await withPostgresPair { pair in
            try await SchedulerCluster.with(discoveries: 1, configs: 1, brokenAfter: 60, databaseURL: pair.url) { cluster in
                try await FaultTests.withWebRunning(cluster) { config, published in
                    let before = try await cluster.instances("web")

                    try await pair.crashPrimary()
                    try await pair.promoteStandby()
                    let apply = FaultTests.after
                    try await cluster.eventually("an apply succeeds on the new primary", within: .seconds(60)) {
                        (try? await cluster.client.call(SchedulerMethods.applyApp, apply, timeout: .seconds(5))) != nil
                    }
                    try await cluster.eventually("its instances run") { try await cluster.allRunning("after", 2) }
                    let discovery = try DiscoveryClient(endpoints: cluster.discoveryEndpoints, timeout: .seconds(5), logger: quietLogger)
                    defer { discovery.close() }
                    try await cluster.eventually("discovery follows the new primary", within: .seconds(30)) {
                        (try? await discovery.resolve("after").endpoints.count) == 2
                    }
                    // Acknowledged before the failover: the app, its instances with their IPs, the config version.
                    let now = try await cluster.instances("web")
                    #expect(Set(now.map(\.id)) == Set(before.map(\.id)))
                    #expect(Set(now.map(\.ip)) == Set(before.map(\.ip)))
                    var read = Sigma_V1_GetConfigRequest()
                    read.app = "web"
                    #expect(try await config.call(ConfigMethods.get, read).version.version == published.version.version)
                    let ips = now.map(\.ip) + (try await cluster.instances("after")).map(\.ip)
                    #expect(Set(ips).count == 5 && !ips.contains(""))
                    let standby = try await cluster.store.query("SELECT pg_is_in_recovery() AS recovering")
                    #expect(try standby.first?.decode(Bool.self, "recovering") == false)
                }
            }
        }
    }
}
