import Core
import DiscoveryClient
import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// sigma-discovery against instances the real scheduler records, with simulated agents.
@Suite(.serialized) struct DiscoveryTests {
    static func resolve(_ client: RPCClient, _ app: String, waitIndex: UInt64 = 0, waitMs: UInt32 = 0, ready: Bool = false) async throws -> Sigma_V1_ResolveResponse {
        var request = Sigma_V1_ResolveRequest()
        request.app = app
        request.waitIndex = waitIndex
        request.waitTimeoutMs = waitMs
        request.readyOnly = ready
        return try await client.call(DiscoveryMethods.resolve, request, timeout: .seconds(30))
    }

    static func withPorts(_ spec: inout Sigma_V1_AppSpec) {
        var port = Sigma_V1_ContainerPort()
        port.name = "client"
        port.containerPort = 2181
        spec.ports = [port]
    }

    /// docs/examples/peers.py, the startup scripts' helper (pyzmq and its own protobuf codec), waits for the
    /// peers with a blocking query and prints them.
    @Test func peersScriptWaitsForTheAppsPeers() async throws {
        try await SchedulerCluster.with(discoveries: 2) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(idc: "idc-a", cpu: 8000)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("zk", replicas: 2, cpu: 100, Self.withPorts)
            try await cluster.eventually("zk running") { try await cluster.allRunning("zk", 2) }
            let script = packageRoot.path + "/docs/examples/peers.py"
            let discovery = cluster.discoveryEndpoints.joined(separator: ",")
            // Three wanted, two there: it waits; a third one comes and wakes it.
            let waiting = Task {
                try await runProgramStatus("/usr/bin/python3", [script, "zk", "--count", "3", "--within", "60", "--discovery", discovery])
            }
            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "zk"
            scale.replicas = 3
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            let (status, output) = try await waiting.value
            #expect(status == 0, "\(output)")
            let peers = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]])
            let instances = try await cluster.instances("zk")
            #expect(peers.compactMap { $0["ip"] as? String } == instances.sorted { $0.ordinal < $1.ordinal }.map(\.ip))
            #expect(peers.compactMap { $0["ordinal"] as? Int } == [0, 1, 2])
            #expect(peers.allSatisfy { ($0["ports"] as? [String: [Int]])?["client"]?.first == 2181 && $0["node"] as? String == "n1" })
            // Not there in time: exit status 1 with what there is; an unknown app: 2 and the status.
            let short = try await runProgramStatus("/usr/bin/python3", [script, "zk", "--count", "5", "--within", "1", "--discovery", discovery])
            #expect(short.status == 1)
            let unknown = try await runProgramStatus("/usr/bin/python3", [script, "nope", "--discovery", discovery])
            #expect(unknown.status == 2)
            // --members: every ordinal with its IP, the two the node has no room for too.
            try await cluster.apply("quorum", replicas: 3, cpu: 7000, Self.withPorts)
            let members = try await runProgramStatus("/usr/bin/python3", [script, "quorum", "--members", "--count", "3", "--within", "60",
                                                                          "--discovery", discovery])
            #expect(members.status == 0, "\(members.output)")
            let listed = try #require(try JSONSerialization.jsonObject(with: Data(members.output.utf8)) as? [[String: Any]])
            #expect(listed.compactMap { $0["state"] as? String }.filter { $0 == "Pending" }.count == 2, "\(listed)")
            #expect(Set(listed.compactMap { $0["ip"] as? String }.filter { !$0.isEmpty }).count == 3)
        }
    }

    @Test func resolvesAndBlocksOnlyForItsOwnApp() async throws {
        try await SchedulerCluster.with(discoveries: 2) { cluster in
            let agents = ["n1", "n2"].map { SimulatedAgent($0, client: cluster.client) }
            for agent in agents { try await agent.register(idc: "idc-\(agent.name)", cpu: 8000) }
            agents.forEach { $0.start() }
            defer { agents.forEach { $0.stop() } }
            try await cluster.apply("zk", replicas: 3, cpu: 100, Self.withPorts)
            try await cluster.eventually("zk running") { try await cluster.allRunning("zk", 3) }
            let replicas = try cluster.discoveryEndpoints.map { try SchedulerCluster.rpcClient([$0]) }

            var first = try await Self.resolve(replicas[0], "zk", ready: true)
            try await cluster.eventually("discovery sees 3 ready") {
                first = try await Self.resolve(replicas[0], "zk", ready: true)
                return first.endpoints.count == 3
            }
            let instances = try await cluster.instances("zk")
            #expect(Set(first.endpoints.map(\.ip)) == Set(instances.map(\.ip)))
            #expect(first.endpoints.map(\.ordinal) == [0, 1, 2])
            #expect(first.endpoints.allSatisfy { $0.ports.first?.containerPort == 2181 && $0.hostIp.hasPrefix("198.18.") && $0.idc.hasPrefix("idc-") })
            // The other replica answers the same index for the same state.
            let second = try await Self.resolve(replicas[1], "zk", ready: true)
            #expect(second.index == first.index && second.endpoints == first.endpoints)

            // Blocking queries on both replicas: another app's change does not wake them, zk's does.
            let index = first.index
            let waiting = replicas.map { replica in Task { try await Self.resolve(replica, "zk", waitIndex: index, waitMs: 20_000) } }
            try await cluster.apply("other", replicas: 2, cpu: 100)
            try await cluster.eventually("other running") { try await cluster.allRunning("other", 2) }
            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "zk"
            scale.replicas = 4
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            for task in waiting {
                let woken = try await task.value
                #expect(woken.index > index)
                // Woken by zk's change: the new instance is there (it may not run yet).
                #expect(woken.endpoints.count == 4)
            }

            // Nothing changes: the query times out with the same index. (Until the fourth instance has settled
            // and this replica has caught up, an answer may still carry a change; then ask again.)
            try await cluster.eventually("zk settled") { try await cluster.allRunning("zk", 4) }
            var attempts = 0
            while true {
                let settled = try await Self.resolve(replicas[0], "zk")
                let started = ContinuousClock.now
                let quiet = try await Self.resolve(replicas[0], "zk", waitIndex: settled.index, waitMs: 300)
                if quiet.index == settled.index {
                    #expect(ContinuousClock.now - started >= .milliseconds(300))
                    #expect(quiet.endpoints == settled.endpoints)
                    break
                }
                attempts += 1
                guard attempts < 20 else {
                    Issue.record("the index kept changing")
                    break
                }
            }
        }
    }

    /// Case 2 of the lifecycle issue: after DeleteApp, Resolve is NOT_FOUND on every replica (bounded wait), a
    /// blocking query on the app wakes with that answer, and so does an app scaled to 0 before its delete (which
    /// changes no instance). Applied again, it answers with an index above the deleted one's.
    @Test func deletedAppsAreGoneFromEveryReplicaAndWakeTheirWaiters() async throws {
        try await SchedulerCluster.with(discoveries: 2) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(idc: "idc-a", cpu: 8000)
            agent.start()
            defer { agent.stop() }
            let replicas = try cluster.discoveryEndpoints.map { try SchedulerCluster.rpcClient([$0]) }
            func delete(_ app: String) async throws {
                var request = Sigma_V1_AppRequest()
                request.name = app
                _ = try await cluster.client.call(SchedulerMethods.deleteApp, request)
            }
            func gone(_ app: String) async -> Bool {
                for replica in replicas {
                    do {
                        _ = try await Self.resolve(replica, app)
                        return false
                    } catch let error as RPCError where error.code == .notFound {
                        continue
                    } catch {
                        return false
                    }
                }
                return true
            }
            try await cluster.apply("zk", replicas: 2, cpu: 100, Self.withPorts)
            try await cluster.eventually("zk running") { try await cluster.allRunning("zk", 2) }
            var known: [Sigma_V1_ResolveResponse] = []
            try await cluster.eventually("both replicas see 2 ready") {
                known = []
                for replica in replicas { known.append(try await Self.resolve(replica, "zk", ready: true)) }
                return known.allSatisfy { $0.endpoints.count == 2 }
            }
            // Blocking on the current index on both replicas: the delete wakes them with NOT_FOUND.
            let waiting = zip(replicas, known).map { replica, answer in
                Task { () -> RPCError? in
                    // Woken by each change (the instances turning Terminating first), block again until the app is gone.
                    var index = answer.index
                    do {
                        while true { index = try await Self.resolve(replica, "zk", waitIndex: index, waitMs: 60_000).index }
                    } catch {
                        return error as? RPCError
                    }
                }
            }
            let deletedAt = ContinuousClock.now
            try await delete("zk")
            try await cluster.eventually("zk NOT_FOUND on every replica", within: .seconds(10)) { await gone("zk") }
            for task in waiting { #expect(try await task.value?.code == .notFound) }
            #expect(ContinuousClock.now - deletedAt < .seconds(10))

            // Scaled to 0 first (an existing app with no instances answers an empty list), then deleted.
            try await cluster.apply("empty", replicas: 1, cpu: 100)
            try await cluster.eventually("empty running") { try await cluster.allRunning("empty", 1) }
            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "empty"
            scale.replicas = 0
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            var lastIndex: UInt64 = 0
            try await cluster.eventually("empty has no endpoints on every replica") {
                var empty = true
                for replica in replicas {
                    let answer = try await Self.resolve(replica, "empty")
                    empty = empty && answer.endpoints.isEmpty
                    lastIndex = answer.index
                }
                return empty
            }
            // Blocking on replica 0 from its own index; a later change of the scaled-down instance (its record
            // going away after Terminating) may wake it first with the still empty list: block again.
            let blocked = Task { [replica = replicas[0]] () -> RPCError? in
                do {
                    var index = try await Self.resolve(replica, "empty").index
                    while true { index = try await Self.resolve(replica, "empty", waitIndex: index, waitMs: 60_000).index }
                } catch {
                    return error as? RPCError
                }
            }
            try await delete("empty")
            try await cluster.eventually("empty NOT_FOUND on every replica", within: .seconds(10)) { await gone("empty") }
            #expect(try await blocked.value?.code == .notFound)

            // Applied again: found, with an index past the one before the delete.
            try await cluster.apply("empty", replicas: 1, cpu: 100)
            try await cluster.eventually("empty back") { try await cluster.allRunning("empty", 1) }
            let back = try await Self.resolve(replicas[1], "empty")
            #expect(back.index > lastIndex)
        }
    }

    @Test func badInputGetsTypedErrors() async throws {
        try await SchedulerCluster.with(discoveries: 1) { cluster in
            let discovery = try SchedulerCluster.rpcClient(cluster.discoveryEndpoints)
            await #expect(throws: RPCError.notFound("no app ghost")) { try await Self.resolve(discovery, "ghost") }
            await #expect(throws: RPCError.invalidArgument("app: \"Bad App\" is not an app name (\(AppSpec.nameRule))")) { try await Self.resolve(discovery, "Bad App") }
            try await cluster.apply("empty", replicas: 0)
            let empty = try await Self.resolve(discovery, "empty")
            #expect(empty.endpoints.isEmpty)
            do {
                _ = try await Self.resolve(discovery, "empty", waitIndex: empty.index + 100)
                Issue.record("a wait index from the future was accepted")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains("is ahead of app empty's index"))
            }
            var request = Sigma_V1_ResolveRequest()
            request.app = "empty"
            request.state = "Sleeping"
            await #expect(throws: RPCError.self) { try await discovery.call(DiscoveryMethods.resolve, request) }
            // A malformed request (an index that is not a varint) is INVALID_ARGUMENT, and the replica keeps serving.
            do {
                _ = try await discovery.callRaw(method: "Resolve", body: [0x28, 0xFF, 0xFF], idempotent: true)
                Issue.record("a malformed request was answered")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains("is not a valid sigma.v1.ResolveRequest"))
            }
            #expect(try await Self.resolve(discovery, "empty").index == empty.index)
        }
    }

    @Test func clientFallsBackToItsCacheFile() async throws {
        try await SchedulerCluster.with(discoveries: 1) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register()
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("db", replicas: 2, cpu: 100)
            try await cluster.eventually("running") { try await cluster.allRunning("db", 2) }
            let cache = NSTemporaryDirectory() + "sigma-discovery-\(UUID().uuidString.prefix(8)).cache"
            defer { try? FileManager.default.removeItem(atPath: cache) }
            let client = try DiscoveryClient(endpoints: cluster.discoveryEndpoints, cacheFile: cache, timeout: .seconds(2), logger: quietLogger)
            defer { client.close() }
            let live = try await client.waitForPeers("db", count: 2, filter: .init(readyOnly: true), within: .seconds(20))
            #expect(!live.fromCache && live.endpoints.count == 2)

            cluster.discoveries[0].crash()
            let cached = try await client.resolve("db", filter: .init(readyOnly: true))
            #expect(cached.fromCache && cached.savedAt != nil)
            #expect(cached.index == live.index && cached.endpoints == live.endpoints)
            // Nothing cached for that question: the error comes through.
            await #expect(throws: RPCError.self) { try await client.resolve("db", filter: .init(idc: "elsewhere")) }
        }
    }

    @Test func feedPushesChangesAndSigmactlShowsEndpoints() async throws {
        try await SchedulerCluster.with(discoveries: 1) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register()
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("web", replicas: 1, cpu: 100, Self.withPorts)
            let discovery = try SchedulerCluster.rpcClient(cluster.discoveryEndpoints)
            let first = try await Self.resolve(discovery, "web")
            let subscriber = try Subscriber(endpoints: [first.eventsEndpoint], topics: [FeedTopics.app("web")], logger: quietLogger) { _ in
                let snapshot = try await Self.resolve(discovery, "web")
                return EventSnapshot(sequence: snapshot.sequence, epoch: snapshot.feedEpoch, payload: try snapshot.serializedBytes())
            }
            defer { subscriber.close() }
            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "web"
            scale.replicas = 2
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            var sawTwo = false
            // The first snapshot may be taken after the scale already shows (then it holds both): either ends it.
            for await event in subscriber.events {
                let payload: [UInt8]
                switch event {
                case .update(_, _, let bytes), .snapshot(_, _, let bytes): payload = bytes
                }
                if try Sigma_V1_ResolveResponse(serializedBytes: payload).endpoints.count == 2 {
                    sawTwo = true
                    break
                }
            }
            #expect(sawTwo)

            try await cluster.eventually("running") { try await cluster.allRunning("web", 2) }
            let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
            let flags = ["--discovery", cluster.discoveryEndpoints[0], "--timeout", "20"]
            try await cluster.eventually("sigmactl shows both ready") {
                let table = try await runProgram(sigmactl, ["discover", "web", "--ready"] + flags)
                return table.components(separatedBy: "client:2181").count == 3
            }
            let json = try await runProgram(sigmactl, ["discover", "web", "-o", "json"] + flags)
            let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
            #expect((object["endpoints"] as! [Any]).count == 2)
        }
    }
}
