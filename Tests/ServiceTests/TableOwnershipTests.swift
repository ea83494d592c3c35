import Foundation
import Testing
import TestSupport

/// Every table has one owning module, and only its code names the table in SQL; the other services read
/// through the views of `0020_ContractViews.swift` (or ask the owner over RPC). Migrations are exempt (they
/// are where tables, triggers and views are declared), and so are tests and benchmarks, which fill scratch
/// databases directly, and the fuzzer, whose hostile strings ("'; DROP TABLE instances; --") are no SQL of ours.
@Suite struct TableOwnershipTests {
    /// The owning target of each table. A new table needs a line here (the test says so).
    static let owners: [String: String] = [
        "apps": "Scheduler", "app_revisions": "Scheduler", "instances": "Scheduler", "nodes": "Scheduler",
        "events": "Scheduler", "leases": "Scheduler", "team_policies": "Scheduler", "team_quotas": "Scheduler",
        "volumes": "Scheduler", "rollouts": "Scheduler", "usage_history": "Scheduler",
        // Kept by triggers on instances (migrations): the scheduler's, read as app_index.
        "discovery_index": "Scheduler", "lifecycle_moves": "Scheduler",
        "ip_pools": "Allocator", "ip_addresses": "Allocator", "host_ports": "Allocator", "node_port_ranges": "Allocator",
        "ssds": "Allocator",
        "config_versions": "ConfigCenter", "config_releases": "ConfigCenter",
        // Written by every control-plane service by design (the gate in front of each method).
        "audit_log": "ControlPlane", "principals": "ControlPlane",
    ]
    static let exempt = ["Shared/Store/Migrations/", "Tests/", "Benchmarks/", "Tools/fuzzing/"]
    /// The one file of its owner that writes each table (its query module): a write anywhere else fails.
    /// Tables kept only by triggers have none. A new table needs a line here too.
    static let tableModules: [String: [String]] = [
        "instances": ["Services/Scheduler/Store/InstancesTable.swift"],
        "apps": ["Services/Scheduler/Apps.swift"], "app_revisions": ["Services/Scheduler/Apps.swift"],
        "team_policies": ["Services/Scheduler/Apps.swift"], "team_quotas": ["Services/Scheduler/Apps.swift"],
        "nodes": ["Services/Scheduler/Nodes.swift", "Services/Scheduler/NodeLiveness.swift"], "leases": ["Services/Scheduler/Lease.swift"],
        // The binding statement records its Scheduled events in the same statement, for speed.
        "events": ["Services/Scheduler/Events.swift", "Services/Scheduler/Store/InstancesTable.swift"],
        // The binding statement records where each ordinal's volumes now are, in the same statement too.
        "volumes": ["Services/Scheduler/Store/VolumesTable.swift", "Services/Scheduler/Store/InstancesTable.swift"],
        "rollouts": ["Services/Scheduler/Store/RolloutsTable.swift"],
        "usage_history": ["Services/Scheduler/Store/UsageTable.swift"],
        "discovery_index": [], "lifecycle_moves": [],
        "ip_pools": ["Services/Allocator/IPPools.swift"], "ip_addresses": ["Services/Allocator/IPPools.swift"],
        "host_ports": ["Services/Allocator/HostPorts.swift"], "node_port_ranges": ["Services/Allocator/HostPorts.swift"],
        "ssds": ["Services/Allocator/SSDs.swift"],
        // A deleted set's versions go and its release turns a tombstone in the delete's file.
        "config_versions": ["Services/ConfigCenter/ConfigSets.swift", "Services/ConfigCenter/ConfigReleases.swift"],
        "config_releases": ["Services/ConfigCenter/ConfigSets.swift", "Services/ConfigCenter/ConfigReleases.swift"],
        "audit_log": ["Shared/ControlPlane/AuditLog.swift"], "principals": ["Shared/ControlPlane/AccessAdmin.swift"],
    ]

    static func migrations() throws -> String {
        let folder = packageRoot.path + "/Shared/Store/Migrations"
        return try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
            .map { try String(contentsOfFile: folder + "/" + $0, encoding: .utf8) }.joined(separator: "\n")
    }

