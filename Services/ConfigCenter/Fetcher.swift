import Core
import Foundation
import Logging
import Mustache
import Protocol
import RPC
import ClientKit
import ControlPlane
import Hosting
import Store

/// `FetchConfig`: what one instance should run — the gray version if it is one of the gray instances, else the
/// current one — with every template rendered for it; a long poll when the caller already has that version.
struct Fetcher: Sendable {
    let sets: ConfigSets
    let waiters: RevisionWaiters
    static let longestWait: Duration = .seconds(300)

    func fetch(_ request: Sigma_V1_FetchConfigRequest, context: RequestContext) async throws -> Sigma_V1_FetchConfigResponse {
        guard UUID(uuidString: request.instanceID) != nil else {
            throw RPCError.invalidArgument("instance_id: \"\(request.instanceID)\" is not a UUID")
        }
        let timeout = context.longPollBudget(.milliseconds(Int(request.waitMs)), cap: Self.longestWait)
        let deadline = ContinuousClock.now + max(timeout, .zero)
        while true {
            let release = try await sets.cachedRelease(request.app)
            let peers = try await instances(request.app)
            guard let me = peers.first(where: { $0.id == request.instanceID.lowercased() }) else {
                throw RPCError.notFound("app \(request.app) has no instance \(request.instanceID)")
            }
            let gray = release.grayVersion > 0
                && (release.grayOrdinals.contains(Int32(me.ordinal)) || release.grayInstances.contains(me.id))
            let version = gray ? release.grayVersion : release.current
            let left = deadline - .now
            if request.knownVersion == version && left > .zero {
                await waiters.wait(for: request.app, above: UInt64(release.revision), timeout: left)
                continue
            }
            let key = "\(request.app) \(version) \(me.id) \(release.revision) \(gray)"
            if let answer = sets.cache.rendered(key) { return answer }
            let answer = try render(try await sets.load(request.app, version: version), for: me, peers: peers, gray: gray, revision: release.revision)
            sets.cache.store(rendered: answer, key: key)
            return answer
        }
    }

    struct Member: Sendable {
        var id: String
        var ordinal: Int
        var ip: String
        var node: String
        var hostIP: String
        var idc: String
        var state: String
        var ready: Bool
        var ports: [String: Int]
    }

    func instances(_ app: String) async throws -> [Member] {
        if let members = sets.cache.members(app) { return members }
        let changes = sets.cache.membersChanges(app)
        let members = try await sets.store.query(
            """
            SELECT id::text AS id, ordinal, ip, node,
                   host_ip, idc, state, ready, host_ports::text AS ports
            FROM instance_directory
            WHERE app = $1 AND state <> 'Terminated' ORDER BY ordinal
            """, app
        ).map { row in
            Member(
                id: try row.decode(String.self, "id"), ordinal: try row.decode(Int.self, "ordinal"), ip: try row.decode(String.self, "ip"),
                node: try row.decode(String.self, "node"), hostIP: try row.decode(String.self, "host_ip"), idc: try row.decode(String.self, "idc"),
                state: try row.decode(String.self, "state"), ready: try row.decode(Bool.self, "ready"),
                ports: try row.decodeJSON([String: Int].self, "ports"))
        }
        sets.cache.store(members: members, of: app, changes: changes)
        return members
    }

    /// Every variable of `ConfigTemplate`, for `me` among `peers`.
    static func variables(app: String, version: Int64, me: Member, peers: [Member]) -> [String: Any] {
        [
            "instance": ["id": me.id, "name": "\(app)-\(me.ordinal)", "ordinal": me.ordinal, "ip": me.ip, "node": me.node],
            "host": ["ip": me.hostIP, "idc": me.idc, "ports": me.ports],
            "app": ["name": app],
            "config": ["version": version],
            "peers": peers.enumerated().map { index, peer -> [String: Any] in
                ["id": peer.id, "name": "\(app)-\(peer.ordinal)", "ordinal": peer.ordinal, "ip": peer.ip, "host_ip": peer.hostIP,
                 "node": peer.node, "idc": peer.idc, "state": peer.state, "ready": peer.ready, "ports": peer.ports,
                 "first": index == 0, "last": index == peers.count - 1]
            },
        ]
    }

    func render(_ version: Sigma_V1_ConfigVersion, for me: Member, peers: [Member], gray: Bool, revision: Int64) throws -> Sigma_V1_FetchConfigResponse {
        let variables = Self.variables(app: version.app, version: version.version, me: me, peers: peers)
        func render(_ text: String) throws -> String {
            // Config files are text, not HTML: nothing is escaped.
            try MustacheTemplate(string: "{{% CONTENT_TYPE: TEXT}}" + text).render(variables)
        }
        var response = Sigma_V1_FetchConfigResponse()
        response.app = version.app
        response.version = version.version
        response.gray = gray
        response.checksum = version.checksum
        response.revision = revision
        response.script = try render(version.script)
        response.files = try version.files.map { file in
            guard !file.raw else { return file }
            var rendered = file
            rendered.content = Data(try render(String(decoding: file.content, as: UTF8.self)).utf8)
            return rendered
        }
        return response
    }
}
