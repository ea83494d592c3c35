import Foundation
import Protocol
import RPC
import Store
import Testing
import TestSupport

/// sigma-allocator's SSDs, through the real executable and PostgreSQL.
@Suite struct AllocatorSSDTests {
    let helpers = AllocatorIPTests()
    let ports = AllocatorPortTests()
    static let gb: UInt64 = 1 << 30

    func report(_ client: RPCClient, _ node: String, _ ssds: [(String, UInt64, Bool)]) async throws -> [Sigma_V1_SSD] {
        var request = Sigma_V1_ReportSSDsRequest()
        request.node = node
        request.ssds = ssds.map { path, size, healthy in
            var ssd = Sigma_V1_SSD()
            ssd.path = path
            ssd.sizeBytes = size
            ssd.model = "test-nvme"
            ssd.healthy = healthy
            return ssd
        }
        return try await client.call(AllocatorMethods.reportSSDs, request).ssds
    }

    func allocate(_ client: RPCClient, _ node: String, _ instance: String, count: UInt32 = 1, min: UInt64) async throws -> [Sigma_V1_SSD] {
        var request = Sigma_V1_AllocateSSDsRequest()
        var item = Sigma_V1_SSDRequest()
        item.node = node
        item.instanceID = instance
        item.count = count
        item.minBytes = min
        request.items = [item]
        return try await client.call(AllocatorMethods.allocateSSDs, request).ssds
    }

    @Test func smallestHealthyFitExclusiveAndMoved() async throws {
        try await helpers.withAllocators { client, _, store in
            try await ports.makeNodes(["n1", "n2"], store)
            let ids = try await helpers.makeInstances(4, store)
            let g = Self.gb
            _ = try await report(client, "n1", [("/ssd/a", 100 * g, true), ("/ssd/b", 200 * g, true), ("/ssd/c", 400 * g, false),
                                                ("/ssd/d", 200 * g, true)])
            _ = try await report(client, "n2", [("/ssd/e", 500 * g, true)])

            let a = try await allocate(client, "n1", ids[0], min: 150 * g)
            #expect(a.map(\.path) == ["/ssd/b"])
            #expect(try await allocate(client, "n1", ids[0], min: 150 * g).map(\.path) == ["/ssd/b"])
            #expect(try await allocate(client, "n1", ids[1], min: 150 * g).map(\.path) == ["/ssd/d"])
            let none = await #expect(throws: RPCError.self) { _ = try await allocate(client, "n1", ids[2], min: 150 * g) }
            #expect(none?.code == .resourceExhausted)  // /ssd/c is big enough but unhealthy
            #expect(try await allocate(client, "n1", ids[2], min: 50 * g).map(\.path) == ["/ssd/a"])

            // /ssd/b disappears from n1's report while held: kept for its owner, never handed out again.
            let reported = try await report(client, "n1", [("/ssd/a", 100 * g, true), ("/ssd/d", 200 * g, true)])
            #expect(reported.first { $0.path == "/ssd/b" }?.healthy == false)
            #expect(reported.contains { $0.path == "/ssd/c" } == false)

            // The first instance moves to n2: it gets an SSD there and keeps /ssd/b, its data, for when it comes back.
            #expect(try await allocate(client, "n2", ids[0], min: 150 * g).map(\.path) == ["/ssd/e"])
            #expect(try await client.call(AllocatorMethods.listSSDs, .init()).ssds.first { $0.path == "/ssd/b" }?.instanceID == ids[0])
            #expect(try await allocate(client, "n1", ids[0], min: 150 * g).map(\.path) == ["/ssd/b"], "back on n1: the same SSD")

            try await store.execute("DELETE FROM instances WHERE id = $1::uuid", ids[1])
            #expect(try await client.call(AllocatorMethods.reclaim, .init()).reclaimedSsds.map(\.path) == ["/ssd/d"])
            var release = Sigma_V1_ReleaseSSDsRequest()
            release.instanceIds = [ids[2]]
            #expect(try await client.call(AllocatorMethods.releaseSSDs, release).released.map(\.path) == ["/ssd/a"])
            #expect(try await client.call(AllocatorMethods.releaseSSDs, release).notAllocated == [ids[2]])

            let unknown = await #expect(throws: RPCError.self) { _ = try await allocate(client, "ghost", ids[3], min: 1) }
            #expect(unknown?.code == .notFound)
            let zero = await #expect(throws: RPCError.self) { _ = try await allocate(client, "n1", ids[3], count: 0, min: 1) }
            #expect(zero?.code == .invalidArgument)
            let badReport = await #expect(throws: RPCError.self) { _ = try await report(client, "n1", [("", g, true)]) }
            #expect(badReport?.code == .invalidArgument)
        }
    }

    @Test func twoAllocatorsNeverHandOutOneSSDTwice() async throws {
        try await helpers.withAllocators(2) { _, each, store in
            try await ports.makeNodes(["n1"], store)
            _ = try await report(each[0], "n1", (0..<64).map { ("/ssd/\($0)", Self.gb * UInt64(100 + $0 % 4), true) })
            let ids = try await helpers.makeInstances(65, store)
            let book = AddressBook()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<16 {
                    group.addTask {
                        for index in 0..<4 {
                            let id = ids[task * 4 + index]
                            for ssd in try await allocate(each[index % 2], "n1", id, min: Self.gb) { book.record(ssd.path, id) }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(book.all.count == 64)
            #expect(book.all.values.allSatisfy { $0.count == 1 }, "an SSD went to two instances")
            let full = await #expect(throws: RPCError.self) { _ = try await allocate(each[1], "n1", ids[64], min: Self.gb) }
            #expect(full?.code == .resourceExhausted)
        }
    }
}
