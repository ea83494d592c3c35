import Foundation
import Logging
import Protocol
import RPC
import ClientKit
import ControlPlane
import Hosting
import Store
import Testing
import TestSupport

/// The real executables against a real PostgreSQL.
@Suite(.serialized) struct ServiceHealthTests {
    static let controlPlane = ["sigma-scheduler", "sigma-allocator", "sigma-config", "sigma-discovery"]

    func healthClient(_ endpoint: String) throws -> RPCClient {
        var configuration = RPCClientConfiguration(endpoints: [endpoint])
        configuration.defaultTimeout = .seconds(5)
        return try RPCClient(configuration: configuration, logger: quietLogger)
    }

    /// Asks Health until it says healthy (the schema step runs beside the server), bounded.
    func healthy(_ client: RPCClient, within limit: Duration = .seconds(20)) async throws -> Sigma_V1_HealthResponse {
        let deadline = ContinuousClock.now + limit
        var last = try await client.call(CommonMethods.health, .init())
        while !last.healthy && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            last = try await client.call(CommonMethods.health, .init())
        }
        return last
    }

    @Test func everyServiceServesHealthAndStopsCleanly() async throws {
        try await withTestDatabase { db in
            let listen = ["--listen", "tcp://127.0.0.1:*", "--database-url", db.url]
            try await withServices({ try Self.controlPlane.map { try ServiceProcess($0, listen + eventsOnFreePort($0)) } }) { services in
                var endpoints: [String: String] = [:]
                for service in services { endpoints[service.name] = try await service.endpoint() }
                let state = NSTemporaryDirectory() + "sigma-agent-health-\(UUID().uuidString.prefix(8))"
                defer { try? FileManager.default.removeItem(atPath: state) }
                let agent = try ServiceProcess("sigma-agent", [
                    "--listen", "tcp://127.0.0.1:*", "--scheduler", endpoints["sigma-scheduler"]!, "--state-dir", state,
                    "--name", "health-\(UUID().uuidString.prefix(6).lowercased())", "--host-ip", "127.0.0.1"])
                endpoints["sigma-agent"] = try await agent.endpoint()

                for (name, endpoint) in endpoints.sorted(by: { $0.key < $1.key }) {
                    let answer = try await healthy(try healthClient(endpoint))
                    #expect(answer.healthy, "\(name): \(answer)")
                    #expect(answer.version == sigmaVersion)
                    let dependency = name == "sigma-agent" ? "scheduler" : "database"
                    #expect(answer.dependencies.map(\.name) == [dependency], "\(name)")
                    #expect(answer.service == String(name.dropFirst("sigma-".count)))
                }

                // sigmactl health sees all five and exits 0.
                let arguments = ["health", "-o", "json",
                                 "--scheduler", endpoints["sigma-scheduler"]!, "--allocator", endpoints["sigma-allocator"]!,
                                 "--config", endpoints["sigma-config"]!, "--discovery", endpoints["sigma-discovery"]!,
                                 "--agent", endpoints["sigma-agent"]!]
                let output = try await runProgram(ServiceProcess.binDirectory + "/sigmactl", arguments)
                let rows = try JSONSerialization.jsonObject(with: Data(output.utf8)) as! [[String: Any]]
                #expect(rows.count == 5)
                #expect(rows.allSatisfy { $0["healthy"] as? Bool == true })

                // Metrics counted those calls.
                let metrics = try await healthClient(endpoints["sigma-scheduler"]!).call(CommonMethods.metrics, .init())
                #expect((metrics.methods.first { $0.method == "Health" }?.calls ?? 0) >= 1)

                // The agent stops cleanly on SIGTERM; then sigmactl health reports it and exits 1.
                #expect(await agent.terminate() == 0)
                await #expect(throws: TestSetupError.self) {
                    try await runProgram(ServiceProcess.binDirectory + "/sigmactl", arguments + ["--timeout", "1"])
                }
                for service in services {
                    #expect(await service.terminate() == 0, "\(service.name) did not exit 0:\n\(service.log)")
                }
            }
        }
    }

    @Test func twoProcessesRaceMigrations() async throws {
        try await withTestDatabase { db in
            let arguments = ["--listen", "tcp://127.0.0.1:*", "--database-url", db.url]
            try await withServices({ [try ServiceProcess("sigma-scheduler", arguments + eventsOnFreePort("sigma-scheduler")), try ServiceProcess("sigma-allocator", arguments)] }) {
                services in
                for service in services {
                    let answer = try await healthy(try healthClient(try await service.endpoint()))
                    #expect(answer.healthy, "\(service.name):\n\(service.log)")
                }
                let store = testStore(db.url)
                defer { store.shutdown() }
                let rows = try await store.query("SELECT version FROM schema_migrations ORDER BY version")
                #expect(try rows.map { try $0.decode(Int.self, "version") } == Schema.migrations.map(\.version))
                // Exactly one of the two applied each migration.
                let logs = services.map(\.log).joined()
                #expect(logs.components(separatedBy: "msg=\"migration applied\"").count - 1 == Schema.migrations.count)
            }
        }
    }

    /// A service up before its schema is (its database not there yet, or another service still migrating it)
    /// answers every method but Health and Metrics UNAVAILABLE, saying so; once migrated, it serves.
    @Test func methodsWaitForTheSchemaWithUnavailable() async throws {
        try await withPrivatePostgres { postgres in
            try await postgres.stop()
            let arguments = ["--listen", "tcp://127.0.0.1:*", "--database-url", postgres.url]
            try await withServices({ [try ServiceProcess("sigma-discovery", arguments + eventsOnFreePort("sigma-discovery"))] }) { services in
                let client = try healthClient(try await services[0].endpoint())
                var resolve = Sigma_V1_ResolveRequest()
                resolve.app = "web"
                // (Sent once: for an idempotent call the client would retry UNAVAILABLE until its deadline.)
                let early = await #expect(throws: RPCError.self) {
                    try await client.callRaw(method: DiscoveryMethods.resolve.name, body: try resolve.serializedBytes(), idempotent: false, timeout: .seconds(5))
                }
                #expect(early?.code == .unavailable && early?.message.contains("schema is not migrated yet") == true, "\(String(describing: early))")
                #expect(try await client.call(CommonMethods.health, .init()).healthy == false)
                try await postgres.start()
                #expect(try await healthy(client).healthy)
                await #expect(throws: RPCError.notFound("no app web")) { try await client.call(DiscoveryMethods.resolve, resolve) }
            }
        }
    }

    @Test func healthReportsTheDatabaseDownInBoundedTime() async throws {
        try await withPrivatePostgres { postgres in
            let arguments = ["--listen", "tcp://127.0.0.1:*", "--database-url", postgres.url]
            try await withServices({ [try ServiceProcess("sigma-discovery", arguments + eventsOnFreePort("sigma-discovery"))] }) { services in
                let client = try healthClient(try await services[0].endpoint())
                #expect(try await healthy(client).healthy)
                try await postgres.stop()
                let started = ContinuousClock.now
                let down = try await client.call(CommonMethods.health, .init())
                #expect(!down.healthy)
                #expect(down.dependencies.first?.reachable == false)
                #expect(ContinuousClock.now - started < .seconds(5))
                try await postgres.start()
                #expect(try await healthy(client).healthy)
            }
        }
    }
}

