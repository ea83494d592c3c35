import Foundation
import Protocol
import Store
import Synchronization
import Testing
import TestSupport

@Suite struct StoreTests {
    @Test func parameterizedRoundTripOfHostileText() async throws {
        try await withTestDatabase { db in
            let store = testStore(db.url)
            defer { store.shutdown() }
            try await store.migrate()
            let hostile = "Robert'); DROP TABLE nodes;-- \" \\ $1 %s \u{1F600}"
            let huge = String(repeating: "ab'\"", count: 256 * 1024)  // 1 MiB
            try await store.execute(
                "INSERT INTO nodes (name, host_ip, region, idc, cpu_millis, memory_bytes, disk_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                hostile, "198.18.0.1", huge, "idc-a", 4000, Int64(8) << 30, Int64(100) << 30)
            let rows = try await store.query("SELECT name, region, idc, cpu_millis FROM nodes WHERE name = $1", hostile)
            #expect(rows.count == 1)
            #expect(try rows[0].decode(String.self, "name") == hostile)
            #expect(try rows[0].decode(String.self, "region") == huge)
            #expect(try rows[0].decode(Int.self, "cpu_millis") == 4000)
            // The table is still there.
            #expect(try await store.query("SELECT count(*) AS n FROM nodes")[0].decode(Int.self, "n") == 1)
        }
    }

    @Test func arrayParametersRoundTripEveryElement() async throws {
        try await withTestDatabase { db in
            let store = testStore(db.url)
            defer { store.shutdown() }
            let texts: [String?] = ["plain", "", "with \"quotes\"", "back\\slash\\", "{braces}, commas", "NULL", nil,
                                    "\\\"", "'; DROP TABLE x;--", "\u{1F600} ünï", " spaced "]
            let rows = try await store.query(
                "SELECT t.v, t.n FROM unnest($1::text[]) WITH ORDINALITY AS t(v, n) ORDER BY t.n", texts)
            #expect(rows.count == texts.count)
            for (row, text) in zip(rows, texts) { #expect(try row.decode(String?.self, "v") == text) }
            #expect(try await store.query("SELECT cardinality($1::int[]) AS n", [Int]())[0].decode(Int.self, "n") == 0)

            let ids = (0..<50).map { _ in UUID() }
            for id in ids { #expect(id.lowercasedText == id.uuidString.lowercased()) }
            let back = try await store.query("SELECT u::text AS u FROM unnest($1::uuid[]) WITH ORDINALITY AS t(u, n) ORDER BY n", ids)
            #expect(try back.map { try $0.decode(UUID.self, "u") } == ids)
        }
    }

    /// The discovery trigger on `instances` bumps the app's revision for a one-row UPDATE and then, on the same
    /// connection (whose cached plan the first one made), for an UPDATE of 5,000 rows; its join runs without
    /// nested loops (migration 14), so the second is linear however small the first was.
    @Test func discoveryTriggerAfterASmallUpdateHandlesALargeOne() async throws {
        try await withTestDatabase { db in
            var configuration = StoreConfiguration(url: db.url)
            configuration.poolSize = 1
            let store = Store(configuration: configuration, logger: quietLogger)
            defer { store.shutdown() }
            try await store.migrate()
            let config = try await store.query(
                "SELECT array_to_string(proconfig, ',') AS c FROM pg_proc WHERE proname = 'sigma_instances_changed'")
            #expect(try config.first?.decode(String.self, "c") == "enable_nestloop=off")
            try await store.execute("INSERT INTO apps (name) VALUES ('big'), ('other')")
            try await store.execute("INSERT INTO instances (app, ordinal) SELECT 'big', g FROM generate_series(0, 4999) g")
            try await store.execute("INSERT INTO instances (app, ordinal) VALUES ('other', 0)")
            func revision(_ app: String) async throws -> Int {
                try await store.query("SELECT revision FROM app_index WHERE app = $1", app)[0].decode(Int.self, "revision")
            }
            let before = (big: try await revision("big"), other: try await revision("other"))
            try await store.execute("UPDATE instances SET state = 'Scheduled' WHERE app = 'other'")
            #expect(try await revision("other") == before.other + 1)
            #expect(try await store.execute("UPDATE instances SET state = 'Scheduled' WHERE app = 'big'") == 5000)
            #expect(try await revision("big") == before.big + 1)
            // A change nobody resolving endpoints sees (the pending reason) bumps nothing.
            try await store.execute("UPDATE instances SET pending_reason = 'x' WHERE app = 'big'")
            #expect(try await revision("big") == before.big + 1)
        }
    }

    /// No hot row per app: two sessions changing instances of the same app never wait for each other (each
    /// bumps its own row of Discovery's index, migration 29), the app's index counts both once committed, and
    /// folding the rows keeps it.
    @Test func twoSessionsChangingOneAppsInstancesNeverWaitForEachOther() async throws {
        try await withTestDatabase { db in
            func session() -> Store {
                var configuration = StoreConfiguration(url: db.url)
                configuration.poolSize = 1
                return Store(configuration: configuration, logger: quietLogger)
            }
            let first = session(), second = session()
            defer { first.shutdown(); second.shutdown() }
            try await first.migrate()
            try await first.execute("INSERT INTO apps (name) VALUES ('one')")
            try await first.execute("INSERT INTO instances (app, ordinal) VALUES ('one', 0), ('one', 1)")
            func index() async throws -> Int {
                try await second.query("SELECT revision FROM app_index WHERE app = 'one'")[0].decode(Int.self, "revision")
            }
            let before = try await index()
            let (bumped, signalBumped) = AsyncStream<Void>.makeStream()
            let (release, signalRelease) = AsyncStream<Void>.makeStream()
            // (Released however this test ends: an open transaction would hold the sessions' shutdown.)
            defer { signalRelease.finish() }
            let holder = Task {
                try await first.transaction { tx in
                    try await tx.execute("UPDATE instances SET state = 'Scheduled' WHERE app = 'one' AND ordinal = 0")
                    signalBumped.yield()
                    var waiting = release.makeAsyncIterator()
                    await waiting.next()
                }
            }
            var iterator = bumped.makeAsyncIterator()
            await iterator.next()
            // While the first transaction is open with its change: any lock wait fails this one.
            try await second.transaction { tx in
                try await tx.execute("SET LOCAL lock_timeout = '5s'")
                #expect(try await tx.execute("UPDATE instances SET state = 'Scheduled' WHERE app = 'one' AND ordinal = 1") == 1)
            }
            #expect(try await index() == before + 1, "the open transaction's change is not counted yet")
            signalRelease.finish()
            try await holder.value
            #expect(try await index() == before + 2)
            #expect(try await second.query("SELECT sigma_fold_discovery_index() AS n")[0].decode(Int.self, "n") >= 1)
            #expect(try await index() == before + 2)
            #expect(try await second.query("SELECT shard FROM discovery_index WHERE app = 'one'").count == 1)
        }
    }

    @Test func typedErrorsForBadValues() async throws {
        try await withTestDatabase { db in
            let store = testStore(db.url)
            defer { store.shutdown() }
            try await store.migrate()
            let insert = "INSERT INTO nodes (name, host_ip, cpu_millis, memory_bytes, disk_bytes) VALUES ($1, $2, $3, 0, 0)"
            try await store.execute(insert, "n1", "198.18.0.1", 1000)
            let duplicate = await #expect(throws: StoreError.self) { try await store.execute(insert, "n1", "198.18.0.2", 1000) }
            #expect(duplicate?.code == .uniqueViolation)
            #expect(duplicate?.rpcError.code == .alreadyExists)
            let badIP = await #expect(throws: StoreError.self) { try await store.execute(insert, "n2", "not an ip", 1000) }
            #expect(badIP?.code == .invalidValue)
            #expect(badIP?.rpcError.code == .invalidArgument)
            let negative = await #expect(throws: StoreError.self) { try await store.execute(insert, "n3", "198.18.0.3", -5) }
            #expect(negative?.code == .constraintViolation)
            let nul = await #expect(throws: StoreError.self) { try await store.execute(insert, "n\u{0}4", "198.18.0.4", 1) }
            #expect(nul?.code == .invalidValue)
            let decoding = await #expect(throws: StoreError.self) {
                _ = try await store.query("SELECT name FROM nodes")[0].decode(Int.self, "name")
            }
            #expect(decoding?.code == .decoding)
        }
    }

    @Test func transactionRetriesAForcedSerializationFailure() async throws {
        try await withTestDatabase { db in
            var configuration = StoreConfiguration(url: db.url)
            configuration.poolSize = 2
            let store = Store(configuration: configuration, logger: quietLogger)
            defer { store.shutdown() }
            try await store.execute("CREATE TABLE counters (k int PRIMARY KEY, v bigint NOT NULL)")
            try await store.execute("INSERT INTO counters VALUES (1, 0)")
            let attempts = Atomic<Int>(0)
            let final = try await store.transaction { tx in
                attempts.add(1, ordering: .relaxed)
                let v = try await tx.query("SELECT v FROM counters WHERE k = 1")[0].decode(Int64.self, "v")
                if tx.attempt == 1 {
                    // Another connection commits a write to the row this transaction has read...
                    try await store.execute("UPDATE counters SET v = v + 100 WHERE k = 1")
                }
                // ...so this write cannot serialize on the first attempt (40001) and the body runs again.
                try await tx.execute("UPDATE counters SET v = $1 WHERE k = 1", v + 1)
                return v + 1
            }
            #expect(attempts.load(ordering: .relaxed) == 2)
            #expect(final == 101)
            #expect(try await store.query("SELECT v FROM counters")[0].decode(Int64.self, "v") == 101)
        }
    }

    @Test func exhaustedPoolIsUnavailableNotAHang() async throws {
        try await withTestDatabase { db in
            var configuration = StoreConfiguration(url: db.url)
            configuration.poolSize = 1
            configuration.acquireTimeout = .milliseconds(200)
            let store = Store(configuration: configuration, logger: quietLogger)
            defer { store.shutdown() }
            let (entered, signal) = AsyncStream<Void>.makeStream()
            let holder = Task {
                try await store.transaction { tx in
                    signal.yield()
                    try await tx.query("SELECT pg_sleep(3)")
                }
            }
            var iterator = entered.makeAsyncIterator()
            await iterator.next()
            let error = await #expect(throws: StoreError.self) { try await store.query("SELECT 1") }
            #expect(error?.code == .unavailable)
            _ = try await holder.value
            // Once the connection is back, calls go through again.
            #expect(try await store.query("SELECT 1 AS one")[0].decode(Int.self, "one") == 1)
        }
    }

    @Test func listenNotifyDeliversInOrder() async throws {
        try await withTestDatabase { db in
            let store = testStore(db.url)
            defer { store.shutdown() }
            let stream = try store.notifications(channels: ["sigma_test"])
            var iterator = stream.makeAsyncIterator()
            #expect(await iterator.next() == .connected)
            for index in 0..<5 { try await store.notify(channel: "sigma_test", payload: "event \(index) 'quoted'") }
            var payloads: [String] = []
            while payloads.count < 5, let next = await iterator.next() {
                if case .notification(let channel, let payload) = next, channel == "sigma_test" { payloads.append(payload) }
            }
            #expect(payloads == (0..<5).map { "event \($0) 'quoted'" })
            #expect(throws: StoreError.self) { _ = try store.notifications(channels: ["bad; DROP"]) }
        }
    }

    @Test func migrationsAreIdempotent() async throws {
        try await withTestDatabase { db in
            let store = testStore(db.url)
            defer { store.shutdown() }
            #expect(try await store.migrate() == Schema.migrations.map(\.version))
            #expect(try await store.migrate() == [])
            #expect(try await store.schemaVersion() == Schema.latestVersion)
            for table in ["nodes", "apps", "instances"] {
                let rows = try await store.query("SELECT to_regclass($1) IS NOT NULL AS present", table)
                #expect(try rows[0].decode(Bool.self, "present"), "table \(table)")
            }
        }
    }

    @Test func unavailableWhileDownThenReconnects() async throws {
        try await withPrivatePostgres { postgres in
            var configuration = StoreConfiguration(url: postgres.url)
            configuration.poolSize = 2
            let store = Store(configuration: configuration, logger: quietLogger)
            defer { store.shutdown() }
            let listener = try store.notifications(channels: ["restart_test"])
            var events = listener.makeAsyncIterator()
            #expect(await events.next() == .connected)
            try await store.execute("CREATE TABLE t (v int)")
            try await postgres.stop()
            let started = ContinuousClock.now
            let error = await #expect(throws: StoreError.self) { try await store.execute("INSERT INTO t VALUES (1)") }
            #expect(error?.code == .unavailable)
            #expect(error?.rpcError.code == .unavailable)
            #expect(ContinuousClock.now - started < .seconds(10))
            try await postgres.start()
            try await store.execute("INSERT INTO t VALUES (2)")
            #expect(try await store.query("SELECT count(*) AS n FROM t")[0].decode(Int.self, "n") == 1)
            // The listener is back as well, and says so.
            #expect(await events.next() == .connected)
            try await store.notify(channel: "restart_test", payload: "back")
            #expect(await events.next() == .notification(channel: "restart_test", payload: "back"))
        }
    }
}
