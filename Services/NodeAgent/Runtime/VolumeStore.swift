import Core
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The volumes of the instances on this node (`AppSpec.volumes`), one set per app and ordinal:
/// `STATE/volumes/TEAM.APP/ORDINAL/NAME.img` is an ext4 image (sparse, so it takes only the room written), loop-
/// mounted at `.../NAME` while an instance of that ordinal runs here. The image outlives the instance: the
/// same ordinal finds its data again after a restart, a rolling update or a move back to this node. The team is
/// part of the key, so an app name another team takes later never finds the old data.
public struct VolumeStore: Sendable {
    public let directory: String

    public init(stateDirectory: String) { directory = stateDirectory + "/volumes" }

    /// The folder of one app's ordinal ("-" stands for no team; a team name never is "-").
    public func folder(team: String, app: String, ordinal: Int) -> String {
        "\(directory)/\(team.isEmpty ? "-" : team).\(app)/\(ordinal)"
    }

    /// Where the volume's filesystem is mounted once `prepare` has run.
    public func mountPoint(team: String, app: String, ordinal: Int, name: String) -> String {
        folder(team: team, app: app, ordinal: ordinal) + "/" + name
    }

    /// Makes the volume if the ordinal has none here yet (`fresh`), grows it to `sizeBytes` if it is smaller,
    /// and mounts it; returns the mount point. A volume is never shrunk (the filesystem may hold more).
    public func prepare(team: String, app: String, ordinal: Int, _ volume: VolumeSpec) async throws -> (path: String, fresh: Bool) {
        let folder = folder(team: team, app: app, ordinal: ordinal)
        let image = "\(folder)/\(volume.name).img", target = "\(folder)/\(volume.name)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let fresh = !FileManager.default.fileExists(atPath: image)
        let mounted = Self.isMounted(target)
        if fresh {
            try Self.allocate(image, bytes: volume.sizeBytes)
            try await Self.run("mkfs.ext4", ["-q", "-F", "-m", "0", "-L", String(volume.name.prefix(16)), image], for: volume)
        } else if !mounted, Self.size(of: image) < volume.sizeBytes {
            try Self.allocate(image, bytes: volume.sizeBytes)
            try await Self.run("e2fsck", ["-f", "-y", image], for: volume, okCodes: [0, 1])
            try await Self.run("resize2fs", [image], for: volume)
        }
        if !mounted {
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            try await Self.run("mount", ["-o", "loop,nosuid,nodev", image, target], for: volume)
        }
        return (target, fresh)
    }

    /// Unmounts the ordinal's volumes (the images stay); a busy mount is detached lazily. Bounded: a mount
    /// that will not go (listed, but refused with EINVAL) is left to the next release, not spun on.
    public func release(team: String, app: String, ordinal: Int, names: [String]) {
        for name in names {
            let target = mountPoint(team: team, app: app, ordinal: ordinal, name: name)
            for _ in 0..<8 where Self.isMounted(target) {
                if umount2(target, 0) != 0 { umount2(target, Int32(MNT_DETACH)) }
            }
        }
    }

    /// Unmounts every volume on the node (decommission).
    public func releaseAll() { unmount(below: directory) }

    /// Removes the ordinal's volumes from the node (their app was deleted or scaled below it, past the retention).
    public func remove(team: String, app: String, ordinal: Int) throws {
        let folder = folder(team: team, app: app, ordinal: ordinal)
        unmount(below: folder)
        // The images hold the data: they go, or this throws. A mount point a lazy unmount still holds may stay
        // behind a moment (EBUSY), empty; it goes with the next removal or the node's decommission.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] where name.hasSuffix(".img") {
            try FileManager.default.removeItem(atPath: folder + "/" + name)
        }
        try? FileManager.default.removeItem(atPath: folder)
        let appFolder = (folder as NSString).deletingLastPathComponent
        if (try? FileManager.default.contentsOfDirectory(atPath: appFolder))?.isEmpty == true { rmdir(appFolder) }
    }

    private func unmount(below folder: String) {
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return }
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 1, fields[1].hasPrefix(folder + "/") else { continue }
            umount2(String(fields[1]), Int32(MNT_DETACH))
        }
    }

    static func isMounted(_ path: String) -> Bool {
        ((try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? "").split(separator: "\n").contains {
            $0.split(separator: " ").dropFirst().first.map(String.init) == path
        }
    }

    static func size(of path: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
    }

    /// A sparse file of `bytes` (its owner's alone).
    static func allocate(_ path: String, bytes: Int64) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw RuntimeError.startFailed(id: path, reason: "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(bytes)) == 0 else {
            throw RuntimeError.startFailed(id: path, reason: "cannot size \(path): \(String(cString: strerror(errno)))")
        }
    }

    static func run(_ program: String, _ arguments: [String], for volume: VolumeSpec, okCodes: Set<Int32> = [0]) async throws {
        let candidates = ["/usr/sbin/\(program)", "/sbin/\(program)", "/usr/bin/\(program)", "/bin/\(program)"]
        guard let path = Subprocess.find(program) ?? candidates.first(where: { access($0, X_OK) == 0 }) else {
            throw RuntimeError.missingProgram("\(program) (e2fsprogs, util-linux)", program)
        }
        let result = try await Subprocess.run(path, arguments)
        guard okCodes.contains(result.status) else {
            throw RuntimeError.startFailed(id: volume.name, reason: "volume \(volume.name): \(program) failed: \(result.errors.suffix(300))")
        }
    }
}
