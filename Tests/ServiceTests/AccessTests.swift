import Foundation
import Protocol
import RPC
import Store
import Testing
import TestSupport

/// A control plane under CURVE with access control: scheduler, allocator, Discovery and config center on one
/// test database, all presenting the cluster's server key; the operator's key is the bootstrap allow-list,
/// the scheduler is admitted as a service and two agents (nodes sa and sb) by the operator at the start.
struct SecureCluster {
    let folder: String
    let server: CurveKeyPair
    let keys: [String: CurveKeyPair]
    let scheduler: String
    let allocator: String
    let discovery: String
    let config: String
    let store: Store

    /// A client of `endpoint` presenting `key` (a name of `keys`, or a fresh stranger's key), with `token`.
    func client(_ endpoint: String, as key: String, timeout: Duration = .seconds(5)) throws -> RPCClient {
        var configuration = RPCClientConfiguration(endpoints: [endpoint])
        configuration.defaultTimeout = timeout
        configuration.curve = CurveClientConfiguration(keyPair: try keys[key] ?? CurveKeyPair.generate(), serverPublicKey: server.publicKey)
        return try RPCClient(configuration: configuration, logger: quietLogger)
    }

    /// The sigmactl flags of `key`.
    func sigmactlKeys(_ key: String) -> [String] {
        ["--client-key", "\(folder)/\(key).key", "--server-key", "\(folder)/cluster.pub", "--scheduler", scheduler]
    }

    static func with(_ body: (SecureCluster) async throws -> Void) async throws {
        let folder = NSTemporaryDirectory() + "sigma-access-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder + "/operators", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var keys: [String: CurveKeyPair] = [:]
        for name in ["cluster", "operator", "scheduler", "agent-sa", "agent-sb"] {
            let pair = try CurveKeyPair.generate()
            keys[name] = pair
            FileManager.default.createFile(atPath: "\(folder)/\(name).key", contents: Data(pair.secretFileText.utf8),
                                           attributes: [.posixPermissions: 0o600])
            try pair.publicFileText.write(toFile: "\(folder)/\(name).pub", atomically: true, encoding: .utf8)
        }
        try keys["operator"]!.publicFileText.write(toFile: "\(folder)/operators/operator.pub", atomically: true, encoding: .utf8)
        let curve = ["--curve-key", "\(folder)/cluster.key", "--curve-allow", "\(folder)/operators"]
        try await withTestDatabase { db in
            let common = ["--listen", "tcp://127.0.0.1:*", "--database-url", db.url] + curve
            try await withServices({ [try ServiceProcess("sigma-allocator", common)] }) { allocators in
                let allocator = try await allocators[0].endpoint()
                let scheduler = [
                    "--events-listen", "tcp://127.0.0.1:*", "--allocator", allocator, "--lease-duration", "1", "--pass-interval", "0.1",
                    // No test here fails a node: a simulated agent that a loaded machine delays must not turn Broken
                    // (its instances would be bound again, with new tokens).
                    "--suspect-after", "30", "--broken-after", "60",
                    "--client-key", "\(folder)/scheduler.key", "--server-key", "\(folder)/cluster.pub",
                ]
                let feed = ["--events-listen", "tcp://127.0.0.1:*"]
                try await withServices({
                    [try ServiceProcess("sigma-scheduler", common + scheduler), try ServiceProcess("sigma-discovery", common + feed),
                     try ServiceProcess("sigma-config", common + feed)]
                }) { services in
                    let store = testStore(db.url)
                    defer { store.shutdown() }
                    let cluster = SecureCluster(
                        folder: folder, server: keys["cluster"]!, keys: keys, scheduler: try await services[0].endpoint(),
                        allocator: allocator, discovery: try await services[1].endpoint(), config: try await services[2].endpoint(),
                        store: store)
                    // Healthy (the schema migrated) before anything is written.
                    for endpoint in [cluster.scheduler, allocator, cluster.discovery, cluster.config] {
                        try await SchedulerCluster.waitHealthy(try cluster.client(endpoint, as: "operator", timeout: .seconds(20)))
                    }
                    let admin = try cluster.client(cluster.scheduler, as: "operator", timeout: .seconds(20))
                    for (name, role, node) in [("scheduler", "service", ""), ("agent-sa", "agent", "sa"), ("agent-sb", "agent", "sb")] {
                        var add = Sigma_V1_AddPrincipalRequest()
                        add.principal.publicKey = keys[name]!.publicKey
                        add.principal.name = name
                        add.principal.role = role
                        add.principal.node = node
                        #expect(try await admin.call(AccessMethods.addPrincipal, add).changed)
                    }
                    var pool = Sigma_V1_CreateIPPoolRequest()
                    pool.pool.name = "test"
                    pool.pool.cidr = "100.64.0.0/22"
                    pool.pool.gateway = "100.64.0.1"
                    _ = try await cluster.client(allocator, as: "operator", timeout: .seconds(20)).call(AllocatorMethods.createIPPool, pool)
                    // Each service reloads the principals every second: wait until every key is in force everywhere.
                    for endpoint in [cluster.scheduler, allocator, cluster.discovery, cluster.config] {
                        for key in ["scheduler", "agent-sa", "agent-sb"] {
                            _ = try await waitForStatus(.ok) {
                                _ = try await cluster.client(endpoint, as: key, timeout: .seconds(1)).call(CommonMethods.health, .init())
                            }
                        }
                    }
                    // ... and the scheduler's own connection to the allocator, refused before its key was added, has
                    // knocked again (it pauses up to 5 s between tries): a registration reaches the allocator.
                    let first = SimulatedAgent("sa", client: try cluster.client(cluster.scheduler, as: "agent-sa"))
                    _ = try await waitForStatus(.ok) { try await first.register() }
                    do {
                        try await body(cluster)
                    } catch {
                        for process in allocators + services { print("---- \(process.name) log\n\(process.log.suffix(6000))") }
                        throw error
                    }
                }
            }
        }
    }
}

