import Core
import Foundation
import Logging

/// Runs instances as OCI bundles under runc, each watched by its own sigma-monitor, limited by its own cgroup.
public actor InstanceRuntime {
    public nonisolated let configuration: RuntimeConfiguration
    public nonisolated let images: ImageStore
    let logger: Logger
    var records: [String: LaunchRecord] = [:]

    /// Where the init is bound (read-only) inside every instance.
    public static let initPath = "/.sigma-init"

    public init(configuration: RuntimeConfiguration, logger: Logger) throws {
        guard access(configuration.runtime, X_OK) == 0 else {
            throw RuntimeError.missingProgram("the OCI runtime (runc)", configuration.runtime)
        }
        guard access(configuration.monitor, X_OK) == 0 else {
            throw RuntimeError.missingProgram("sigma-monitor", configuration.monitor)
        }
        if let initProgram = configuration.initProgram, access(initProgram, X_OK) != 0 {
            throw RuntimeError.missingProgram("the instances' init (tini-static)", initProgram)
        }
        self.configuration = configuration
        self.logger = logger
        try FileManager.default.createDirectory(atPath: configuration.stateDirectory + "/instances", withIntermediateDirectories: true)
        // An instance's folder holds its token (config.json), its config and its log: the node's root only.
        chmod(configuration.stateDirectory + "/instances", 0o700)
        try FileManager.default.createDirectory(atPath: configuration.stateDirectory + "/runc", withIntermediateDirectories: true)
        images = try ImageStore(directory: configuration.stateDirectory + "/images")
    }

    var runcRoot: String { configuration.stateDirectory + "/runc" }

    /// The node's lease, which the monitors of leased instances read.
    public nonisolated var lease: NodeLeaseFile { NodeLeaseFile(path: configuration.stateDirectory + "/lease") }

    /// Where every monitor appends when its copy started and when it was gone (CLOCK_BOOTTIME milliseconds):
    /// `BOOT_MS start ID` before the runtime runs it, `BOOT_MS stop ID ENDING` once it and its processes are
    /// reaped. The two bound each copy's life from outside, so overlaps between copies can be checked.
    public nonisolated var journal: String { configuration.stateDirectory + "/copies.log" }

    public nonisolated func directory(of id: String) -> String { configuration.stateDirectory + "/instances/" + id }

    public nonisolated func cgroup(of id: String) -> Cgroup {
        Cgroup(root: configuration.cgroupRoot, version: configuration.cgroupVersion, path: configuration.cgroupParent + "/" + id)
    }

    /// Who the instance runs as (root when it is unknown here, or its record predates users).
    public func user(of id: String) -> InstanceUser { records[id]?.user ?? .root }

    /// The instance's console log (stdout and stderr, rotated by the monitor).
    public nonisolated func logFile(of id: String) -> String { directory(of: id) + "/console.log" }
    /// The console log of the instance's run before the current one (the monitor keeps one).
    public nonisolated func previousLogFile(of id: String) -> String { directory(of: id) + "/console.previous.log" }

    /// Starts the instance and returns once its process runs. On any failure nothing is left behind but the
    /// instance's folder (its log and the reason), and the error says what failed. `ready` is awaited after the
    /// bundle is prepared and before the runtime runs it (the agent wires the network meanwhile).
    @discardableResult
    public func start(_ request: LaunchRequest, labels: [String: String] = [:],
                      ready: (@Sendable (InstanceUser) async throws -> Void)? = nil) async throws -> LaunchRecord {
        let directory = directory(of: request.id)
        let rootfs = directory + "/rootfs"
        try await prepareFolder(request.id, directory: directory, rootfs: rootfs)
        do {
            let root = try await rootFilesystem(request, directory: directory, rootfs: rootfs)
            var mounts = root.mounts
            let command = try command(request, defaults: root.defaults, mounts: &mounts)
            let cgroup = cgroup(of: request.id)
            cgroup.remove()
            try cgroup.create()
            try cgroup.apply(request.limits)
            let process = InstanceProcess(
                args: command, env: Self.environment(request, defaults: root.defaults), hostname: request.hostname, rootfs: rootfs,
                readonlyRoot: false, mounts: mounts + request.mounts, cgroupsPath: cgroup.runtimePath,
                networkNamespace: request.networkNamespace)
            let (config, user) = try ociConfig(process, request, defaults: root.defaults, rootfs: rootfs)
            try Self.writePrivately(try config.encoded(), to: directory + "/config.json")

            try await ready?(user)
            let pid = try await runMonitor(request.id, directory: directory, leased: request.leased)
            let record = LaunchRecord(
                id: request.id, pid: pid, imageDigest: root.digest, overlay: root.overlay,
                startedUnixMs: Int64(Date().timeIntervalSince1970 * 1000), labels: labels, user: user)
            try Self.writePrivately(try JSONEncoder().encode(record), to: directory + "/launch.json")
            records[request.id] = record
            return record
        } catch {
            await cleanUp(request.id, removeFolder: false)
            let reason: String
            switch error {
            case RuntimeError.startFailed(_, let text): reason = text
            default: reason = "\(error)"
            }
            // The monitor has not run (or failed): leave the reason where `ending` finds it.
            try? Data("failed \(reason)\n".utf8).write(to: URL(fileURLWithPath: directory + "/exit"))
            throw RuntimeError.startFailed(id: request.id, reason: reason)
        }
    }

    /// The instance's folder (its owner's alone), with what an earlier run left ended and removed.
    private func prepareFolder(_ id: String, directory: String, rootfs: String) async throws {
        let fileManager = FileManager.default
        try fileManager.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o700)
        try await endEarlierRun(id)
        for stale in ["exit", "pid", "config.json", "launch.json"] { unlink(directory + "/" + stale) }
        unmountRootfs(id)
        try fileManager.createDirectory(atPath: rootfs, withIntermediateDirectories: true)
    }

    /// Its root: the node's own folders read-only (`image: host`), or its image unpacked under an overlay.
    private func rootFilesystem(_ request: LaunchRequest, directory: String, rootfs: String) async throws
        -> (mounts: [OCIConfig.Mount], defaults: ImageDefaults, digest: String?, overlay: Bool) {
        guard request.image != .host else {
            do {
                let mounts = try HostMode.prepare(rootfs: rootfs, hostname: request.hostname, ip: request.env["SIGMA_INSTANCE_IP"])
                return (mounts, ImageDefaults(), nil, false)
            } catch let refused as InstanceFiles.Refused {
                throw RuntimeError.startFailed(id: request.id, reason: "host mode: \(refused)")
            }
        }
        let image = try await images.unpack(request.image)
        try mountOverlay(lower: image.rootfs, directory: directory)
        return ([], image.defaults, image.digest, true)
    }

    /// The spec's command and args, else the image's entrypoint and cmd; behind the init when there is one.
    private func command(_ request: LaunchRequest, defaults: ImageDefaults, mounts: inout [OCIConfig.Mount]) throws -> [String] {
        var command = (request.command.isEmpty ? defaults.entrypoint : request.command)
            + (request.args.isEmpty && request.command.isEmpty ? defaults.cmd : request.args)
        guard !command.isEmpty else {
            throw RuntimeError.startFailed(id: request.id, reason: "no command: the spec gives none and the image has none")
        }
        if let initProgram = configuration.initProgram {
            // -g: a signal goes to the command's whole process group; the command's own exit code is the
            // init's (a command ended by signal N exits 128+N).
            mounts.append(.bind(initProgram, at: Self.initPath, writable: false))
            command = [Self.initPath, "-g", "--"] + command
        }
        return command
    }

    /// The image's environment with the request's over it.
    static func environment(_ request: LaunchRequest, defaults: ImageDefaults) -> [String: String] {
        var environment: [String: String] = [:]
        for entry in defaults.env {
            let parts = entry.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { environment[String(parts[0])] = String(parts[1]) }
        }
        environment.merge(request.env) { _, new in new }
        return environment
    }

    /// config.json for `process`: its user (the spec's, else the image's, resolved in the instance's own
    /// /etc; never root with runAsNonRoot), its seccomp filter and its working folder.
    private func ociConfig(_ process: InstanceProcess, _ request: LaunchRequest, defaults: ImageDefaults, rootfs: String) throws
        -> (OCIConfig, InstanceUser) {
        var config = OCIConfig(process)
        let wanted = request.user.isEmpty ? defaults.user : request.user
        let user: InstanceUser
        do {
            user = try InstanceUser.resolve(wanted, rootfs: rootfs)
        } catch {
            throw RuntimeError.startFailed(id: request.id, reason: "\(error)")
        }
        if request.runAsNonRoot && user.uid == 0 {
            throw RuntimeError.startFailed(
                id: request.id, reason: "runAsNonRoot: it would run as root (uid 0\(wanted.isEmpty ? ", the image's user" : " from \"\(wanted)\"")); set security.user to another uid")
        }
        config.process.user = OCIConfig.User(uid: user.uid, gid: user.gid)
        if !request.unconfined {
            config.linux.seccomp = configuration.seccomp?.resolved(capabilities: Set(config.process.capabilities.bounding))
        }
        if !defaults.workingDir.isEmpty {
            // The image is the instance's: a working folder through /proc (runc before 1.1.12 leaks a host
            // folder's descriptor there, CVE-2024-21626) or outside the root is refused.
            let names = defaults.workingDir.split(separator: "/").map(String.init)
            guard defaults.workingDir.hasPrefix("/"), !names.contains(".."), !["proc", "sys", "dev"].contains(names.first ?? "") else {
                throw RuntimeError.startFailed(
                    id: request.id, reason: "the image's working folder \(defaults.workingDir) is refused: it must be an absolute path outside /proc, /sys and /dev")
            }
            config.process.cwd = defaults.workingDir
        }
        return (config, user)
    }

    /// sigma-monitor runs the bundle and answers "pid N" once the instance's process runs, or "error ...".
    private func runMonitor(_ id: String, directory: String, leased: Bool) async throws -> Int32 {
        let result = try await Subprocess.run(configuration.monitor, [
            "--runtime", configuration.runtime, "--root", runcRoot, "--bundle", directory, "--id", id,
            "--dir", directory, "--log-max-bytes", "\(configuration.logMaxBytes)", "--log-keep", "\(configuration.logKeep)",
            "--journal", journal,
        ] + (leased ? ["--lease", lease.path] : []))
        let answer = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard result.succeeded, answer.hasPrefix("pid "), let pid = Int32(answer.dropFirst(4)) else {
            let reason = answer.hasPrefix("error ") ? String(answer.dropFirst(6)) : "the monitor failed: \(answer) \(result.errors)"
            throw RuntimeError.startFailed(id: id, reason: reason)
        }
        return pid
    }

    /// Writes `data` to `path` readable by its owner only (0600), atomically: a temporary file renamed over it.
    static func writePrivately(_ data: Data, to path: String) throws {
        let temporary = path + ".tmp"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw RuntimeError.startFailed(id: path, reason: "cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == data.count, fchmod(fd, 0o600) == 0, rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw RuntimeError.startFailed(id: path, reason: "cannot write \(path): \(reason)")
        }
    }

    /// Ends what an earlier run of `id` left (a crash between start and clean-up, or a start over a live run):
    /// its container and every process in its cgroup, then waits until its monitor has written its ending and
    /// gone (it holds `monitor.lock` while it lives), so that ending is never read as the next run's.
    private func endEarlierRun(_ id: String) async throws {
        if FileManager.default.fileExists(atPath: runcRoot + "/" + id) {
            _ = try? await Subprocess.run(configuration.runtime, ["--root", runcRoot, "delete", "--force", id])
        }
        for pid in cgroup(of: id).tasks() { kill(pid, SIGKILL) }
        let lock = open(directory(of: id) + "/monitor.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else {
            throw RuntimeError.startFailed(id: id, reason: "monitor.lock: \(String(cString: strerror(errno)))")
        }
        defer { close(lock) }
        let deadline = ContinuousClock.now + .seconds(10)
        while flock(lock, LOCK_EX | LOCK_NB) != 0 {
            guard ContinuousClock.now < deadline else {
                throw RuntimeError.startFailed(id: id, reason: "the monitor of an earlier run has not ended within 10 s")
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    private func mountOverlay(lower: String, directory: String) throws {
        let upper = directory + "/upper", work = directory + "/work"
        // Each start begins from the image, as a restarted container does.
        try? FileManager.default.removeItem(atPath: upper)
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: upper, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let options = "lowerdir=\(lower),upperdir=\(upper),workdir=\(work)"
        if mount("overlay", directory + "/rootfs", "overlay", 0, options) != 0 {
            throw RuntimeError.startFailed(id: directory, reason: "overlay mount: \(String(cString: strerror(errno)))")
        }
    }

    private func unmountRootfs(_ id: String) {
        let rootfs = directory(of: id) + "/rootfs"
        while umount2(rootfs, Int32(MNT_DETACH)) == 0 {}
    }

    /// How the instance ended, or nil while it runs. Reads the monitor's exit file and the cgroup's OOM
    /// counter (call before `cleanUp`, which removes the cgroup).
    public func ending(of id: String) -> InstanceEnding? {
        guard let data = FileManager.default.contents(atPath: directory(of: id) + "/exit") else { return nil }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let oomKills = (try? cgroup(of: id).read().oomKills) ?? 0
        return Self.parseEnding(text, oomKills: oomKills)
    }

    static func parseEnding(_ text: String, oomKills: Int64) -> InstanceEnding {
        let parts = text.split(separator: " ", maxSplits: 1).map(String.init)
        let word = parts.first ?? "", rest = parts.count > 1 ? parts[1] : ""
        switch word {
        case "failed": return .failed(rest)
        case "fenced": return .fenced(rest)
        case "exited":
            let code = Int32(rest) ?? -1
            return oomKills > 0 && code == 128 + SIGKILL ? .oomKilled : .exited(code)
        case "signaled":
            let signal = Int32(rest) ?? 0
            return oomKills > 0 && signal == SIGKILL ? .oomKilled : .signaled(signal)
        default: return .failed("the monitor recorded no exit status (\(text))")
        }
    }

    /// Whether the instance's first process still runs (its pid is alive and inside its cgroup).
    public func isRunning(_ id: String) -> Bool {
        guard let record = records[id] ?? loadRecord(id) else { return false }
        return ending(of: id) == nil && processBelongs(record.pid, to: id)
    }

    nonisolated func processBelongs(_ pid: Int32, to id: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cgroup") else { return false }
        let suffix = cgroup(of: id).runtimePath
        return String(decoding: data, as: UTF8.self).split(separator: "\n").contains { $0.hasSuffix(suffix) }
    }

    /// Sends `signal` to the instance's first process (checked to still be the instance's, so a reused pid
    /// is never hit).
    public func signal(_ id: String, _ signal: Int32) throws {
        guard let record = records[id] ?? loadRecord(id) else { throw RuntimeError.unknownInstance(id) }
        if processBelongs(record.pid, to: id) { kill(record.pid, signal) }
    }

    /// Stops the instance: SIGTERM, then SIGKILL to the whole instance after `grace`. Returns how it ended.
    public func stop(_ id: String, grace: Duration) async -> InstanceEnding {
        if let ending = ending(of: id) { return ending }
        try? signal(id, SIGTERM)
        if let ending = await waitForEnding(id, within: grace) { return ending }
        // SIGKILL to the first process ends its pid namespace, so every other process of the instance too.
        try? signal(id, SIGKILL)
        for pid in cgroup(of: id).tasks() { kill(pid, SIGKILL) }
        return await waitForEnding(id, within: .seconds(10)) ?? .failed("did not end after SIGKILL")
    }

    /// Waits for the monitor's exit record, checking every 10 ms.
    public func waitForEnding(_ id: String, within limit: Duration) async -> InstanceEnding? {
        let deadline = ContinuousClock.now + limit
        while true {
            if let ending = ending(of: id) { return ending }
            if ContinuousClock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Runs `command` inside the running instance (its namespaces and cgroup) and returns how it ended; a
    /// command still running after `timeout` is killed.
    public func exec(_ id: String, _ command: [String], timeout: Duration) async throws -> ProgramResult {
        try await Subprocess.run(configuration.runtime, ["--root", runcRoot, "exec", id] + command, timeout: timeout)
    }

    /// Changes the limits of a running instance in place and returns what the cgroup now holds.
    public func update(_ id: String, limits: CgroupLimits) throws -> CgroupReading {
        let cgroup = cgroup(of: id)
        guard cgroup.exists else { throw RuntimeError.unknownInstance(id) }
        try cgroup.apply(limits)
        return try cgroup.read()
    }

    /// The cgroup's limits, usage and counters; nil when the instance has no cgroup.
    public func reading(_ id: String) -> CgroupReading? { try? cgroup(of: id).read() }

    /// Removes what a start made: the runtime's container, the cgroup, the overlay mount; with
    /// `removeFolder` also the instance's folder (its logs). Safe to call for anything, any number of times.
    public func cleanUp(_ id: String, removeFolder: Bool) async {
        _ = try? await Subprocess.run(configuration.runtime, ["--root", runcRoot, "delete", "--force", id])
        let cgroup = cgroup(of: id)
        for pid in cgroup.tasks() { kill(pid, SIGKILL) }
        cgroup.remove()
        unmountRootfs(id)
        records[id] = nil
        if removeFolder { try? FileManager.default.removeItem(atPath: directory(of: id)) }
    }

    func loadRecord(_ id: String) -> LaunchRecord? {
        guard let data = FileManager.default.contents(atPath: directory(of: id) + "/launch.json") else { return nil }
        return try? JSONDecoder().decode(LaunchRecord.self, from: data)
    }

    /// Every instance with a folder here: what was started, and how it ended if it did. A restarted agent
    /// calls this to re-adopt what still runs.
    public func found() -> [FoundInstance] {
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: configuration.stateDirectory + "/instances")) ?? []
        return ids.sorted().compactMap { id in
            guard let record = loadRecord(id) else { return nil }
            records[id] = record
            if let ending = ending(of: id) { return FoundInstance(record: record, ending: ending) }
            if processBelongs(record.pid, to: id) { return FoundInstance(record: record, ending: nil) }
            return FoundInstance(record: record, ending: .failed("its process is gone and no exit status was recorded"))
        }
    }

    /// Image digests the instances here use (for the image garbage collector).
    public func digestsInUse() -> Set<String> { Set(records.values.compactMap(\.imageDigest)) }
}