    static func declared(_ kind: String, in sql: String) -> Set<String> {
        Set(ModuleGraphTests.allCaptures(#"CREATE \#(kind) (?:IF NOT EXISTS )?([a-z_][a-z0-9_]*)"#, in: sql))
    }

    /// (keyword, name) of each SQL reference in `text`: `FROM x`, `JOIN x`, `UPDATE x`, `INTO x`, `TABLE x`.
    static func references(_ text: String) -> [(keyword: String, name: String)] {
        let expression = try! NSRegularExpression(pattern: #"\b(FROM|JOIN|UPDATE|INTO|TABLE|TRUNCATE)\s+(?:ONLY\s+)?([a-z_][a-z0-9_]*)\b"#)
        return expression.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { match in
            guard let keyword = Range(match.range(at: 1), in: text), let name = Range(match.range(at: 2), in: text) else { return nil }
            return (String(text[keyword]), String(text[name]))
        }
    }

    /// (keyword, name) of each write in `text`: `UPDATE x`, `INSERT INTO x`, `DELETE FROM x`.
    static func writes(_ text: String) -> [(keyword: String, name: String)] {
        let expression = try! NSRegularExpression(pattern: #"\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+(?:ONLY\s+)?([a-z_][a-z0-9_]*)\b"#)
        return expression.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { match in
            guard let keyword = Range(match.range(at: 1), in: text), let name = Range(match.range(at: 2), in: text) else { return nil }
            return (String(text[keyword]), String(text[name]))
        }
    }

    @Test func everyTableHasAnOwner() throws {
        let tables = Self.declared("TABLE", in: try Self.migrations())
        #expect(tables.count >= 19, "tables not read: \(tables.sorted())")
        for table in tables.sorted() { #expect(Self.owners[table] != nil, "table \(table) has no owner in TableOwnershipTests.owners") }
        for table in Self.owners.keys.sorted() { #expect(tables.contains(table), "owners lists \(table), which no migration creates") }
    }

    @Test func onlyTheOwnerNamesATableAndNobodyWritesAView() throws {
        let sql = try Self.migrations()
        let tables = Self.declared("TABLE", in: sql), views = Self.declared("VIEW", in: sql)
        #expect(views.contains("instance_directory"), "views not read: \(views.sorted())")
        // The longest folder first: a file belongs to the target whose folder holds it.
        let targets = try ModuleGraphTests.targets().sorted { $0.path.count > $1.path.count }
        var scanned = 0, references = 0
        for (path, text) in CodeSizeTests.swiftFiles(in: CodeSizeTests.folders + ["Tests"], generated: true) {
            if Self.exempt.contains(where: path.hasPrefix) { continue }
            guard let owner = targets.first(where: { path.hasPrefix($0.path + "/") })?.name else {
                Issue.record("\(path) belongs to no target")
                continue
            }
            scanned += 1
            for reference in Self.references(text) {
                if tables.contains(reference.name) {
                    references += 1
                    #expect(Self.owners[reference.name] == owner,
                            "\(path) (\(owner)) names \(Self.owners[reference.name] ?? "?")'s table \(reference.name) (\(reference.keyword) \(reference.name)): read a view of 0020_ContractViews.swift or ask over RPC")
                }
                if views.contains(reference.name) && ["UPDATE", "INTO"].contains(reference.keyword) {
                    Issue.record("\(path) writes the view \(reference.name): views are read-only contracts")
                }
            }
        }
        #expect(scanned > 100 && references > 50, "scanned \(scanned) files, \(references) references")
    }

    /// Within its owner, each table is written only by its query module.
    @Test func eachTableIsWrittenOnlyByItsQueryModule() throws {
        #expect(Set(Self.tableModules.keys) == Set(Self.owners.keys), "tableModules and owners list different tables")
        var written: [String: Set<String>] = [:]
        for (path, text) in CodeSizeTests.swiftFiles(in: CodeSizeTests.folders, generated: false) {
            if Self.exempt.contains(where: path.hasPrefix) { continue }
            for write in Self.writes(text) {
                guard let modules = Self.tableModules[write.name] else { continue }
                if modules.contains(path) {
                    written[write.name, default: []].insert(path)
                } else {
                    let to = modules.isEmpty ? "only its migrations' triggers write it" : "add a typed statement to \(modules.joined(separator: " or "))"
                    Issue.record("\(path) writes \(write.name) (\(write.keyword) \(write.name)): \(to)")
                }
            }
        }
        for (table, modules) in Self.tableModules {
            #expect(written[table, default: []] == Set(modules), "\(table): written by \(written[table, default: []].sorted()), listed \(modules)")
        }
    }
}
