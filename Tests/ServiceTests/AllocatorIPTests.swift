import Foundation
import Protocol
import RPC
import Store
import Synchronization
import Testing
import TestSupport

/// sigma-allocator's instance IPs, through the real executable and PostgreSQL.
@Suite struct AllocatorIPTests {
    /// Starts `count` allocators on a fresh database, waits until they are healthy, and hands over a client
    /// to all of them, one to each, and a store to make instance rows with.
    func withAllocators(
        _ count: Int = 1, extra: [String] = [], _ body: (RPCClient, [RPCClient], Store) async throws -> Void
    ) async throws {
        try await withAllocatorProcesses(count, extra: extra) { client, each, store, _ in try await body(client, each, store) }
    }

    func withAllocatorProcesses(
        _ count: Int, extra: [String] = [], _ body: (RPCClient, [RPCClient], Store, [ServiceProcess]) async throws -> Void
    ) async throws {
        try await withTestDatabase { db in
            let arguments = ["--listen", "tcp://127.0.0.1:*", "--database-url", db.url] + extra
            try await withServices({ try (0..<count).map { _ in try ServiceProcess("sigma-allocator", arguments) } }) { services in
                var endpoints: [String] = []
                for service in services { endpoints.append(try await service.endpoint()) }
                let each = try endpoints.map { try rpcClient([$0]) }
                for client in each { try await waitHealthy(client) }
                let store = testStore(db.url)
                defer { store.shutdown() }
                try await body(try rpcClient(endpoints), each, store, services)
            }
        }
    }

    func rpcClient(_ endpoints: [String]) throws -> RPCClient {
        var configuration = RPCClientConfiguration(endpoints: endpoints)
        configuration.defaultTimeout = .seconds(20)
        return try RPCClient(configuration: configuration, logger: quietLogger)
    }

