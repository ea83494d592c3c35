import Core
import Foundation
import Logging
import Protocol
import RPC
import Store
import Synchronization

/// Each app's config sets: immutable versions (files + startup script), and the release — the current version
/// and, for a gray release, a version for chosen instances. Every change of a release raises its revision and
/// sends `NOTIFY sigma_config, '<app> <revision>'` in the same transaction.
struct ConfigSets: Sendable {
    let store: Store
    let logger: Logger
    /// Releases as last read (every read from the database refreshes it; notifications trigger reads) and
    /// versions (immutable), for `FetchConfig`.
    let cache = ConfigCache()

    static let maxFiles = 256
    static let maxFileBytes = 256 << 10
    static let maxSetBytes = 2 << 20

    // MARK: validation

    /// Limits, paths and templates; every template variable must be known (see `ConfigTemplate`).
    static func validate(_ files: [Sigma_V1_ConfigFile], script: String) throws {
        guard files.count <= maxFiles else { throw RPCError.resourceExhausted("files: \(files.count) files; at most \(maxFiles) per config set") }
        var paths = Set<String>()
        var total = script.utf8.count
        for file in files {
            let field = "files[\(file.path)]"
            guard file.path.hasPrefix("/"), file.path.count <= 1024, !file.path.split(separator: "/").contains(".."),
                  !file.path.hasSuffix("/"), !file.path.contains("\0")
            else { throw RPCError.invalidArgument("\(field).path: an absolute file path without '..', at most 1024 characters") }
            guard paths.insert(file.path).inserted else { throw RPCError.invalidArgument("\(field): the path appears twice") }
            guard file.content.count <= maxFileBytes else {
                throw RPCError.resourceExhausted("\(field): \(file.content.count) bytes; at most \(maxFileBytes) (256 KiB) per file")
            }
            guard file.mode <= 0o7777 else { throw RPCError.invalidArgument("\(field).mode: \(String(file.mode, radix: 8)) is not a file mode") }
            total += file.content.count
            guard !file.raw else { continue }
            guard let text = String(validating: file.content, as: UTF8.self) else {
                throw RPCError.invalidArgument("\(field): not UTF-8 text; mark binary files raw")
            }
            if let problem = ConfigTemplate.problems(in: text).first {
                throw RPCError.invalidArgument("\(field): template \(problem)")
            }
        }
        guard total <= maxSetBytes else {
            throw RPCError.resourceExhausted("config set: \(total) bytes; at most \(maxSetBytes) (2 MiB) in all")
        }
        if let problem = ConfigTemplate.problems(in: script).first {
            throw RPCError.invalidArgument("script: template \(problem)")
        }
    }

