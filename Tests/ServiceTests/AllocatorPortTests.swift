import Foundation
import Protocol
import RPC
import Store
import Testing
import TestSupport

/// sigma-allocator's host ports, through the real executable and PostgreSQL.
@Suite struct AllocatorPortTests {
    let helpers = AllocatorIPTests()

    func makeNodes(_ names: [String], _ store: Store) async throws {
        for (index, name) in names.enumerated() {
            try await store.execute(
                "INSERT INTO nodes (name, host_ip, cpu_millis, memory_bytes, disk_bytes) VALUES ($1, $2::inet, 4000, 0, 0)",
                name, "198.18.0.\(index + 1)")
        }
    }

    func ports(_ client: RPCClient, _ items: [(String, String, UInt32)]) async throws -> [Sigma_V1_HostPortAllocation] {
        var request = Sigma_V1_AllocateHostPortsRequest()
        request.items = items.map { node, instance, count in
            var item = Sigma_V1_HostPortRequest()
            item.node = node
            item.instanceID = instance
            item.count = count
            return item
        }
        return try await client.call(AllocatorMethods.allocateHostPorts, request).allocations
    }

    func range(_ node: String, _ first: UInt32, _ last: UInt32, reserved: [UInt32] = []) -> Sigma_V1_SetNodePortRangeRequest {
        var request = Sigma_V1_SetNodePortRangeRequest()
        request.range.node = node
        request.range.firstPort = first
        request.range.lastPort = last
        request.range.reserved = reserved
        return request
    }

    @Test func idempotentExclusiveAndReleasedWhenTheInstanceMoves() async throws {
        try await helpers.withAllocators { client, _, store in
            try await makeNodes(["n1", "n2"], store)
            let ids = try await helpers.makeInstances(3, store)
            _ = try await client.call(AllocatorMethods.setNodePortRange, range("n1", 30000, 30009, reserved: [30000, 30001]))

            let a = try await ports(client, [("n1", ids[0], 3)])[0]
            #expect(a.ports.count == 3 && a.ports.allSatisfy { (30002...30009).contains($0) })
            #expect(try await ports(client, [("n1", ids[0], 3)])[0].ports == a.ports)
            let a4 = try await ports(client, [("n1", ids[0], 4)])[0]
            #expect(a4.ports.count == 4 && Set(a.ports).isSubset(of: Set(a4.ports)))
            let b = try await ports(client, [("n1", ids[1], 4)])[0]
            #expect(Set(b.ports).isDisjoint(with: Set(a4.ports)))

            let exhausted = await #expect(throws: RPCError.self) { _ = try await ports(client, [("n1", ids[2], 1)]) }
            #expect(exhausted?.code == .resourceExhausted)
            #expect(exhausted?.message.contains("n1") == true)

            // The first instance moves to n2: new ports there (default range), its n1 ports are free again.
            let moved = try await ports(client, [("n2", ids[0], 2)])[0]
            #expect(moved.node == "n2" && moved.ports.allSatisfy { (20000...32767).contains($0) })
            let c = try await ports(client, [("n1", ids[2], 4)])[0]
            #expect(Set(c.ports) == Set(a4.ports))

            let listed = try await client.call(AllocatorMethods.listHostPorts, .init())
            #expect(listed.allocations.count == 3)
            #expect(listed.ranges.map(\.node) == ["n1"])

            var release = Sigma_V1_ReleaseHostPortsRequest()
            release.instanceIds = [ids[1]]
            #expect(try await client.call(AllocatorMethods.releaseHostPorts, release).released.first?.ports == b.ports)
            #expect(try await client.call(AllocatorMethods.releaseHostPorts, release).notAllocated == [ids[1]])

            try await store.execute("DELETE FROM instances WHERE id = $1::uuid", ids[2])
            let reclaimed = try await client.call(AllocatorMethods.reclaim, .init()).reclaimedPorts
            #expect(reclaimed.map(\.instanceID) == [ids[2]] && reclaimed.first?.node == "n1")
        }
    }

    @Test func badInputGetsTypedErrors() async throws {
        try await helpers.withAllocators { client, _, store in
            try await makeNodes(["n1"], store)
            let ids = try await helpers.makeInstances(1, store)
            let cases: [([(String, String, UInt32)], StatusCode)] = [
                ([("nope", ids[0], 1)], .notFound),
                ([("n1", UUID().uuidString, 1)], .notFound),
                ([("n1", ids[0], 0)], .invalidArgument),
                ([("n1", ids[0], 65)], .invalidArgument),
                ([("n1", "not-a-uuid", 1)], .invalidArgument),
                ([("n1", ids[0], 1), ("n1", ids[0], 2)], .invalidArgument),
                ([], .invalidArgument),
            ]
            for (items, code) in cases {
                let error = await #expect(throws: RPCError.self) { _ = try await ports(client, items) }
                #expect(error?.code == code, "\(items): \(String(describing: error))")
            }
            for (request, code) in [(range("n1", 0, 10), StatusCode.invalidArgument), (range("n1", 500, 400), .invalidArgument),
                                    (range("n1", 100, 200, reserved: [300]), .invalidArgument), (range("ghost", 100, 200), .notFound)] {
                let error = await #expect(throws: RPCError.self) { _ = try await client.call(AllocatorMethods.setNodePortRange, request) }
                #expect(error?.code == code)
            }
            // Nothing was half-made by the failed batch.
            #expect(try await client.call(AllocatorMethods.listHostPorts, .init()).allocations.isEmpty)
        }
    }

    @Test func twoAllocatorsNeverHandOutOneNodePortTwice() async throws {
        try await helpers.withAllocators(2) { _, each, store in
            try await makeNodes(["n1"], store)
            _ = try await each[0].call(AllocatorMethods.setNodePortRange, range("n1", 40000, 40399))
            let ids = try await helpers.makeInstances(16 * 10, store)
            let book = AddressBook()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<16 {
                    group.addTask {
                        for index in 0..<10 {
                            let id = ids[task * 10 + index]
                            for port in try await ports(each[index % 2], [("n1", id, 2)])[0].ports { book.record("\(port)", id) }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let owners = book.all
            #expect(owners.count == 16 * 10 * 2)
            #expect(owners.values.allSatisfy { $0.count == 1 }, "a port went to two instances")
        }
    }
}