    func waitHealthy(_ client: RPCClient) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while try await !client.call(CommonMethods.health, .init()).healthy {
            guard ContinuousClock.now < deadline else { throw TestSetupError("allocator never became healthy") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Instance rows, as the scheduler will make them.
    func makeInstances(_ count: Int, _ store: Store, app: String = "app") async throws -> [String] {
        try await store.execute("INSERT INTO apps (name) VALUES ($1) ON CONFLICT DO NOTHING", app)
        let first = try await store.query("SELECT coalesce(max(ordinal) + 1, 0) AS n FROM instances WHERE app = $1", app)[0]
            .decode(Int.self, "n")
        return try await store.query(
            "INSERT INTO instances (app, ordinal) SELECT $1, g FROM generate_series($2::int, $3::int) AS g RETURNING id::text AS id",
            app, first, first + count - 1
        ).map { try $0.decode(String.self, "id") }
    }

    func pool(_ name: String, _ cidr: String, gateway: String = "", reserved: [String] = []) -> Sigma_V1_CreateIPPoolRequest {
        var request = Sigma_V1_CreateIPPoolRequest()
        request.pool.name = name
        request.pool.cidr = cidr
        request.pool.gateway = gateway
        request.pool.reserved = reserved
        return request
    }

    func allocate(_ client: RPCClient, _ ids: [String], pool: String = "") async throws -> [Sigma_V1_IPAllocation] {
        var request = Sigma_V1_AllocateIPsRequest()
        request.instanceIds = ids
        request.pool = pool
        return try await client.call(AllocatorMethods.allocateIPs, request).allocations
    }

    func release(_ client: RPCClient, _ ids: [String]) async throws -> Sigma_V1_ReleaseIPsResponse {
        var request = Sigma_V1_ReleaseIPsRequest()
        request.instanceIds = ids
        return try await client.call(AllocatorMethods.releaseIPs, request)
    }

    @Test func poolsIdempotencyReservationsAndExhaustion() async throws {
        try await withAllocators { client, _, store in
            let created = try await client.call(AllocatorMethods.createIPPool,
                                                pool("tiny", "100.64.0.0/29", gateway: "100.64.0.1", reserved: ["100.64.0.2"]))
            #expect(created.usage.total == 8)
            #expect(created.usage.reserved == 4)  // network, broadcast, gateway, operator's
            #expect(created.usage.free == 4)
            #expect(created.pool.reserved == ["100.64.0.2"])

            let ids = try await makeInstances(5, store)
            let first = try await allocate(client, [ids[0]])
            #expect(first.count == 1 && first[0].newlyAllocated)
            #expect(first[0].prefixLength == 29 && first[0].gateway == "100.64.0.1")
            let again = try await allocate(client, [ids[0]])
            #expect(again[0].address == first[0].address && !again[0].newlyAllocated)

            let batch = try await allocate(client, Array(ids[0..<4]))
            #expect(batch.map(\.instanceID) == Array(ids[0..<4]))
            #expect(batch[0].address == first[0].address)
            #expect(Set(batch.map(\.address)) == ["100.64.0.3", "100.64.0.4", "100.64.0.5", "100.64.0.6"])

            let exhausted = await #expect(throws: RPCError.self) { _ = try await allocate(client, [ids[4]]) }
            #expect(exhausted?.code == .resourceExhausted)
            #expect(exhausted?.message.contains("tiny") == true)

            let released = try await release(client, [ids[1]])
            #expect(released.released.map(\.address) == [batch[1].address])
            #expect(try await release(client, [ids[1]]).notAllocated == [ids[1]])
            let reused = try await allocate(client, [ids[4]])
            #expect(reused[0].address == batch[1].address)

            let listed = try await client.call(AllocatorMethods.listIPAllocations, .init()).allocations
            #expect(listed.count == 4)
            let usage = try await client.call(AllocatorMethods.listIPPools, .init()).usage
            #expect(usage.first?.used == 4 && usage.first?.free == 0)
        }
    }

    @Test func sigmactlAlloc() async throws {
        try await withTestDatabase { db in
            let arguments = ["--listen", "tcp://127.0.0.1:*", "--database-url", db.url]
            try await withServices({ [try ServiceProcess("sigma-allocator", arguments)] }) { services in
                let endpoint = try await services[0].endpoint()
                try await waitHealthy(try rpcClient([endpoint]))
                let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
                let flags = ["--allocator", endpoint, "--timeout", "60"]
                let created = try await runProgram(sigmactl, ["alloc", "create-pool", "demo", "100.64.0.0/22", "--gateway", "100.64.0.1",
                                                        "--reserve", "100.64.0.2", "100.64.0.3"] + flags)
                #expect(created.contains("1019 addresses free"))
                let json = try await runProgram(sigmactl, ["alloc", "pools", "-o", "json"] + flags)
                let pools = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [[String: Any]]
                #expect(pools.first?["name"] as? String == "demo")
                #expect(pools.first?["free"] as? Int == 1019)
                #expect(pools.first?["reserved"] as? [String] == ["100.64.0.2", "100.64.0.3"])
                let table = try await runProgram(sigmactl, ["alloc", "pools"] + flags)
                #expect(table.hasPrefix("POOL"))
                await #expect(throws: TestSetupError.self) {
                    try await runProgram(sigmactl, ["alloc", "create-pool", "again", "100.64.1.0/24"] + flags)
                }
            }
        }
    }

    @Test func badInputGetsTypedErrors() async throws {
        try await withAllocators { client, _, store in
            _ = try await client.call(AllocatorMethods.createIPPool, pool("main", "100.64.0.0/24"))
            let cases: [(Sigma_V1_CreateIPPoolRequest, StatusCode)] = [
                (pool("main", "100.64.1.0/24"), .alreadyExists),
                (pool("overlap", "100.64.0.128/25"), .invalidArgument),
                (pool("bad", "100.64.0.0/33"), .invalidArgument),
                (pool("hostbits", "100.64.2.1/24"), .invalidArgument),
                (pool("huge", "100.0.0.0/8"), .invalidArgument),
                (pool("gw", "100.64.3.0/24", gateway: "100.64.4.1"), .invalidArgument),
                (pool("", "100.64.5.0/24"), .invalidArgument),
            ]
            for (request, code) in cases {
                let error = await #expect(throws: RPCError.self) { _ = try await client.call(AllocatorMethods.createIPPool, request) }
                #expect(error?.code == code, "\(request.pool.name) \(request.pool.cidr): \(String(describing: error))")
            }
            let unknown = await #expect(throws: RPCError.self) { _ = try await allocate(client, [UUID().uuidString]) }
            #expect(unknown?.code == .notFound)
            let malformed = await #expect(throws: RPCError.self) { _ = try await allocate(client, ["'; DROP TABLE ip_pools; --"]) }
            #expect(malformed?.code == .invalidArgument)
            let ids = try await makeInstances(1, store)
            let noPool = await #expect(throws: RPCError.self) { _ = try await allocate(client, ids, pool: "nope") }
            #expect(noPool?.code == .notFound)
        }
    }

    @Test func concurrentCallsAreAnsweredOneByOneEvenWhenMerged() async throws {
        try await withAllocators { client, _, store in
            _ = try await client.call(AllocatorMethods.createIPPool, pool("p", "100.64.0.0/24"))
            let ids = try await makeInstances(32, store)
            // 32 callers at once, one of them naming an instance that does not exist.
            let outcomes = try await withThrowingTaskGroup(of: (Int, Result<[Sigma_V1_IPAllocation], RPCError>).self) { group in
                for index in 0..<33 {
                    group.addTask {
                        let id = index < 32 ? ids[index] : UUID().uuidString
                        do { return (index, .success(try await allocate(client, [id]))) } catch let error as RPCError {
                            return (index, .failure(error))
                        }
                    }
                }
                return try await group.reduce(into: [Int: Result<[Sigma_V1_IPAllocation], RPCError>]()) { $0[$1.0] = $1.1 }
            }
            for index in 0..<32 {
                let allocation = try outcomes[index]!.get()
                #expect(allocation.map(\.instanceID) == [ids[index]])
            }
            guard case .failure(let error) = outcomes[32]! else { Issue.record("the unknown instance got an address"); return }
            #expect(error.code == .notFound)
            let addresses = try outcomes.values.compactMap { try? $0.get().first?.address }
            #expect(Set(addresses).count == 32)
        }
    }

    @Test func killingAnAllocatorMidRunLeavesNoHalfMadeAllocation() async throws {
        try await withAllocatorProcesses(2) { client, _, store, processes in
            _ = try await client.call(AllocatorMethods.createIPPool, pool("p", "100.64.0.0/20"))
            let ids = try await makeInstances(8 * 40, store)
            let answers = AddressBook()
            let (halfway, reached) = AsyncStream<Void>.makeStream()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<8 {
                    group.addTask {
                        for index in 0..<40 {
                            if task == 0 && index == 10 { reached.yield() }
                            let id = ids[task * 40 + index]
                            // Idempotent: the client retries on the surviving allocator when a connection drops.
                            let allocation = try await allocate(client, [id])[0]
                            answers.record(id, allocation.address)
                        }
                    }
                }
                var iterator = halfway.makeAsyncIterator()
                await iterator.next()
                processes[0].crash()
                try await group.waitForAll()
            }
            let all = answers.all
            #expect(all.count == ids.count)
            #expect(all.values.allSatisfy { $0.count == 1 })
            let rows = try await store.query(
                """
                SELECT count(*) AS n, count(DISTINCT instance) AS d, count(*) FILTER (WHERE allocated_at IS NULL) AS half
                FROM ip_addresses WHERE instance IS NOT NULL
                """)
            #expect(try rows[0].decode(Int.self, "n") == ids.count)
            #expect(try rows[0].decode(Int.self, "d") == ids.count)
            #expect(try rows[0].decode(Int.self, "half") == 0)
        }
    }