/// CURVE end to end through the service flags and sigmactl's key files.
@Suite struct ServiceCurveTests {
    @Test func serviceAdmitsOnlyAllowListedKeys() async throws {
        let folder = NSTemporaryDirectory() + "sigma-curve-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
        try await runProgram(sigmactl, ["keys", "generate", "agent", "--out", folder + "/servers"])
        try await runProgram(sigmactl, ["keys", "generate", "operator", "--out", folder + "/clients"])
        try await runProgram(sigmactl, ["keys", "generate", "stranger", "--out", folder + "/others"])
        let secretMode = try FileManager.default.attributesOfItem(atPath: folder + "/servers/agent.key")[.posixPermissions] as? Int
        #expect(secretMode == 0o600)

        let arguments = ["--listen", "tcp://127.0.0.1:*", "--curve-key", folder + "/servers/agent.key",
                         "--curve-allow", folder + "/clients", "--scheduler", "tcp://127.0.0.1:1", "--state-dir", folder + "/agent",
                         "--name", "curve-test", "--host-ip", "127.0.0.1"]
        try await withServices({ [try ServiceProcess("sigma-agent", arguments)] }) { services in
            let endpoint = try await services[0].endpoint()
            #expect(!services[0].log.contains("CURVE is off"))
            let keys = ["--server-key", folder + "/servers/agent.pub", "--agent", endpoint, "--timeout", "3"]
            let output = try await runProgram(sigmactl, ["metrics", "agent", "-o", "json", "--client-key", folder + "/clients/operator.key"] + keys)
            #expect(output.hasPrefix("["))
            await #expect(throws: TestSetupError.self) {
                try await runProgram(sigmactl, ["metrics", "agent", "--client-key", folder + "/others/stranger.key"] + keys)
            }
            #expect(services[0].log.contains("CURVE client refused"))
        }
    }
}

/// Services with a PUB socket (scheduler, discovery) bind it on a free loopback port in tests, never on their
/// fixed default.
func eventsOnFreePort(_ executable: String) -> [String] {
    ["sigma-scheduler", "sigma-discovery", "sigma-config"].contains(executable) ? ["--events-listen", "tcp://127.0.0.1:*"] : []
}
