import Core
import Foundation
import Store
import Testing
import TestSupport

/// SQL that reads a stored spec computes what Swift computes from the same spec: `StoredPath.failoverMode`,
/// evaluated by PostgreSQL on the JSON a revision is stored as, is `AppSpec.failoverMode`.
@Suite struct StoredPathSQLTests {
    @Test func theFailoverModeInSQLIsSwifts() async throws {
        let volume = VolumeSpec(name: "data", mountPath: "/data", sizeBytes: 1 << 30)
        var specs: [AppSpec] = []
        for failover in [nil, FailoverMode.safe, .fast] {
            for ssd in [nil, SSDRequest()] {
                for volumes in [[], [volume]] {
                    specs.append(AppSpec(name: "a", image: "host", ssd: ssd, failover: failover, volumes: volumes))
                }
            }
        }
        try await withTestDatabase { db in
            let store = testStore(db.url)
            defer { store.shutdown() }
            for spec in specs {
                let json = String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
                let rows = try await store.query(
                    "SELECT \(AppSpec.StoredPath.failoverMode(of: "s.spec")) AS mode FROM (SELECT $1::jsonb AS spec) s", json)
                #expect(try rows[0].decode(String.self, "mode") == spec.failoverMode.rawValue, "\(json)")
            }
        }
    }
}