    @Test func reclaimReleasesWhatDeletedInstancesHeld() async throws {
        try await withAllocators(extra: ["--reclaim-interval", "3600"]) { client, _, store in
            _ = try await client.call(AllocatorMethods.createIPPool, pool("p", "100.64.0.0/24"))
            let ids = try await makeInstances(4, store)
            let allocations = try await allocate(client, ids)
            #expect(try await client.call(AllocatorMethods.reclaim, .init()).reclaimedIps.isEmpty)
            try await store.execute("DELETE FROM instances WHERE id = ANY($1::uuid[])", [ids[1], ids[3]])
            let reclaimed = try await client.call(AllocatorMethods.reclaim, .init()).reclaimedIps
            #expect(Set(reclaimed.map(\.instanceID)) == [ids[1], ids[3]])
            #expect(Set(reclaimed.map(\.address)) == [allocations[1].address, allocations[3].address])
            let left = try await client.call(AllocatorMethods.listIPAllocations, .init()).allocations
            #expect(Set(left.map(\.instanceID)) == [ids[0], ids[2]])
            #expect(try await client.call(AllocatorMethods.reclaim, .init()).reclaimedIps.isEmpty)
        }
    }

    @Test func periodicSweepReclaimsByItself() async throws {
        try await withAllocators(extra: ["--reclaim-interval", "0.2"]) { client, _, store in
            _ = try await client.call(AllocatorMethods.createIPPool, pool("p", "100.64.0.0/24"))
            let ids = try await makeInstances(2, store)
            _ = try await allocate(client, ids)
            try await store.execute("DELETE FROM instances WHERE id = $1::uuid", ids[0])
            let deadline = ContinuousClock.now + .seconds(20)
            var left = try await client.call(AllocatorMethods.listIPAllocations, .init()).allocations
            while left.count != 1 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
                left = try await client.call(AllocatorMethods.listIPAllocations, .init()).allocations
            }
            #expect(left.map(\.instanceID) == [ids[1]])
        }
    }

    @Test func neverUsedFirstThenReleasedLongestAgo() async throws {
        try await withAllocators { client, _, store in
            _ = try await client.call(AllocatorMethods.createIPPool, pool("p", "100.64.0.0/29"))  // .1 … .6
            let ids = try await makeInstances(8, store)
            let three = try await allocate(client, Array(ids[0..<3]))
            #expect(three.map(\.address) == ["100.64.0.1", "100.64.0.2", "100.64.0.3"])
            _ = try await release(client, [ids[1]])  // .2 released first
            _ = try await release(client, [ids[0]])  // then .1
            // Never-used addresses first...
            #expect(try await allocate(client, [ids[3]])[0].address == "100.64.0.4")
            #expect(try await allocate(client, Array(ids[4..<6])).map(\.address) == ["100.64.0.5", "100.64.0.6"])
            // ...then the one released longest ago.
            #expect(try await allocate(client, [ids[6]])[0].address == "100.64.0.2")
            #expect(try await allocate(client, [ids[7]])[0].address == "100.64.0.1")
        }
    }

    @Test func twoAllocatorsSixteenCallersNoDuplicates() async throws {
        try await withAllocators(2) { _, each, store in
            _ = try await each[0].call(AllocatorMethods.createIPPool, pool("big", "100.64.0.0/22"))
            let ids = try await makeInstances(16 * 24, store)
            let answers = AddressBook()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<16 {
                    group.addTask {
                        let mine = Array(ids[(task * 24)..<(task * 24 + 24)])
                        // Half one by one, half in a batch; every instance is asked for twice, from both allocators.
                        for (index, id) in mine[0..<12].enumerated() {
                            let allocation = try await allocate(each[index % 2], [id])[0]
                            answers.record(id, allocation.address)
                        }
                        for allocation in try await allocate(each[task % 2], Array(mine[12...])) {
                            answers.record(allocation.instanceID, allocation.address)
                        }
                        for allocation in try await allocate(each[(task + 1) % 2], mine) {
                            answers.record(allocation.instanceID, allocation.address)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let all = answers.all
            #expect(all.count == ids.count)
            #expect(all.values.allSatisfy { $0.count == 1 }, "an instance got two different addresses")
            let addresses = all.values.compactMap(\.first)
            #expect(Set(addresses).count == addresses.count, "an address went to two instances")
            let rows = try await store.query("SELECT count(*) AS n, count(DISTINCT instance) AS d FROM ip_addresses WHERE instance IS NOT NULL")
            #expect(try rows[0].decode(Int.self, "n") == ids.count)
            #expect(try rows[0].decode(Int.self, "d") == ids.count)
        }
    }
}

/// Every address each instance was given, across calls and allocators.
final class AddressBook: Sendable {
    private let entries = Mutex<[String: Set<String>]>([:])
    func record(_ instance: String, _ address: String) { entries.withLock { $0[instance, default: []].insert(address) } }
    var all: [String: Set<String>] { entries.withLock { $0 } }
}
