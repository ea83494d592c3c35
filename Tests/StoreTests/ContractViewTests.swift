import Foundation
import Store
import Testing
import TestSupport

/// The views one service reads of another's tables (0020_ContractViews.swift) are a contract: these columns,
/// read-only, and the owner cannot drop a column a view reads without a migration that changes the view.
@Suite struct ContractViewTests {
    static let contract: [String: [String]] = [
        "instance_directory": ["id", "app", "ordinal", "ip", "state", "ready", "node", "generation", "restarts", "next_retry_at",
                               "host_ip", "idc", "host_ports", "ports", "token_hash"],
        "app_directory": ["name", "image", "has_config"],
        "app_index": ["app", "revision"],
        "node_directory": ["name"],
        "free_ssds": ["node", "size_bytes"],
        "held_ssds": ["node", "instance", "held"],
        "host_port_use": ["node", "range_size", "used"],
    ]

    @Test func theViewsHaveTheirColumnsAndHoldTheirOwnersColumns() async throws {
        try await withTestDatabase { db in
            let store = testStore(db.url)
            defer { store.shutdown() }
            try await store.migrate()
            for (view, columns) in Self.contract {
                let rows = try await store.query(
                    "SELECT column_name::text AS name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position", view)
                #expect(try rows.map { try $0.decode(String.self, "name") } == columns, "\(view)")
            }
            // The owner's column stays while a reader's view needs it.
            await #expect(throws: (any Error).self) { try await store.execute("ALTER TABLE instances DROP COLUMN host_ports") }
            await #expect(throws: (any Error).self) { try await store.execute("ALTER TABLE ssds DROP COLUMN healthy") }
            // And the joined view cannot be written through.
            await #expect(throws: (any Error).self) { try await store.execute("UPDATE instance_directory SET ready = true") }
        }
    }

    /// What placement reads of the allocator: a node with a range of its own, one with ports but no range.
    @Test func hostPortUseCountsRangesAndPortsInUse() async throws {
        try await withTestDatabase { db in
            let store = testStore(db.url)
            defer { store.shutdown() }
            try await store.migrate()
            for node in ["a", "b"] {
                try await store.execute("INSERT INTO nodes (name, host_ip, cpu_millis, memory_bytes, disk_bytes) VALUES ($1, '198.18.0.1', 1000, 1, 1)", node)
            }
            try await store.execute("INSERT INTO node_port_ranges (node, first_port, last_port, reserved) VALUES ('a', 30000, 30009, '{30001}')")
            try await store.execute("INSERT INTO apps (name) VALUES ('web')")
            let id = try await store.query("INSERT INTO instances (app, ordinal) VALUES ('web', 0) RETURNING id::text AS id")[0].decode(String.self, "id")
            try await store.execute("INSERT INTO host_ports (node, port, instance) VALUES ('a', 30000, $1::uuid), ('b', 20000, $1::uuid)", id)
            let rows = try await store.query("SELECT node, coalesce(range_size, -1)::bigint AS size, used::bigint AS used FROM host_port_use ORDER BY node")
            let use = try rows.map { "\(try $0.decode(String.self, "node")) \(try $0.decode(Int64.self, "size")) \(try $0.decode(Int64.self, "used"))" }
            #expect(use == ["a 9 1", "b -1 1"])
        }
    }
}
