import Logging

extension Store {
    /// Brings the schema to the latest version. Whichever service starts first does the work; the others
    /// wait on the advisory lock and then find nothing left to do. Returns the versions this call applied.
    @discardableResult
    public func migrate(_ migrations: [Migration] = Schema.migrations) async throws -> [Int] {
        let logger = logger
        return try await withConnection { connection in
            // A session-level lock: held across the per-migration transactions below.
            _ = try connection.execute("SELECT pg_advisory_lock($1)", [migrationLockKey])
            defer { _ = try? connection.execute("SELECT pg_advisory_unlock($1)", [migrationLockKey]) }
            _ = try connection.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version     integer PRIMARY KEY,
                    name        text NOT NULL,
                    applied_at  timestamptz NOT NULL DEFAULT now()
                )
                """, [])
            let applied = Set(try connection.execute("SELECT version FROM schema_migrations", []).rows.map {
                try $0.decode(Int.self, "version")
            })
            var done: [Int] = []
            for migration in migrations.sorted(by: { $0.version < $1.version }) where !applied.contains(migration.version) {
                _ = try connection.execute("BEGIN", [])
                do {
                    try connection.executeScript(migration.sql)
                    _ = try connection.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [migration.version, migration.name])
                    _ = try connection.execute("COMMIT", [])
                } catch {
                    _ = try? connection.execute("ROLLBACK", [])
                    throw error
                }
                logger.info("migration applied", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
                done.append(migration.version)
            }
            return done
        }
    }

    /// The highest migration version applied to the database (0 when none).
    public func schemaVersion() async throws -> Int {
        let rows = try await query("SELECT coalesce(max(version), 0) AS version FROM schema_migrations")
        return try rows.first?.decode(Int.self, "version") ?? 0
    }
}

/// Key of the advisory lock that serializes migrations ("sigma" in ASCII).
let migrationLockKey: Int64 = 0x73_69_67_6d_61
