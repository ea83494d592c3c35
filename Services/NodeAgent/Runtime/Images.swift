import Foundation

/// Where an instance's root filesystem comes from (the spec's `image`).
public enum ImageReference: Hashable, Sendable, CustomStringConvertible {
    /// A read-only view of the host's /bin /lib /lib64 /sbin /usr /etc plus a writable folder of its own.
    case host
    /// An OCI image layout on this machine: `oci:PATH:TAG` (TAG defaults to "latest").
    case ociLayout(path: String, tag: String)
    /// A `docker save` tarball: `docker-archive:PATH`.
    case dockerArchive(path: String)
    /// A registry image through skopeo: `docker://NAME:TAG`.
    case registry(String)

    public init(parsing text: String) throws(ImageError) {
        if text == "host" || text.isEmpty {
            self = .host
        } else if text.hasPrefix("oci:") {
            let rest = text.dropFirst(4)
            // The tag follows the last colon unless that colon belongs to the path (no tag given).
            if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
                let tag = String(rest[rest.index(after: colon)...])
                self = .ociLayout(path: String(rest[..<colon]), tag: tag.isEmpty ? "latest" : tag)
            } else {
                self = .ociLayout(path: String(rest), tag: "latest")
            }
            if case .ociLayout(let path, _) = self, path.isEmpty { throw .badReference(text) }
        } else if text.hasPrefix("docker-archive:") {
            let path = String(text.dropFirst("docker-archive:".count))
            guard !path.isEmpty else { throw .badReference(text) }
            self = .dockerArchive(path: path)
        } else if text.hasPrefix("docker://") {
            self = .registry(text)
        } else {
            throw .badReference(text)
        }
    }

    public var description: String {
        switch self {
        case .host: return "host"
        case .ociLayout(let path, let tag): return "oci:\(path):\(tag)"
        case .dockerArchive(let path): return "docker-archive:\(path)"
        case .registry(let name): return name
        }
    }
}

public enum ImageError: Error, Equatable, CustomStringConvertible {
    case badReference(String)
    case notFound(String)
    case corrupt(String)
    case unpack(String)

    public var description: String {
        switch self {
        case .badReference(let text):
            return "image \"\(text)\": not a reference (use host, oci:PATH:TAG, docker-archive:PATH or docker://NAME)"
        case .notFound(let text): return "image \(text): not found"
        case .corrupt(let text): return "image \(text): corrupt"
        case .unpack(let text): return "image \(text)"
        }
    }
}

/// What an image says about how to run it, when the spec does not.
public struct ImageDefaults: Sendable, Equatable, Codable {
    public var entrypoint: [String] = []
    public var cmd: [String] = []
    public var env: [String] = []
    public var workingDir: String = ""
    /// The image's `User` (`UID[:GID]` or `NAME[:GROUP]`); empty: root.
    public var user: String = ""
}

/// An unpacked image: a read-only root filesystem shared by every instance of it.
public struct UnpackedImage: Sendable, Equatable {
    public var digest: String
    public var rootfs: String
    public var defaults: ImageDefaults
}

