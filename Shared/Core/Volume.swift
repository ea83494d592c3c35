/// A volume every instance of an app gets, one per ordinal: `web-2`'s `data` is the same filesystem across
/// its restarts, rolling updates and moves back to the node that holds it (docs/operations.md, "Volumes").
/// On the node it is an ext4 image of `sizeBytes` (sparse: it takes the room written), so an instance can
/// fill its volume and never the node.
public struct VolumeSpec: Hashable, Sendable, Codable {
    public var name: String
    public var mountPath: String
    public var sizeBytes: Int64

    /// The smallest volume: ext4's own structures need a few MiB.
    public static let minimumBytes: Int64 = 16 << 20
    /// The largest: 16 TiB, ext4's limit with 4 KiB blocks.
    public static let maximumBytes: Int64 = 16 << 40

    public enum CodingKeys: String, CodingKey { case name, mountPath, sizeBytes }

    public init(name: String, mountPath: String, sizeBytes: Int64) {
        self.name = name
        self.mountPath = mountPath
        self.sizeBytes = sizeBytes
    }

    /// Every problem with `volumes`, each naming its field (`volumes[1].mountPath`); `ssdPath` is where the
    /// app's SSD is mounted, if it has one.
    static func problems(_ volumes: [VolumeSpec], ssdPath: String?) -> [SpecProblem] {
        var problems: [SpecProblem] = []
        var names = Set<String>(), paths = Set<String>(ssdPath.map { [$0] } ?? [])
        for (index, volume) in volumes.enumerated() {
            let field = "volumes[\(index)]"
            func check(_ ok: Bool, _ name: String, _ reason: String) {
                if !ok { problems.append(SpecProblem(field: "\(field).\(name)", reason: reason)) }
            }
            check(AppSpec.isValidName(volume.name), "name", "\(volume.name.quotedForError) is not a volume name (lowercase letters, digits and '-')")
            check(names.insert(volume.name).inserted, "name", "\"\(volume.name)\" used twice")
            let parts = volume.mountPath.split(separator: "/")
            check(volume.mountPath.hasPrefix("/") && !parts.isEmpty && !parts.contains("..") && !parts.contains("."), "mountPath",
                  "\(volume.mountPath.quotedForError) is not an absolute path below /")
            check(!["proc", "sys", "dev"].contains(parts.first ?? ""), "mountPath", "\(volume.mountPath.quotedForError): not under /proc, /sys or /dev")
            check(paths.insert(volume.mountPath).inserted, "mountPath", "\"\(volume.mountPath)\" is mounted twice (another volume or the SSD)")
            check((minimumBytes...maximumBytes).contains(volume.sizeBytes), "size",
                  "\(Quantity.formatBytes(volume.sizeBytes)) is not between \(Quantity.formatBytes(minimumBytes)) and \(Quantity.formatBytes(maximumBytes))")
        }
        return problems
    }
}
