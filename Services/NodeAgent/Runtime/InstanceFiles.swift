import CRootedFS
import Foundation

/// Files the agent writes into an instance (config files, the startup script), resolved inside the instance's
/// root and never through it. Everything under the root is the instance's to shape — it may have replaced any
/// folder with a symbolic link, a FIFO or a device node, or shipped one in its image — so each folder is opened
/// relative to the one before with openat2(2) `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`: a
/// symbolic link anywhere on the path, a mount point or anything but a folder and, last, a regular file is
/// refused with the name of what was in the way. Nothing is ever created or written outside the root, whatever
/// the instance does meanwhile (a link swapped in between two steps fails the next step).
public enum InstanceFiles {
    public struct Refused: Error, CustomStringConvertible, Equatable {
        /// The path asked for, inside the instance.
        public var path: String
        public var reason: String
        public var description: String { "cannot write \(path) inside the instance: \(reason)" }
    }

    /// Writes `content` at `path` (absolute, inside the instance) under `root`, in place: an existing regular file
    /// keeps its inode (a process holding it open or a bind of it sees the new content). Missing folders are made
    /// with `folderMode`; with `owner`, the file and the folders made are given to that uid and gid.
    public static func write(_ content: Data, to path: String, inRoot root: String, mode: mode_t,
                             owner: (uid: uid_t, gid: gid_t)? = nil, folderMode: mode_t = 0o755) throws {
        let names = try components(of: path)
        let folder = try openFolders(names.dropLast(), of: path, inRoot: root, mode: folderMode, owner: owner)
        defer { close(folder) }
        let flags = O_WRONLY | O_CREAT | O_NOCTTY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW
        let fd = sigma_openat2(folder, names[names.count - 1], UInt64(flags), UInt64(mode), resolve)
        guard fd >= 0 else { throw Refused(path: path, reason: "\(path) \(obstacle(errno))") }
        defer { close(fd) }
        // Opened without truncation: a FIFO or a device the instance put there is refused before anything is written.
        var facts = stat()
        guard fstat(fd, &facts) == 0 else { throw Refused(path: path, reason: errorText()) }
        guard facts.st_mode & S_IFMT == S_IFREG else { throw Refused(path: path, reason: "\(path) is not a regular file") }
        guard ftruncate(fd, 0) == 0 else { throw Refused(path: path, reason: "truncate: \(errorText())") }
        if let owner, fchown(fd, owner.uid, owner.gid) != 0 { throw Refused(path: path, reason: "chown: \(errorText())") }
        guard fchmod(fd, mode) == 0 else { throw Refused(path: path, reason: "chmod: \(errorText())") }
        try content.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < bytes.count {
                let written = Foundation.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { throw Refused(path: path, reason: "write: \(errorText())") }
                offset += written
            }
        }
    }

    /// Makes the folder `path` (and those above it) under `root` if missing, each resolved like a file's, and
    /// gives the last one `mode` (e.g. 01777 for /tmp).
    public static func makeFolder(_ path: String, inRoot root: String, mode: mode_t) throws {
        let names = try components(of: path)
        let parent = try openFolders(names.dropLast(), of: path, inRoot: root, mode: 0o755, owner: nil)
        defer { close(parent) }
        let folder = try openFolders(names.suffix(1), of: path, inRoot: root, mode: mode, owner: nil, from: parent)
        defer { close(folder) }
        // An O_PATH descriptor can't be chmod-ed; /proc/self/fd names the very folder opened, not a path.
        guard chmod("/proc/self/fd/\(folder)", mode) == 0 else { throw Refused(path: path, reason: "chmod: \(errorText())") }
    }

    /// The contents of the regular file `path` under `root` (at most `limit` bytes), resolved like a file the
    /// agent writes; nil when it is missing or refused (a link, not a regular file, too long).
    public static func read(_ path: String, inRoot root: String, limit: Int = 1 << 20) -> Data? {
        guard let names = try? components(of: path),
              let folder = try? openFolders(names.dropLast(), of: path, inRoot: root, mode: 0, owner: nil, create: false) else { return nil }
        defer { close(folder) }
        let fd = sigma_openat2(folder, names[names.count - 1], UInt64(O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW), 0, resolve)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var facts = stat()
        guard fstat(fd, &facts) == 0, facts.st_mode & S_IFMT == S_IFREG, facts.st_size <= limit else { return nil }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while data.count <= limit {
            let n = Foundation.read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            data.append(contentsOf: buffer[0..<n])
        }
        return data.count <= limit ? data : nil
    }

    /// Makes `path` under `root` a symbolic link to `target` (replacing a file or link there; never a folder),
    /// its folders resolved like a file's.
    public static func link(_ target: String, at path: String, inRoot root: String) throws {
        let names = try components(of: path)
        let folder = try openFolders(names.dropLast(), of: path, inRoot: root, mode: 0o755, owner: nil)
        defer { close(folder) }
        let name = names[names.count - 1]
        if unlinkat(folder, name, 0) != 0 && errno != ENOENT {
            throw Refused(path: path, reason: "\(path) \(obstacle(errno))")
        }
        guard symlinkat(target, folder, name) == 0 else { throw Refused(path: path, reason: "symlink: \(errorText())") }
    }

    /// Opens (making what is missing) the folders `names` below `root` (or below `start`), one at a time,
    /// refusing links, mount points and anything not a folder; the caller closes the descriptor returned.
    private static func openFolders(_ names: ArraySlice<String>, of path: String, inRoot root: String, mode: mode_t,
                                    owner: (uid: uid_t, gid: gid_t)?, from start: Int32? = nil, create: Bool = true) throws -> Int32 {
        var folder: Int32
        if let start {
            folder = dup(start)
        } else {
            folder = open(root, SIGMA_O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
            guard folder >= 0 else { throw Refused(path: path, reason: "the instance's root \(root): \(errorText())") }
        }
        // What is walked so far, for the reasons: the names before `names` when starting below the root.
        var walked = start == nil ? "" : path.split(separator: "/").dropLast(names.count).map { "/" + $0 }.joined()
        for name in names {
            walked += "/" + name
            var next = openFolder(folder, name)
            if next < 0 && errno == ENOENT && create {
                if mkdirat(folder, name, mode) != 0 && errno != EEXIST {
                    close(folder)
                    throw Refused(path: path, reason: "cannot make \(walked): \(errorText())")
                }
                if let owner { fchownat(folder, name, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) }
                next = openFolder(folder, name)
            }
            guard next >= 0 else {
                let code = errno
                close(folder)
                throw Refused(path: path, reason: "\(walked) \(obstacle(code))")
            }
            close(folder)
            folder = next
        }
        return folder
    }

    /// The names of an absolute path inside the instance; refused when it is not one (empty, relative, `.`, `..`).
    public static func components(of path: String) throws -> [String] {
        let names = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard path.hasPrefix("/"), !names.isEmpty, !names.contains(".."), !names.contains("."), !path.contains("\0") else {
            throw Refused(path: path, reason: "\"\(path)\" is not an absolute path inside the instance")
        }
        return names
    }

    private static let resolve = SIGMA_RESOLVE_BENEATH | SIGMA_RESOLVE_NO_SYMLINKS | SIGMA_RESOLVE_NO_XDEV

    private static func openFolder(_ parent: Int32, _ name: String) -> Int32 {
        sigma_openat2(parent, name, UInt64(SIGMA_O_PATH | O_DIRECTORY | O_CLOEXEC), 0, resolve)
    }

    private static func obstacle(_ code: Int32) -> String {
        switch code {
        case ELOOP: return "is a symbolic link; files are never written through links"
        case ENOTDIR: return "is not a folder"
        case EXDEV: return "is a mount point"
        case EISDIR: return "is a folder"
        case ENXIO, EWOULDBLOCK: return "is not a regular file"
        case ENOSYS: return "cannot be resolved safely: this kernel has no openat2 (Linux 5.6 or later is needed)"
        default: return String(cString: strerror(code))
        }
    }

    private static func errorText() -> String { String(cString: strerror(errno)) }
}
