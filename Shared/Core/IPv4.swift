/// An IPv4 address as a number, with dotted-quad text.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Parses "a.b.c.d"; nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), let octet = UInt8(part),
                part == "0" || !part.hasPrefix("0")
            else { return nil }
            value = value << 8 | UInt32(octet)
        }
        self.value = value
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }
}

/// An IPv4 network in CIDR notation, "100.64.0.0/16".
public struct IPv4CIDR: Hashable, Sendable, CustomStringConvertible {
    public let network: IPv4Address
    public let prefixLength: Int

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        case hostBitsSet(String)

        public var description: String {
            switch self {
            case .malformed(let text): "'\(text)' is not an IPv4 CIDR such as 100.64.0.0/16"
            case .hostBitsSet(let text): "'\(text)' has host bits set; the network address is required"
            }
        }
    }

    public init(parsing text: String) throws(ParseError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4Address(String(parts[0])), let length = Int(parts[1]),
            (0...32).contains(length), parts[1].allSatisfy(\.isASCII)
        else { throw .malformed(text) }
        let mask: UInt32 = length == 0 ? 0 : ~UInt32(0) << (32 - length)
        guard address.value & ~mask == 0 else { throw .hostBitsSet(text) }
        network = address
        prefixLength = length
    }

    var mask: UInt32 { prefixLength == 0 ? 0 : ~UInt32(0) << (32 - prefixLength) }

    /// Number of addresses, network and broadcast included.
    public var size: UInt64 { UInt64(1) << (32 - prefixLength) }

    public var broadcast: IPv4Address { IPv4Address(network.value | ~mask) }

    public func contains(_ address: IPv4Address) -> Bool { address.value & mask == network.value }

    public func overlaps(_ other: IPv4CIDR) -> Bool { contains(other.network) || other.contains(network) }

    /// The addresses an allocator must never hand out by themselves: the network and broadcast addresses
    /// (for prefixes up to /30; a /31 or /32 has none).
    public var structurallyReserved: [IPv4Address] {
        prefixLength <= 30 ? [network, broadcast] : []
    }

    public var description: String { "\(network)/\(prefixLength)" }
}