    static func encode(_ files: [Sigma_V1_ConfigFile]) throws -> String {
        let objects: [[String: Any]] = files.map {
            ["path": $0.path, "content": $0.content.base64EncodedString(), "mode": $0.mode != 0 ? $0.mode : $0.secret ? 0o400 : 0o644, "secret": $0.secret, "raw": $0.raw]
        }
        return String(decoding: try JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys]), as: UTF8.self)
    }

    static func decode(_ json: String) throws -> [Sigma_V1_ConfigFile] {
        let objects = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] ?? []
        return objects.map { object in
            var file = Sigma_V1_ConfigFile()
            file.path = object["path"] as? String ?? ""
            file.content = Data(base64Encoded: object["content"] as? String ?? "") ?? Data()
            file.mode = UInt32(clamping: object["mode"] as? Int ?? 0o644)
            file.secret = object["secret"] as? Bool ?? false
            file.raw = object["raw"] as? Bool ?? false
            return file
        }
    }

    /// Secrets are never shown outside FetchConfig: their content is replaced by a note of their size.
    static func redacted(_ files: [Sigma_V1_ConfigFile]) -> [Sigma_V1_ConfigFile] {
        files.map { file in
            guard file.secret else { return file }
            var shown = file
            shown.content = Data("<secret, \(file.content.count) bytes>".utf8)
            return shown
        }
    }

    // MARK: writing

    func publish(_ request: Sigma_V1_PublishConfigRequest) async throws -> Sigma_V1_PublishConfigResponse {
        try Self.validate(request.files, script: request.script)
        let gray = !request.grayOrdinals.isEmpty || !request.grayInstances.isEmpty
        let instances = try Self.instanceIDs(request.grayInstances)
        let json = try Self.encode(request.files)
        let version = try await store.transaction(isolation: .serializable) { tx -> Int64 in
            try await Self.refuseReadOnlyPaths(tx, app: request.app, files: request.files)
            let version = try await tx.query(
                """
                INSERT INTO config_versions (app, version, files, script, author, message, checksum)
                SELECT $1, greatest(coalesce(max(version), 0),
                                    coalesce((SELECT last_version FROM config_releases WHERE app = $1), 0)) + 1, $2::jsonb, $3, $4, $5,
                       encode(sha256(convert_to($2::jsonb::text || E'\\n' || $3::text, 'UTF8')), 'hex')
                FROM config_versions WHERE app = $1
                RETURNING version
                """, request.app, json, request.script, request.author, request.message)[0].decode(Int64.self, "version")
            if gray {
                let rows = try await tx.query("SELECT 1 FROM config_releases WHERE app = $1 AND current > 0", request.app)
                guard !rows.isEmpty else {
                    throw RPCError.failedPrecondition("app \(request.app) has no current config yet; publish one without gray instances first")
                }
                try await setRelease(tx, app: request.app, gray: (version, request.grayOrdinals.map(Int.init), instances))
            } else {
                try await setRelease(tx, app: request.app, current: version)
            }
            return version
        }
        logger.info("config published", metadata: ["app": "\(request.app)", "version": "\(version)", "gray": "\(gray)"])
        var response = Sigma_V1_PublishConfigResponse()
        response.version = try await get(request.app, version: version).version
        response.release = try await release(request.app)
        return response
    }

    /// An app that runs in host mode sees its node's /bin, /etc, /usr ... read-only: a file there could never be
    /// written, and every start would fail. Refused here, when it is published, not at the start.
    static func refuseReadOnlyPaths(_ tx: Transaction, app: String, files: [Sigma_V1_ConfigFile]) async throws {
        let blocked = files.compactMap { file in AppSpec.readOnlyHostFolder(of: file.path).map { (file.path, $0) } }
        guard let (path, folder) = blocked.first else { return }
        let hostMode = try await tx.query(
            """
            SELECT 1 FROM app_directory WHERE name = $1 AND image = $2 AND has_config
            """, app, AppSpec.hostImage)
        guard !hostMode.isEmpty else { return }
        throw RPCError.invalidArgument(
            "files.path: \(path) is under \(folder), which app \(app) (image host) sees read-only; use another folder (e.g. /conf)")
    }

    func rollback(_ request: Sigma_V1_RollbackConfigRequest) async throws -> Sigma_V1_PublishConfigResponse {
        _ = try await release(request.app)
        let old = try await load(request.app, version: request.to)
        var publish = Sigma_V1_PublishConfigRequest()
        publish.app = request.app
        publish.files = old.files
        publish.script = old.script
        publish.author = request.author
        publish.message = "rollback to version \(request.to)"
        return try await self.publish(publish)
    }

    func gray(_ request: Sigma_V1_GrayConfigRequest) async throws -> Sigma_V1_ConfigReleaseResponse {
        guard !request.ordinals.isEmpty || !request.instanceIds.isEmpty else {
            throw RPCError.invalidArgument("ordinals or instance_ids: name at least one instance")
        }
        let instances = try Self.instanceIDs(request.instanceIds)
        _ = try await release(request.app)
        _ = try await load(request.app, version: request.version)
        try await store.transaction(isolation: .serializable) { tx in
            let current = try await currentVersion(tx, request.app)
            guard current != request.version else { throw RPCError.failedPrecondition("version \(request.version) is already current") }
            try await setRelease(tx, app: request.app, gray: (request.version, request.ordinals.map(Int.init), instances))
        }
        return try await releaseResponse(request.app)
    }

    func promote(_ app: String) async throws -> Sigma_V1_ConfigReleaseResponse {
        try await store.transaction(isolation: .serializable) { tx in
            _ = try await currentVersion(tx, app)
            let gray = try await grayVersion(tx, app)
            guard gray > 0 else { throw RPCError.failedPrecondition("app \(app) has no gray version to promote") }
            try await setRelease(tx, app: app, current: gray)
        }
        logger.info("gray config promoted", metadata: ["app": "\(app)"])
        return try await releaseResponse(app)
    }

    func abandon(_ app: String) async throws -> Sigma_V1_ConfigReleaseResponse {
        try await store.transaction(isolation: .serializable) { tx in
            _ = try await currentVersion(tx, app)
            guard try await grayVersion(tx, app) > 0 else { throw RPCError.failedPrecondition("app \(app) has no gray version to abandon") }
            try await setRelease(tx, app: app, gray: (0, [], []))
        }
        return try await releaseResponse(app)
    }

    func currentVersion(_ tx: Transaction, _ app: String) async throws -> Int64 {
        guard let row = try await tx.query("SELECT current FROM config_releases WHERE app = $1 AND current > 0 FOR UPDATE", app).first else {
            throw RPCError.notFound("app \(app) has no config")
        }
        return try row.decode(Int64.self, "current")
    }

    private func grayVersion(_ tx: Transaction, _ app: String) async throws -> Int64 {
        guard let row = try await tx.query("SELECT gray_version FROM config_releases WHERE app = $1 FOR UPDATE", app).first else {
            throw RPCError.notFound("app \(app) has no config")
        }
        return try row.decode(Int64.self, "gray_version")
    }

    /// A new current version (any gray release ends), or a new gray release.
    private func setRelease(_ tx: Transaction, app: String, current: Int64? = nil, gray: (Int64, [Int], [String])? = nil) async throws {
        let rows: [Row]
        if let current {
            rows = try await tx.query(
                """
                INSERT INTO config_releases (app, current) VALUES ($1, $2)
                ON CONFLICT (app) DO UPDATE SET current = $2, gray_version = 0, gray_ordinals = '{}', gray_instances = '{}',
                    revision = config_releases.revision + 1
                RETURNING revision
                """, app, current)
        } else {
            let (version, ordinals, instances) = gray!
            rows = try await tx.query(
                """
                UPDATE config_releases SET gray_version = $2, gray_ordinals = $3::int[], gray_instances = $4::uuid[], revision = revision + 1
                WHERE app = $1 RETURNING revision
                """, app, version, ordinals, instances)
        }
        try await tx.execute("SELECT pg_notify('sigma_config', $1)", "\(app) \(try rows[0].decode(Int64.self, "revision"))")
    }

    static func instanceIDs(_ ids: [String]) throws -> [String] {
        try ids.map { id in
            guard UUID(uuidString: id) != nil else { throw RPCError.invalidArgument("instance_ids: \"\(id)\" is not a UUID") }
            return id.lowercased()
        }
    }

    // MARK: reading

    func load(_ app: String, version: Int64) async throws -> Sigma_V1_ConfigVersion {
        if let cached = cache.version(app, version) { return cached }
        let rows = try await store.query(
            """
            SELECT app, version, files::text AS files, script, author, message, checksum,
                   (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
            FROM config_versions WHERE app = $1 AND version = $2
            """, app, version)
        guard let row = rows.first else { throw RPCError.notFound("app \(app) has no config version \(version)") }
        let found = try Self.version(row, files: try Self.decode(try row.decode(String.self, "files")))
        cache.store(found)
        return found
    }

    static func version(_ row: Row, files: [Sigma_V1_ConfigFile]) throws -> Sigma_V1_ConfigVersion {
        var version = Sigma_V1_ConfigVersion()
        version.app = try row.decode(String.self, "app")
        version.version = try row.decode(Int64.self, "version")
        version.files = files
        version.script = try row.decode(String.self, "script")
        version.author = try row.decode(String.self, "author")
        version.message = try row.decode(String.self, "message")
        version.checksum = try row.decode(String.self, "checksum")
        version.createdUnixMs = try row.decode(Int64.self, "created_ms")
        return version
    }

    /// `{1,2,3}` → ["1", "2", "3"].
    static func array(_ text: String) -> [String] {
        text.trimmingCharacters(in: CharacterSet(charactersIn: "{}")).split(separator: ",").map(String.init)
    }

    func releaseResponse(_ app: String) async throws -> Sigma_V1_ConfigReleaseResponse {
        var response = Sigma_V1_ConfigReleaseResponse()
        response.release = try await release(app)
        return response
    }

    func get(_ app: String, version: Int64) async throws -> Sigma_V1_GetConfigResponse {
        let release = try await release(app)
        var found = try await load(app, version: version == 0 ? release.current : version)
        found.files = Self.redacted(found.files)
        var response = Sigma_V1_GetConfigResponse()
        response.version = found
        response.release = release
        return response
    }

    func history(_ app: String) async throws -> Sigma_V1_ConfigHistoryResponse {
        var response = Sigma_V1_ConfigHistoryResponse()
        response.release = try await release(app)
        for row in try await store.query(
            """
            SELECT app, version, files::text AS files, script, author, message, checksum,
                   (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
            FROM config_versions WHERE app = $1 ORDER BY version
            """, app)
        {
            // Paths and modes only: contents are for GetConfig.
            let files = try Self.decode(try row.decode(String.self, "files")).map { file -> Sigma_V1_ConfigFile in
                var listed = file
                listed.content = Data()
                return listed
            }
            var version = try Self.version(row, files: files)
            version.script = ""
            response.versions.append(version)
        }
        return response
    }

    func diff(_ request: Sigma_V1_DiffConfigRequest) async throws -> Sigma_V1_DiffConfigResponse {
        _ = try await release(request.app)
        let from = try await load(request.app, version: request.from)
        let to = try await load(request.app, version: request.to)
        var response = Sigma_V1_DiffConfigResponse()
        let old = Dictionary(uniqueKeysWithValues: from.files.map { ($0.path, $0) })
        let new = Dictionary(uniqueKeysWithValues: to.files.map { ($0.path, $0) })
        for path in Set(old.keys).union(new.keys).sorted() {
            var change = Sigma_V1_FileDiff()
            change.path = path
            switch (old[path], new[path]) {
            case (nil, let added?):
                change.change = "added"
                change.diff = added.secret ? "" : TextDiff.unified(from: "", to: String(decoding: added.content, as: UTF8.self), name: path)
            case (let removed?, nil):
                change.change = "removed"
                change.diff = removed.secret ? "" : TextDiff.unified(from: String(decoding: removed.content, as: UTF8.self), to: "", name: path)
            case (let a?, let b?):
                if a.content == b.content && a.secret == b.secret && a.raw == b.raw {
                    guard a.mode != b.mode else { continue }
                    change.change = "mode"
                    change.diff = "mode \(String(a.mode, radix: 8)) → \(String(b.mode, radix: 8))"
                } else if a.secret || b.secret {
                    change.change = "secret"
                } else {
                    change.change = "changed"
                    change.diff = TextDiff.unified(
                        from: String(decoding: a.content, as: UTF8.self), to: String(decoding: b.content, as: UTF8.self), name: path)
                }
            default: continue
            }
            response.files.append(change)
        }
        if from.script != to.script {
            response.scriptChanged = true
            response.scriptDiff = TextDiff.unified(from: from.script, to: to.script, name: "script")
        }
        return response
    }
}
