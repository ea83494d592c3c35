import Core
import Foundation

/// An instance's place on the node's network: its namespace and the veth pair that joins it to the bridge.
public struct InstanceNetwork: Sendable, Equatable {
    public var namespace: String
    public var hostInterface: String
    public var ip: String
    public var prefixLength: Int
    public var gateway: String

    /// The path runc's config.json names for the network namespace.
    public var namespacePath: String { "/run/netns/\(namespace)" }
}

public enum NetworkError: Error, CustomStringConvertible {
    case badAddress(String)
    case command(String)

    public var description: String {
        switch self {
        case .badAddress(let text): return "network: \(text)"
        case .command(let text): return "network: \(text)"
        }
    }
}

/// The node-local network: one Linux bridge holding the gateway address, and per instance a network
/// namespace with loopback and an `eth0` (one end of a veth pair whose other end is on the bridge) carrying
/// the instance's Allocator IP and a default route through the gateway. Cross-node routing is the overlay's.
public actor NodeNetwork {
    public let bridge: String
    /// The node's name: instance namespaces are named after it ("sigma-<node>-<hash>"), as namespace names are
    /// shared by every network namespace of the machine (several test hosts run on one).
    public let node: String
    let ip: String
    var bridgeSetUps: [String: Task<Void, Error>] = [:]

    public init(bridge: String, node: String = "", ip: String = "ip") throws {
        guard !bridge.isEmpty, bridge.count <= 15, bridge.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw NetworkError.badAddress("bridge name \"\(bridge)\": at most 15 letters, digits, - or _")
        }
        guard node.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" }) else {
            throw NetworkError.badAddress("node name \"\(node)\": letters, digits, '.', '-' or '_'")
        }
        self.bridge = bridge
        self.node = node
        self.ip = Subprocess.find(ip) ?? ip
    }

    /// The names one instance's network uses: its namespace, unique per node, bridge and instance, and the veth's
    /// end on the bridge (within Linux's 15 characters).
    public nonisolated func names(for id: String) -> (namespace: String, hostInterface: String) {
        let hash = String(stableHash(node + "/" + bridge + "/" + id), radix: 16)
        let short = String(hash.prefix(11))
        return ("\(namespacePrefix)\(hash)", "vs\(short)")
    }

    /// What every instance namespace of this node's network begins with.
    public nonisolated var namespacePrefix: String { node.isEmpty ? "sigma-\(bridge)-" : "sigma-\(node)-\(bridge)-" }

    /// The namespace path `attach` makes for the instance (known before it does).
    public nonisolated func namespacePath(for id: String) -> String { "/run/netns/" + names(for: id).namespace }

    /// Makes the bridge (once) with `gateway/prefixLength` on it, up. Concurrent callers share one set-up.
    public func ensureBridge(gateway: String, prefixLength: Int) async throws {
        let address = "\(gateway)/\(prefixLength)"
        if let setUp = bridgeSetUps[address] { return try await setUp.value }
        let setUp = Task { try await self.setUpBridge(address) }
        bridgeSetUps[address] = setUp
        do {
            try await setUp.value
        } catch {
            bridgeSetUps[address] = nil
            throw error
        }
    }

    private func setUpBridge(_ address: String) async throws {
        let exists = try await Subprocess.run(ip, ["link", "show", "dev", bridge]).succeeded
        var commands: [String] = []
        if !exists { commands.append("link add \(bridge) type bridge") }
        commands.append("link set \(bridge) up")
        try await batch(commands)
        let shown = try await Subprocess.check(ip, ["-4", "-o", "addr", "show", "dev", bridge])
        if !shown.contains(" \(address) ") {
            try await batch(["addr add \(address) dev \(bridge)"])
        }
    }

    /// Gives the instance its namespace and address. Idempotent: an existing namespace is replaced.
    public func attach(_ id: String, ip address: String, prefixLength: Int, gateway: String) async throws -> InstanceNetwork {
        guard IPv4Address(address) != nil, IPv4Address(gateway) != nil, (1...32).contains(prefixLength) else {
            throw NetworkError.badAddress("\(address)/\(prefixLength) via \(gateway) is not an IPv4 address and gateway")
        }
        try await ensureBridge(gateway: gateway, prefixLength: prefixLength)
        let (namespace, host) = names(for: id)
        await detach(id)
        // Two batches, one in the node's namespace and one in the instance's: two process starts in all.
        try await batch([
            "netns add \(namespace)",
            "link add \(host) type veth peer name eth0 netns \(namespace)",
            "link set \(host) master \(bridge) up",
        ])
        do {
            try await batch([
                "link set lo up",
                "addr add \(address)/\(prefixLength) dev eth0",
                "link set eth0 up",
                "route add default via \(gateway) dev eth0",
            ], namespace: namespace)
        } catch {
            await detach(id)
            throw error
        }
        return InstanceNetwork(namespace: namespace, hostInterface: host, ip: address, prefixLength: prefixLength, gateway: gateway)
    }

    /// Removes the instance's namespace (and with it both ends of its veth pair). Safe to repeat.
    public func detach(_ id: String) async {
        let (namespace, host) = names(for: id)
        if FileManager.default.fileExists(atPath: "/run/netns/\(namespace)") {
            _ = try? await Subprocess.run(ip, ["netns", "delete", namespace])
        }
        // A pair whose namespace went away some other way leaves nothing; one that never moved is removed here.
        // (if_nametoindex asks this network namespace; /sys may show another one's.)
        if if_nametoindex(host) != 0 {
            _ = try? await Subprocess.run(ip, ["link", "delete", host])
        }
    }

    /// Removes the bridge (tests, and an operator decommissioning the node).
    public func removeBridge() async {
        _ = try? await Subprocess.run(ip, ["link", "delete", bridge, "type", "bridge"])
        bridgeSetUps.removeAll()
    }

    private func batch(_ commands: [String], namespace: String? = nil) async throws {
        let arguments = (namespace.map { ["-n", $0] } ?? []) + ["-batch", "-"]
        let result = try await Subprocess.run(ip, arguments, input: Array((commands.joined(separator: "\n") + "\n").utf8))
        guard result.succeeded else {
            throw NetworkError.command("ip \(arguments.joined(separator: " ")): \(result.errors.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
