import Core
import Foundation

/// What an instance on the node's own folders (`image: host`) is given: those folders read-only all the way
/// down (`rro`: a mount below one is read-only too), of the node's /etc only the harmless entries of
/// `AppSpec.hostModeEtc` (read-only), and an /etc, /tmp, /var and /run of its own in its writable root.
enum HostMode {
    /// Mount options of a read-only view of a host path, recursively (runc applies `rro` with mount_setattr).
    static let readOnly = ["rbind", "nosuid", "nodev", "ro", "rro"]

    /// Prepares `rootfs` and returns the mounts. `hostname` and `ip` go into the instance's /etc/hosts.
    static func prepare(rootfs: String, hostname: String, ip: String?, hostEtc: String = "/etc") throws -> [OCIConfig.Mount] {
        let fileManager = FileManager.default
        var mounts = AppSpec.hostModeFolders.filter { fileManager.fileExists(atPath: $0) }.map {
            OCIConfig.Mount(destination: $0, type: "bind", source: $0, options: readOnly)
        }
        for folder in [("/etc", 0o755), ("/tmp", 0o1777), ("/var", 0o755), ("/var/tmp", 0o1777), ("/var/lib", 0o755),
                       ("/var/log", 0o755), ("/var/cache", 0o755), ("/run", 0o755), ("/root", 0o700)] {
            try InstanceFiles.makeFolder(folder.0, inRoot: rootfs, mode: mode_t(folder.1))
        }
        for entry in entries(in: hostEtc) {
            let source = hostEtc + "/" + entry
            var facts = stat()
            guard lstat(source, &facts) == 0 else { continue }
            if facts.st_mode & S_IFMT == S_IFLNK {
                // A link (os-release → ../usr/lib/os-release) is made again as a link, not followed.
                guard let target = try? fileManager.destinationOfSymbolicLink(atPath: source) else { continue }
                try InstanceFiles.link(target, at: "/etc/" + entry, inRoot: rootfs)
            } else {
                mounts.append(OCIConfig.Mount(destination: "/etc/" + entry, type: "bind", source: source, options: readOnly))
            }
        }
        let files: [(String, String)] = [
            ("passwd", systemAccounts(in: (try? String(contentsOfFile: hostEtc + "/passwd", encoding: .utf8)) ?? "",
                                      fallback: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")),
            ("group", systemAccounts(in: (try? String(contentsOfFile: hostEtc + "/group", encoding: .utf8)) ?? "",
                                     fallback: "root:x:0:\nnogroup:x:65534:\n")),
            ("hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\(ip ?? "127.0.1.1")\t\(hostname)\n"),
            ("hostname", hostname + "\n"),
            ("resolv.conf", (try? String(contentsOfFile: hostEtc + "/resolv.conf", encoding: .utf8)) ?? ""),
        ]
        for (name, content) in files {
            try InstanceFiles.write(Data(content.utf8), to: "/etc/" + name, inRoot: rootfs, mode: 0o644)
        }
        try InstanceFiles.link("../proc/self/mounts", at: "/etc/mtab", inRoot: rootfs)
        return mounts
    }

    /// The allow-list's entries present on this node (`java-*` expanded).
    static func entries(in etc: String) -> [String] {
        AppSpec.hostModeEtc.flatMap { entry -> [String] in
            guard entry.hasSuffix("*") else { return [entry] }
            let prefix = String(entry.dropLast())
            return ((try? FileManager.default.contentsOfDirectory(atPath: etc)) ?? []).filter { $0.hasPrefix(prefix) }.sorted()
        }
    }

    /// The lines of a passwd or group file whose id (third field) is a system one (below 1000, or 65534 and
    /// up): the accounts packages run as, without the node's people.
    static func systemAccounts(in text: String, fallback: String) -> String {
        let kept = text.split(separator: "\n").filter { line in
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count > 2, let id = Int(fields[2]) else { return false }
            return id < 1000 || id >= 65534
        }
        return kept.isEmpty ? fallback : kept.joined(separator: "\n") + "\n"
    }
}
