import Foundation

/// The uid and gid an instance's process runs as, and the files the agent writes for it are owned by.
public struct InstanceUser: Sendable, Equatable, Codable, CustomStringConvertible {
    public var uid: UInt32
    public var gid: UInt32

    public init(uid: UInt32, gid: UInt32) {
        self.uid = uid
        self.gid = gid
    }

    public static let root = InstanceUser(uid: 0, gid: 0)
    public var description: String { "\(uid):\(gid)" }

    public struct Unknown: Error, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    /// Resolves `text` (`UID[:GID]` or `NAME[:GROUP]`, empty: root) against the instance's own /etc/passwd and
    /// /etc/group under `rootfs` (read inside it, never through a link). A uid with no passwd entry and no
    /// group given runs with gid 0, as Docker does.
    public static func resolve(_ text: String, rootfs: String) throws -> InstanceUser {
        guard !text.isEmpty else { return .root }
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let passwd = entries(InstanceFiles.read("/etc/passwd", inRoot: rootfs))
        let uid: UInt32
        var gid: UInt32 = 0
        if let number = UInt32(parts[0]) {
            uid = number
            if let entry = passwd.first(where: { $0.count > 3 && UInt32($0[2]) == number }) { gid = UInt32(entry[3]) ?? 0 }
        } else {
            guard let entry = passwd.first(where: { $0.count > 3 && $0[0] == parts[0] }), let number = UInt32(entry[2]) else {
                throw Unknown(reason: "user \"\(parts[0].prefix(32))\" is not in the instance's /etc/passwd; give a uid")
            }
            uid = number
            gid = UInt32(entry[3]) ?? 0
        }
        if parts.count == 2 {
            if let number = UInt32(parts[1]) {
                gid = number
            } else {
                let groups = entries(InstanceFiles.read("/etc/group", inRoot: rootfs))
                guard let entry = groups.first(where: { $0.count > 2 && $0[0] == parts[1] }), let number = UInt32(entry[2]) else {
                    throw Unknown(reason: "group \"\(parts[1].prefix(32))\" is not in the instance's /etc/group; give a gid")
                }
                gid = number
            }
        }
        return InstanceUser(uid: uid, gid: gid)
    }

    static func entries(_ data: Data?) -> [[String]] {
        guard let data else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map {
            $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        }
    }
}