/// The status a call ends with: OK, or its error's code.
func callStatus(_ call: () async throws -> Void) async -> StatusCode {
    do {
        try await call()
        return .ok
    } catch let error as RPCError {
        return error.code
    } catch {
        return .internal
    }
}

/// Waits (bounded) until `call` ends with `wanted`; returns how long it took.
func waitForStatus(_ wanted: StatusCode, within limit: Duration = .seconds(15), _ call: () async throws -> Void) async throws -> Duration {
    let started = ContinuousClock.now
    while await callStatus(call) != wanted {
        guard ContinuousClock.now - started < limit else { throw TestSetupError("the call never ended with \(wanted.name)") }
        try await Task.sleep(for: .milliseconds(100))
    }
    return ContinuousClock.now - started
}

@Suite(.serialized) struct AccessTests {
    @Test func eachRoleReachesOnlyWhatItMay() async throws {
        try await SecureCluster.with { cluster in
            let op = try cluster.client(cluster.scheduler, as: "operator")
            let agentA = SimulatedAgent("sa", client: try cluster.client(cluster.scheduler, as: "agent-sa"))
            let registered = try await agentA.register()
            // It beats all along, as a real agent does: a node left silent until --broken-after turns Broken and
            // its instances are bound again, with new tokens.
            agentA.start()
            defer { agentA.stop() }

            // Feeds check subscriptions: agent sa follows node sa's assignments; agent sb's subscription to them
            // is refused (it still connects: its key is known).
            func follow(_ key: String) throws -> Subscriber {
                let client = try cluster.client(cluster.scheduler, as: "operator")
                let curve = CurveClientConfiguration(keyPair: cluster.keys[key]!, serverPublicKey: cluster.server.publicKey)
                return try Subscriber(endpoints: [registered.eventsEndpoint], topics: [FeedTopics.node("sa")], curve: curve,
                                      logger: quietLogger) { _ in
                    var get = Sigma_V1_GetAssignmentsRequest()
                    get.node = "sa"
                    let snapshot = try await client.call(SchedulerMethods.getAssignments, get)
                    return EventSnapshot(sequence: snapshot.sequence, epoch: snapshot.feedEpoch, payload: try snapshot.serializedBytes())
                }
            }
            let own = try follow("agent-sa"), foreign = try follow("agent-sb")
            defer { own.close(); foreign.close() }
            let foreignUpdates = Task {
                var count = 0
                for await event in foreign.events { if case .update = event { count += 1 } }
                return count
            }

            // A key nobody admitted is refused at the handshake, at every service but the two instances call.
            let stranger = try cluster.client(cluster.scheduler, as: "stranger", timeout: .seconds(2))
            #expect(await callStatus { _ = try await stranger.call(SchedulerMethods.listNodes, .init()) } == .unauthenticated)
            let strangerAtAllocator = try cluster.client(cluster.allocator, as: "stranger", timeout: .seconds(2))
            #expect(await callStatus { _ = try await strangerAtAllocator.call(AllocatorMethods.listIPPools, .init()) } == .unauthenticated)

            // An agent acts for its own node only, and writes nothing else.
            let asA = try cluster.client(cluster.scheduler, as: "agent-sa")
            var beatB = Sigma_V1_HeartbeatRequest()
            beatB.node = "sb"
            #expect(await callStatus { _ = try await asA.call(SchedulerMethods.heartbeat, beatB) } == .permissionDenied)
            var assignmentsB = Sigma_V1_GetAssignmentsRequest()
            assignmentsB.node = "sb"
            #expect(await callStatus { _ = try await asA.call(SchedulerMethods.getAssignments, assignmentsB) } == .permissionDenied)
            var registerB = Sigma_V1_RegisterNodeRequest()
            registerB.name = "sb"
            #expect(await callStatus { _ = try await asA.call(SchedulerMethods.registerNode, registerB) } == .permissionDenied)
            #expect(await callStatus { _ = try await asA.call(SchedulerMethods.listNodes, .init()) } == .permissionDenied)
            var apply = Sigma_V1_ApplyAppRequest()
            apply.spec.name = "web"
            apply.spec.image = "oci:/images/web:1"
            apply.spec.replicas = 1
            apply.spec.resources.request.cpuMillis = 500
            apply.spec.resources.request.memoryBytes = 1 << 28
            #expect(await callStatus { _ = try await asA.call(SchedulerMethods.applyApp, apply) } == .permissionDenied)
            #expect(await callStatus { _ = try await asA.call(CommonMethods.health, .init()) } == .ok)

            // A service reads and allocates, but changes no app.
            let asService = try cluster.client(cluster.scheduler, as: "scheduler")
            #expect(await callStatus { _ = try await asService.call(SchedulerMethods.listNodes, .init()) } == .ok)
            #expect(await callStatus { _ = try await asService.call(SchedulerMethods.applyApp, apply) } == .permissionDenied)
            #expect(await callStatus { _ = try await asService.call(AccessMethods.listPrincipals, .init()) } == .permissionDenied)

            // The operator does everything: two apps, each bound on node sa with a token for its instance.
            _ = try await op.call(SchedulerMethods.applyApp, apply)
            var other = apply
            other.spec.name = "db"
            other.spec.image = "oci:/images/db:1"
            _ = try await op.call(SchedulerMethods.applyApp, other)
            // Records name who asked: the revision and the new app's rollout are the operator's.
            var named = Sigma_V1_AppRequest()
            named.name = "web"
            #expect(try await op.call(SchedulerMethods.rolloutHistory, named).revisions.map(\.appliedBy) == ["operator"])
            var webRollouts = Sigma_V1_ListRolloutsRequest()
            webRollouts.app = "web"
            let created = try await op.call(SchedulerMethods.listRollouts, webRollouts).rollouts
            #expect(created.map(\.startedBy) == ["operator"] && created.map(\.fromRevision) == [0], "\(created)")
            var tokens: [String: Sigma_V1_Assignment] = [:]
            let deadline = ContinuousClock.now + .seconds(20)
            while tokens.count < 2 {
                guard ContinuousClock.now < deadline else { throw TestSetupError("the apps were never bound") }
                var mine = Sigma_V1_GetAssignmentsRequest()
                mine.node = "sa"
                for assignment in try await asA.call(SchedulerMethods.getAssignments, mine).assignments { tokens[assignment.app] = assignment }
                try await Task.sleep(for: .milliseconds(100))
            }
            let web = tokens["web"]!, db = tokens["db"]!
            // Both assignments reach agent sa through its feed (in its snapshot or pushed, depending on which came
            // first; at most 20 s: the subscriber is closed then, which ends the loop); agent sb, subscribed as
            // long, gets no update at all.
            let giveUp = Task {
                try await Task.sleep(for: .seconds(20))
                own.close()
            }
            var seen = Set<String>()
            for await event in own.events {
                switch event {
                case .snapshot(_, _, let payload):
                    if let snapshot = try? Sigma_V1_GetAssignmentsResponse(serializedBytes: payload) {
                        seen.formUnion(snapshot.assignments.map(\.app))
                    }
                case .update(_, _, let payload):
                    if let change = try? Sigma_V1_AssignmentEvent(serializedBytes: payload), !change.removed {
                        seen.insert(change.assignment.app)
                    }
                }
                if seen.isSuperset(of: ["web", "db"]) { break }
            }
            giveUp.cancel()
            #expect(seen.isSuperset(of: ["web", "db"]))
            foreign.close()
            #expect(await foreignUpdates.value == 0)
            // Assignments carry no token: the agent asks for one, for instances on its own node only; the
            // database keeps its SHA-256, and a new one revokes the one before.
            func issue(_ assignment: Sigma_V1_Assignment, as client: RPCClient, node: String = "sa") async throws -> String {
                var request = Sigma_V1_IssueTokenRequest()
                request.node = node
                request.instanceID = assignment.instanceID
                request.generation = assignment.generation
                return try await client.call(SchedulerMethods.issueToken, request).token
            }
            #expect(web.token.isEmpty && db.token.isEmpty)
            let first = try await issue(web, as: asA)
            let webToken = try await issue(web, as: asA), dbToken = try await issue(db, as: asA)
            #expect(webToken.count == 64 && dbToken.count == 64 && webToken != dbToken && webToken != first)
            let asB = try cluster.client(cluster.scheduler, as: "agent-sb")
            #expect(await callStatus { _ = try await issue(web, as: asB, node: "sb") } == .failedPrecondition)
            #expect(await callStatus { _ = try await issue(web, as: asB) } == .permissionDenied)
            let stored = try await cluster.store.query(
                "SELECT token_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex') AS hashed FROM instances WHERE id = $2::uuid",
                webToken, web.instanceID)
            #expect(try stored.first?.decode(Bool.self, "hashed") == true)

            // A business instance (a key nobody knows) proves itself with its token: its own app only.
            let instance = try cluster.client(cluster.discovery, as: "instance-web")
            func resolve(_ app: String, token: String) async -> StatusCode {
                var request = Sigma_V1_ResolveRequest()
                request.app = app
                return await callStatus { _ = try await instance.call(DiscoveryMethods.resolve, request, token: token) }
            }
            #expect(await resolve("web", token: webToken) == .ok)
            #expect(await resolve("web", token: first) == .unauthenticated)
            #expect(await resolve("db", token: webToken) == .permissionDenied)
            #expect(await resolve("web", token: "") == .unauthenticated)
            #expect(await resolve("web", token: String(repeating: "0", count: 64)) == .unauthenticated)
            #expect(await resolve("web", token: "' OR 1=1 --") == .unauthenticated)
            let configAsInstance = try cluster.client(cluster.config, as: "instance-web")
            var getWeb = Sigma_V1_GetConfigRequest()
            getWeb.app = "web"
            var getDB = getWeb
            getDB.app = "db"
            #expect(await callStatus { _ = try await configAsInstance.call(ConfigMethods.get, getDB, token: webToken) } == .permissionDenied)
            var fetchOwn = Sigma_V1_FetchConfigRequest()
            fetchOwn.app = "web"
            fetchOwn.instanceID = web.instanceID
            #expect(await callStatus { _ = try await configAsInstance.call(ConfigMethods.publish, .init(), token: webToken) } == .permissionDenied)
            var fetchOther = fetchOwn
            fetchOther.instanceID = db.instanceID
            #expect(await callStatus { _ = try await configAsInstance.call(ConfigMethods.fetch, fetchOther, token: webToken) } == .permissionDenied)
            // ... and reaches neither the scheduler nor the allocator at all.
            let instanceAtScheduler = try cluster.client(cluster.scheduler, as: "instance-web", timeout: .seconds(2))
            #expect(await callStatus { _ = try await instanceAtScheduler.call(SchedulerMethods.listApps, .init(), token: webToken) } == .unauthenticated)

            // Agents fetch configs only for instances on their node.
            var publish = Sigma_V1_PublishConfigRequest()
            publish.app = "web"
            var file = Sigma_V1_ConfigFile()
            file.path = "/etc/app.conf"
            file.content = Data("port = 8080\n".utf8)
            publish.files = [file]
            _ = try await cluster.client(cluster.config, as: "operator").call(ConfigMethods.publish, publish)
            #expect(await callStatus { _ = try await configAsInstance.call(ConfigMethods.fetch, fetchOwn, token: webToken) } == .ok)
            #expect(await callStatus { _ = try await configAsInstance.call(ConfigMethods.get, getWeb, token: webToken) } == .ok)
            let configAsA = try cluster.client(cluster.config, as: "agent-sa")
            let configAsB = try cluster.client(cluster.config, as: "agent-sb")
            #expect(await callStatus { _ = try await configAsA.call(ConfigMethods.fetch, fetchOwn) } == .ok)
            #expect(await callStatus { _ = try await configAsB.call(ConfigMethods.fetch, fetchOwn) } == .permissionDenied)
            var forged = fetchOwn
            forged.instanceID = "'; DROP TABLE instances; --"
            #expect(await callStatus { _ = try await configAsA.call(ConfigMethods.fetch, forged) } == .permissionDenied)
            #expect(await callStatus { _ = try await configAsA.call(ConfigMethods.publish, publish) } == .permissionDenied)

            // An instance that ends loses its token within seconds.
            var delete = Sigma_V1_AppRequest()
            delete.name = "web"
            _ = try await op.call(SchedulerMethods.deleteApp, delete)
            let revokedIn = try await waitForStatus(.unauthenticated) {
                var request = Sigma_V1_ResolveRequest()
                request.app = "web"
                _ = try await instance.call(DiscoveryMethods.resolve, request, token: webToken)
            }
            #expect(revokedIn < .seconds(15))
            #expect(await resolve("db", token: dbToken) == .ok)

            // The audit log has the writes and the refusals, with who made them.
            // Each service writes its entries in batches (every 200 ms): read until all are there, bounded.
            var query = Sigma_V1_ListAuditRequest()
            query.limit = 1000
            let wanted: [(method: String, caller: String, status: String, subject: String?)] = [
                ("AddPrincipal", "operator", "OK", "agent-sa"), ("ApplyApp", "operator", "OK", "web"),
                ("DeleteApp", "operator", "OK", "web"), ("ApplyApp", "agent-sa", "PERMISSION_DENIED", "web"),
                ("Heartbeat", "agent-sa", "PERMISSION_DENIED", "sb"), ("RegisterNode", "agent-sa", "OK", "sa"),
                ("PublishConfig", "operator", "OK", "web"), ("PublishConfig", "agent-sa", "PERMISSION_DENIED", "web"),
                ("AllocateIPs", "scheduler", "OK", nil), ("Resolve", "unknown", "UNAUTHENTICATED", "web"),
            ]
            var entries: [Sigma_V1_AuditEntry] = []
            func missing() -> [String] {
                wanted.filter { want in
                    !entries.contains { $0.method == want.method && $0.caller == want.caller && $0.status == want.status
                        && (want.subject == nil || $0.subject == want.subject) }
                }.map { "\($0.method) by \($0.caller): \($0.status)" }
            }
            let started = ContinuousClock.now
            repeat {
                entries = try await op.call(AccessMethods.listAudit, query).entries
                if missing().isEmpty || ContinuousClock.now - started > .seconds(30) { break }
                try await Task.sleep(for: .milliseconds(100))
            } while true
            #expect(missing().isEmpty, "not in the audit log: \(missing())")
            #expect(!entries.contains { $0.method == "Heartbeat" && $0.status == "OK" })
            let table = try await runProgram(ServiceProcess.binDirectory + "/sigmactl",
                                             ["audit", "--method", "ApplyApp"] + cluster.sigmactlKeys("operator"))
            #expect(table.contains("ApplyApp") && table.contains("operator") && table.contains("PERMISSION_DENIED"))
        }
    }

