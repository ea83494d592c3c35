import Core
import Foundation
import NodeRuntime
import Protocol
import RPC

/// Config from the ConfigCenter: fetched rendered for each instance, written into its root filesystem before it
/// starts, and rewritten in place when a new version reaches it (a long poll per instance), followed by the app's
/// reload action.
struct ConfigDelivery: Sendable {
    let client: RPCClient

    /// Where the startup script goes inside the instance when the spec gives no command.
    static let scriptPath = "/.sigma/startup.sh"

    enum Failure: Error, CustomStringConvertible {
        case unavailable(String)
        case badPath(String)

        var description: String {
            switch self {
            case .unavailable(let text): return "config: \(text)"
            case .badPath(let text): return "config: \(text)"
            }
        }
    }

    /// The version this instance should run; with `known` and `wait`, waits for a newer one (nil when none came).
    func fetch(app: String, instance: String, known: Int64 = 0, wait: Duration = .zero) async throws -> Sigma_V1_FetchConfigResponse {
        var request = Sigma_V1_FetchConfigRequest()
        request.app = app
        request.instanceID = instance
        request.knownVersion = known
        let milliseconds = wait.components.seconds * 1000
        request.waitMs = UInt32(clamping: milliseconds)
        do {
            return try await client.call(ConfigMethods.fetch, request, timeout: wait + .seconds(5))
        } catch {
            throw Failure.unavailable("\(error)")
        }
    }

    /// Writes the files (and the startup script) under `rootfs`, each in place (an existing file keeps its inode,
    /// so a process holding it open or a bind mount of it sees the new content) and each resolved inside the
    /// instance's root, never through a link the instance made (`InstanceFiles`). In host mode the host's
    /// read-only folders cannot hold config files.
    /// The files and folders made are `owner`'s (the instance's user), so a secret 0400 is readable by it alone.
    static func write(_ answer: Sigma_V1_FetchConfigResponse, rootfs: String, hostMode: Bool, script: Bool,
                      owner: InstanceUser = .root) throws {
        // A mode left out is 0644, 0400 for a secret (its owner only; every instance runs as root today).
        var files = answer.files.map { ($0.path, $0.content, $0.mode != 0 ? Int($0.mode) : $0.secret ? 0o400 : 0o644) }
        if script && !answer.script.isEmpty { files.append((scriptPath, Data(answer.script.utf8), 0o755)) }
        for (path, content, mode) in files {
            do {
                _ = try InstanceFiles.components(of: path)
                if hostMode, let folder = AppSpec.readOnlyHostFolder(of: path) {
                    throw Failure.badPath("\(path) is under \(folder), the host's read-only view in host mode; use another folder")
                }
                try InstanceFiles.write(content, to: path, inRoot: rootfs, mode: mode_t(mode & 0o7777),
                                        owner: owner.uid == 0 && owner.gid == 0 ? nil : (owner.uid, owner.gid))
            } catch let refused as InstanceFiles.Refused {
                throw Failure.badPath(refused.description)
            }
        }
    }
}

extension Agent {
    /// Follows one instance's config: each new version is written in place, then the reload action runs.
    func watchConfig(_ id: String, generation: Int64, app: String, version: Int64) {
        configWatchers[id]?.cancel()
        configWatchers[id] = Task { [config] in
            var known = version
            var pause = Duration.milliseconds(200)
            while !Task.isCancelled {
                do {
                    let answer = try await config.fetch(app: app, instance: id, known: known, wait: .seconds(30))
                    pause = .milliseconds(200)
                    guard answer.version != known else { continue }
                    guard await self.configChanged(id, generation: generation, answer) else { return }
                    known = answer.version
                } catch {
                    if Task.isCancelled { return }
                    try? await Task.sleep(for: pause)
                    pause = min(pause * 2, .seconds(10))
                }
            }
        }
    }

    /// A new config version for a running instance; false when the instance is gone (the watch ends).
    func configChanged(_ id: String, generation: Int64, _ answer: Sigma_V1_FetchConfigResponse) async -> Bool {
        guard let instance = local[id], instance.assignment.generation == generation else { return false }
        if case .backoff = instance.phase {
            // Waiting to restart (a crash loop, a failed start): the next start fetches this version.
            retryNow(id, generation: generation)
            return true
        }
        do {
            try ConfigDelivery.write(answer, rootfs: runtime.directory(of: id) + "/rootfs",
                                     hostMode: instance.assignment.appSpec.runsOnHost, script: false,
                                     owner: await runtime.user(of: id))
            local[id]?.configVersion = answer.version
            logger.info("config written", metadata: ["instance": "\(id)", "version": "\(answer.version)"])
        } catch {
            logger.warning("config change not written", metadata: ["instance": "\(id)", "error": "\(error)"])
            return true
        }
        guard case .running = instance.phase, let reload = instance.lifecycle.reload else { return true }
        if !reload.signal.isEmpty, let number = signalNumber(reload.signal) {
            try? await runtime.signal(id, number)
        } else if !reload.command.isEmpty {
            let result = try? await runtime.exec(id, reload.command, timeout: .seconds(30))
            if result?.succeeded != true {
                logger.warning("reload command failed", metadata: ["instance": "\(id)", "status": "\(result?.status ?? -1)"])
            }
        }
        return true
    }
}