/// Unpacks images once per digest under `directory` and removes those no instance uses any more.
public actor ImageStore {
    public let directory: String
    let umoci: String
    let skopeo: String?

    public init(directory: String, umoci: String = "umoci", skopeo: String = "skopeo") throws {
        self.directory = directory
        self.umoci = Subprocess.find(umoci) ?? umoci
        self.skopeo = Subprocess.find(skopeo)
        try FileManager.default.createDirectory(atPath: directory + "/unpacked", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: directory + "/layouts", withIntermediateDirectories: true)
    }

    /// The unpacked image for `reference` (not for `.host`), unpacking it the first time.
    public func unpack(_ reference: ImageReference) async throws -> UnpackedImage {
        switch reference {
        case .host:
            throw ImageError.badReference("host")
        case .ociLayout(let path, let tag):
            return try await unpackLayout(path: path, tag: tag, name: reference.description)
        case .dockerArchive(let path):
            guard FileManager.default.fileExists(atPath: path) else { throw ImageError.notFound(reference.description) }
            let layout = try await copyToLayout(source: "docker-archive:\(path)", name: reference.description)
            return try await unpackLayout(path: layout, tag: "image", name: reference.description)
        case .registry(let name):
            let layout = try await copyToLayout(source: name, name: name)
            return try await unpackLayout(path: layout, tag: "image", name: name)
        }
    }

    /// skopeo converts other formats into an OCI layout of ours, named after the source.
    private func copyToLayout(source: String, name: String) async throws -> String {
        guard let skopeo else { throw ImageError.unpack("\(name): skopeo is not installed") }
        let key = String(stableHash(source), radix: 16)
        let layout = "\(directory)/layouts/\(key)"
        touch(layout)
        let result = try await Subprocess.run(skopeo, ["copy", "--quiet", source, "oci:\(layout):image"])
        guard result.succeeded else {
            throw ImageError.unpack("\(name): skopeo: \(result.errors.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return layout
    }

    private func unpackLayout(path: String, tag: String, name: String) async throws -> UnpackedImage {
        let manifestDigest = try Self.manifestDigest(layout: path, tag: tag, name: name)
        let hex = manifestDigest.replacingOccurrences(of: "sha256:", with: "")
        let target = "\(directory)/unpacked/\(hex)"
        let defaults = try Self.defaults(layout: path, manifestDigest: manifestDigest, name: name)
        if FileManager.default.fileExists(atPath: target + "/rootfs") {
            touch(target)
            return UnpackedImage(digest: manifestDigest, rootfs: target + "/rootfs", defaults: defaults)
        }
        let staging = "\(target).unpacking-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: staging) }
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        let result = try await Subprocess.run(umoci, ["raw", "unpack", "--image", "\(path):\(tag)", staging + "/rootfs"])
        guard result.succeeded else {
            throw ImageError.corrupt("\(name): \(result.errors.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        // Another start of the same image may have won the race; either copy is complete.
        if rename(staging, target) != 0 && !FileManager.default.fileExists(atPath: target + "/rootfs") {
            throw ImageError.unpack("\(name): cannot move the unpacked image into place: errno \(errno)")
        }
        return UnpackedImage(digest: manifestDigest, rootfs: target + "/rootfs", defaults: defaults)
    }

    /// Removes unpacked images whose digest is not in `inUse` and that were not used for `unusedFor` (a later
    /// start of the same image stays fast), and converted layouts and abandoned unpacks as old; returns the
    /// digests removed.
    @discardableResult
    public func collectGarbage(inUse: Set<String>, unusedFor: Duration = .zero) -> [String] {
        let cutoff = Date().addingTimeInterval(-Double(unusedFor.components.seconds))
        func old(_ path: String) -> Bool {
            let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? .distantPast
            return modified <= cutoff
        }
        let unpacked = directory + "/unpacked"
        var removed: [String] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: unpacked)) ?? [] {
            let path = "\(unpacked)/\(entry)"
            let digest = entry.contains(".unpacking-") ? nil : "sha256:" + entry
            if let digest, inUse.contains(digest) { continue }
            guard old(path) else { continue }
            try? FileManager.default.removeItem(atPath: path)
            if let digest { removed.append(digest) }
        }
        let layouts = directory + "/layouts"
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: layouts)) ?? [] where old("\(layouts)/\(entry)") {
            try? FileManager.default.removeItem(atPath: "\(layouts)/\(entry)")
        }
        return removed.sorted()
    }

    private func touch(_ path: String) { utime(path, nil) }

    static func manifestDigest(layout: String, tag: String, name: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: layout + "/index.json") else {
            throw ImageError.notFound(name)
        }
        guard let index = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let manifests = index["manifests"] as? [[String: Any]]
        else { throw ImageError.corrupt("\(name): index.json is not an image index") }
        for manifest in manifests {
            let annotations = manifest["annotations"] as? [String: String] ?? [:]
            if annotations["org.opencontainers.image.ref.name"] == tag, let digest = manifest["digest"] as? String,
               digest.hasPrefix("sha256:")
            {
                return digest
            }
        }
        throw ImageError.notFound(name)
    }

    static func blob(layout: String, digest: String, name: String) throws -> [String: Any] {
        let path = layout + "/blobs/sha256/" + digest.replacingOccurrences(of: "sha256:", with: "")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ImageError.corrupt("\(name): blob \(digest) is missing")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ImageError.corrupt("\(name): blob \(digest) is not JSON")
        }
        return object
    }

    static func defaults(layout: String, manifestDigest: String, name: String) throws -> ImageDefaults {
        let manifest = try blob(layout: layout, digest: manifestDigest, name: name)
        guard let config = manifest["config"] as? [String: Any], let configDigest = config["digest"] as? String else {
            throw ImageError.corrupt("\(name): the manifest names no config")
        }
        let image = try blob(layout: layout, digest: configDigest, name: name)
        let settings = image["config"] as? [String: Any] ?? [:]
        return ImageDefaults(
            entrypoint: settings["Entrypoint"] as? [String] ?? [], cmd: settings["Cmd"] as? [String] ?? [],
            env: settings["Env"] as? [String] ?? [], workingDir: settings["WorkingDir"] as? String ?? "",
            user: settings["User"] as? String ?? "")
    }
}

/// FNV-1a: the same value in every process (Swift's hashValue is seeded per process).
public func stableHash(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x100_0000_01b3
    }
    return hash
}