    /// Isolation I, item 8: refusals are cheap. 3,000 calls with made-up tokens from one key: past a few per
    /// second the key is refused without a lookup (RESOURCE_EXHAUSTED), the audit log folds the repeats into a
    /// few entries that still count every call, and a long name comes back as a short prefix.
    @Test func refusalsAreCheapAndFoldedInTheAuditLog() async throws {
        try await SecureCluster.with { cluster in
            let stranger = try cluster.client(cluster.discovery, as: "stranger")
            let started = ContinuousClock.now
            var statuses: [StatusCode: Int] = [:]
            for _ in 0..<60 {
                let batch = await withTaskGroup(of: StatusCode.self) { group in
                    for _ in 0..<50 {
                        group.addTask {
                            var request = Sigma_V1_ResolveRequest()
                            request.app = "web"
                            let token = (0..<4).map { _ in String(format: "%016llx", UInt64.random(in: 0...UInt64.max)) }.joined()
                            return await callStatus { _ = try await stranger.call(DiscoveryMethods.resolve, request, token: token) }
                        }
                    }
                    return await group.reduce(into: [StatusCode]()) { $0.append($1) }
                }
                for status in batch { statuses[status, default: 0] += 1 }
            }
            let elapsed = ContinuousClock.now - started
            print("3000 calls with made-up tokens refused in \(elapsed): \(statuses)")
            #expect(statuses.values.reduce(0, +) == 3000)
            #expect(Set(statuses.keys).isSubset(of: [.unauthenticated, .resourceExhausted]), "\(statuses)")
            #expect((statuses[.resourceExhausted] ?? 0) > 0, "the key was never slowed: \(statuses)")

            // Every refusal is counted in a handful of entries.
            let op = try cluster.client(cluster.scheduler, as: "operator")
            var query = Sigma_V1_ListAuditRequest()
            query.limit = 10_000
            query.caller = "unknown"
            var entries: [Sigma_V1_AuditEntry] = []
            let deadline = ContinuousClock.now + .seconds(20)
            while true {
                entries = try await op.call(AccessMethods.listAudit, query).entries.filter { $0.method == "Resolve" }
                if entries.reduce(0, { $0 + Int($1.repeats) }) >= 3000 || ContinuousClock.now > deadline { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(entries.reduce(0) { $0 + Int($1.repeats) } == 3000)
            #expect(entries.count < 200, "\(entries.count) entries for 3000 refusals")
            #expect(entries.contains { $0.repeats > 1 })

            // A name of a MiB comes back as its first characters, not whole.
            var long = Sigma_V1_ResolveRequest()
            long.app = String(repeating: "x", count: 1 << 20)
            let discovery = try cluster.client(cluster.discovery, as: "operator")
            do {
                // A MiB through CURVE on a loaded 2-core machine may take more than the default 5 s.
                _ = try await discovery.call(DiscoveryMethods.resolve, long, timeout: .seconds(60))
                Issue.record("a 1 MiB app name was accepted")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument)
                #expect(error.message.count < 200, "\(error.message.count) characters")
                #expect(error.message.contains("(1048576 characters)"))
            }
        }
    }

    @Test func keysAddedAndRevokedAtRuntimeTakeEffectWithinSeconds() async throws {
        try await SecureCluster.with { cluster in
            let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
            let agent = try cluster.client(cluster.scheduler, as: "agent-sb")
            var beat = Sigma_V1_GetAssignmentsRequest()
            beat.node = "sb"
            _ = try await SimulatedAgent("sb", client: agent).register()
            #expect(await callStatus { _ = try await agent.call(SchedulerMethods.getAssignments, beat) } == .ok)

            // Revoked: its next call on the same connection is refused.
            let removed = try await runProgram(sigmactl, ["access", "remove", "agent-sb"] + cluster.sigmactlKeys("operator"))
            #expect(removed.contains("agent-sb revoked"))
            let refusedIn = try await waitForStatus(.unauthenticated) { _ = try await agent.call(SchedulerMethods.getAssignments, beat) }
            #expect(refusedIn < .seconds(5))
            let again = try await runProgram(sigmactl, ["access", "remove", "agent-sb"] + cluster.sigmactlKeys("operator"))
            #expect(again.contains("nothing removed"))

            // A new operator key: refused at the handshake, then admitted once added.
            let newcomer = try CurveKeyPair.generate()
            let path = cluster.folder + "/newcomer.key"
            FileManager.default.createFile(atPath: path, contents: Data(newcomer.secretFileText.utf8), attributes: [.posixPermissions: 0o600])
            try newcomer.publicFileText.write(toFile: cluster.folder + "/newcomer.pub", atomically: true, encoding: .utf8)
            let before = try await runProgramStatus(sigmactl, ["get", "nodes", "--timeout", "2"] + cluster.sigmactlKeys("newcomer"))
            #expect(before.status != 0)
            let added = try await runProgram(sigmactl, ["access", "add", cluster.folder + "/newcomer.pub", "--role", "operator"]
                                                + cluster.sigmactlKeys("operator"))
            #expect(added.contains("operator/newcomer admitted"))
            var admitted = false
            let deadline = ContinuousClock.now + .seconds(10)
            while !admitted && ContinuousClock.now < deadline {
                admitted = try await runProgramStatus(sigmactl, ["get", "nodes", "--timeout", "2"] + cluster.sigmactlKeys("newcomer")).status == 0
            }
            #expect(admitted)
            let list = try await runProgram(sigmactl, ["access", "list"] + cluster.sigmactlKeys("newcomer"))
            #expect(list.contains("newcomer") && list.contains("agent-sa") && !list.contains("agent-sb"))

            // Bad principals are refused with what is wrong.
            let bad = try await runProgramStatus(sigmactl, ["access", "add", String(repeating: "x", count: 40), "--name", "x",
                                                            "--role", "agent"] + cluster.sigmactlKeys("operator"))
            #expect(bad.status != 0 && bad.output.contains("an agent needs the node"))
        }
    }
}
