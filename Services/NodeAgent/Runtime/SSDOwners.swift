import Foundation

/// Which instance last used each SSD of this node, kept in the agent's state folder (outside every SSD, where
/// no instance can change it). An SSD given to another instance — another app's, or another ordinal's — is
/// wiped first; the same instance gets its data back across its restarts and rollouts (its id stays).
public struct SSDOwners: Sendable {
    public let directory: String

    public init(stateDirectory: String) {
        directory = stateDirectory + "/ssd-owners"
    }

    func recordPath(_ ssd: String) -> String { directory + "/" + String(stableHash(ssd), radix: 16) }

    /// The instance that last used `ssd`, if one is on record.
    public func owner(of ssd: String) -> String? {
        guard let text = try? String(contentsOfFile: recordPath(ssd), encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n").map(String.init)
        // The record names its SSD too: two paths with one hash never share a record.
        guard lines.count == 2, lines[1] == ssd else { return nil }
        return lines[0]
    }

    public enum Failure: Error, CustomStringConvertible {
        case wipe(String, String)

        public var description: String {
            switch self {
            case .wipe(let ssd, let why): return "SSD \(ssd) could not be wiped for its new instance: \(why)"
            }
        }
    }

    /// Hands `ssd` to `instance`: unless `instance` was the last to use it, everything in `contents` (the
    /// folder holding the SSD's files: the directory itself, or where the device is mounted) is removed first
    /// (without following links, without crossing into other filesystems). An SSD with no record (the first
    /// use, or one used before the agent kept records) is taken as it is. Returns the instance it was wiped
    /// of, nil when it was not wiped.
    @discardableResult
    public func claim(_ ssd: String, contents: String, for instance: String) async throws -> String? {
        let previous = owner(of: ssd)
        var wiped: String?
        if let previous, previous != instance {
            let entries = try FileManager.default.contentsOfDirectory(atPath: contents)
            if !entries.isEmpty {
                let result = try await Subprocess.run(
                    Subprocess.find("rm") ?? "/bin/rm", ["-rf", "--one-file-system", "--"] + entries.map { contents + "/" + $0 })
                guard result.succeeded else { throw Failure.wipe(ssd, result.errors.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
            wiped = previous
        }
        if previous != instance {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try InstanceRuntime.writePrivately(Data("\(instance)\n\(ssd)\n".utf8), to: recordPath(ssd))
        }
        return wiped
    }
}
