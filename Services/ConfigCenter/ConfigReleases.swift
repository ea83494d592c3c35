import Core
import Protocol
import RPC
import Store

/// Each app's release as stored (a deleted set's tombstone too) and the delete of a whole set.
extension ConfigSets {
    /// The release, NOT_FOUND when the app has no config (never had one, or it was deleted).
    func release(_ app: String) async throws -> Sigma_V1_ConfigRelease {
        let release = try await storedRelease(app)
        guard release.current > 0 else { throw RPCError.notFound("app \(app) has no config") }
        return release
    }

    /// The release row as stored, a deleted set's tombstone (current 0) too, refreshing the cache; the versions
    /// of a deleted set leave the cache with it.
    func storedRelease(_ app: String) async throws -> Sigma_V1_ConfigRelease {
        let rows = try await store.query(
            """
            SELECT current, gray_version, gray_ordinals::text AS ordinals, gray_instances::text AS instances, revision
            FROM config_releases WHERE app = $1
            """, app)
        guard let row = rows.first else { throw RPCError.notFound("app \(app) has no config") }
        var release = Sigma_V1_ConfigRelease()
        release.app = app
        release.current = try row.decode(Int64.self, "current")
        release.grayVersion = try row.decode(Int64.self, "gray_version")
        release.grayOrdinals = Self.array(try row.decode(String.self, "ordinals")).compactMap { Int32($0) }
        release.grayInstances = Self.array(try row.decode(String.self, "instances"))
        release.revision = try row.decode(Int64.self, "revision")
        cache.store(release)
        if release.current == 0 { cache.forgetVersions(of: app) }
        return release
    }

    /// The release as last read, for the hot path; read from the database the first time.
    func cachedRelease(_ app: String) async throws -> Sigma_V1_ConfigRelease {
        if let release = cache.release(app) {
            guard release.current > 0 else { throw RPCError.notFound("app \(app) has no config") }
            return release
        }
        return try await release(app)
    }

    /// Removes every version of the set and leaves its release a tombstone (current 0) that keeps the numbering;
    /// refused while an app of that name runs with a config.
    func delete(_ app: String) async throws -> Sigma_V1_DeleteConfigResponse {
        let response = try await store.transaction(isolation: .serializable) { tx -> Sigma_V1_DeleteConfigResponse in
            _ = try await currentVersion(tx, app)
            if try await !tx.query("SELECT 1 FROM app_directory WHERE name = $1 AND has_config", app).isEmpty {
                throw RPCError.failedPrecondition(
                    "app \(app) runs with this config; delete the app, or apply it without config:, first")
            }
            let removed = try await tx.query(
                "DELETE FROM config_versions WHERE app = $1 RETURNING version", app).map { try $0.decode(Int64.self, "version") }
            let last = removed.max() ?? 0
            let rows = try await tx.query(
                """
                UPDATE config_releases SET current = 0, gray_version = 0, gray_ordinals = '{}', gray_instances = '{}',
                    revision = revision + 1, last_version = greatest(last_version, $2)
                WHERE app = $1 RETURNING revision
                """, app, last)
            try await tx.execute("SELECT pg_notify('sigma_config', $1)", "\(app) \(try rows[0].decode(Int64.self, "revision"))")
            var response = Sigma_V1_DeleteConfigResponse()
            response.versions = Int64(removed.count)
            response.lastVersion = last
            return response
        }
        _ = try? await storedRelease(app)
        logger.info("config deleted", metadata: ["app": "\(app)", "versions": "\(response.versions)"])
        return response
    }
}
