import Core
import Foundation
import Logging
import Protocol
import RPC
import Store
import Synchronization

/// What `FetchConfig` reads on every call, kept in memory: releases (refreshed on each change notification),
/// versions (immutable), the instances of each app (dropped when Discovery's index of the app moves), and
/// rendered answers.
final class ConfigCache: Sendable {
    private let releases = Mutex<[String: Sigma_V1_ConfigRelease]>([:])
    private let versions = Mutex<[String: Sigma_V1_ConfigVersion]>([:])
    /// Each app's instances, and how many changes of them were announced (a list read before the latest is stale).
    private let members = Mutex<(lists: [String: [Fetcher.Member]], changes: [String: UInt64])>(([:], [:]))
    private let rendered = Mutex<[String: Sigma_V1_FetchConfigResponse]>([:])

    func release(_ app: String) -> Sigma_V1_ConfigRelease? { releases.withLock { $0[app] } }

    func store(_ release: Sigma_V1_ConfigRelease) {
        releases.withLock { releases in
            if (releases[release.app]?.revision ?? 0) <= release.revision { releases[release.app] = release }
        }
    }

    func version(_ app: String, _ version: Int64) -> Sigma_V1_ConfigVersion? { versions.withLock { $0["\(app) \(version)"] } }

    func store(_ version: Sigma_V1_ConfigVersion) {
        versions.withLock { versions in
            if versions.count > 10_000 { versions.removeAll() }
            versions["\(version.app) \(version.version)"] = version
        }
    }

    /// A deleted set's versions (and what was rendered from them) go: its numbers are never used again.
    func forgetVersions(of app: String) {
        versions.withLock { versions in versions = versions.filter { !$0.key.hasPrefix("\(app) ") } }
        rendered.withLock { rendered in rendered = rendered.filter { !$0.key.hasPrefix("\(app) ") } }
    }

    func members(_ app: String) -> [Fetcher.Member]? { members.withLock { $0.lists[app] } }

    /// The changes of the app's instances announced so far: read before reading the list, given to `store`.
    func membersChanges(_ app: String) -> UInt64 { members.withLock { $0.changes[app] ?? 0 } }

    /// Keeps a list whose read began after `changes` announcements, unless another came meanwhile (the read
    /// may have missed it). The notification's Discovery index is only a lower bound (migration 29): it can't
    /// say whether a list read at some index holds the change.
    func store(members list: [Fetcher.Member], of app: String, changes: UInt64) {
        members.withLock { members in
            if changes == (members.changes[app] ?? 0) { members.lists[app] = list }
        }
    }

    /// The app's instances changed (Discovery index `revision`): their list and every answer rendered from it go.
    func instancesChanged(_ app: String) {
        members.withLock { members in
            members.lists[app] = nil
            members.changes[app, default: 0] += 1
        }
        rendered.withLock { rendered in rendered = rendered.filter { !$0.key.hasPrefix("\(app) ") } }
    }

    func rendered(_ key: String) -> Sigma_V1_FetchConfigResponse? { rendered.withLock { $0[key] } }

    func store(rendered answer: Sigma_V1_FetchConfigResponse, key: String) {
        rendered.withLock { rendered in
            if rendered.count > 10_000 { rendered.removeAll() }
            rendered[key] = answer
        }
    }

    /// After the LISTEN connection came back: notifications may have been lost.
    func clear() {
        releases.withLock { $0.removeAll() }
        members.withLock { members in
            members.lists.removeAll()
            for app in members.changes.keys { members.changes[app]! += 1 }
        }
        rendered.withLock { $0.removeAll() }
    }
}
