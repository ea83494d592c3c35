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
    let bridgeTool: String
    /// Every instance veth's MTU: room for the VXLAN header (50 bytes) on a 1500-byte underlay.
    public let mtu: Int
    var bridgeSetUps: [String: Task<Void, Error>] = [:]
    var overlay: (vni: Int, localIP: String, port: Int)?
    var vxlanReady = false
    var programmed: [String: String] = [:]
    var wantedRoutes: [String: String] = [:]
    var programming = false

    public init(bridge: String, node: String = "", mtu: Int = 1450, ip: String = "ip") throws {
        guard !bridge.isEmpty, bridge.count <= 15, bridge.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw NetworkError.badAddress("bridge name \"\(bridge)\": at most 15 letters, digits, - or _")
        }
        guard node.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" }) else {
            throw NetworkError.badAddress("node name \"\(node)\": letters, digits, '.', '-' or '_'")
        }
        self.bridge = bridge
        self.node = node
        self.mtu = mtu
        self.ip = Subprocess.find(ip) ?? ip
        self.bridgeTool = Subprocess.find("bridge") ?? "bridge"
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
        try await ensureBridge(address: "\(gateway)/\(prefixLength)")
    }

    /// `address` nil: the bridge without an address (the overlay's, before any local instance).
    private func ensureBridge(address: String?) async throws {
        let key = address ?? ""
        if let setUp = bridgeSetUps[key] { return try await setUp.value }
        let setUp = Task { try await self.setUpBridge(address) }
        bridgeSetUps[key] = setUp
        do {
            try await setUp.value
        } catch {
            bridgeSetUps[key] = nil
            throw error
        }
    }

    /// Makes the bridge if it is missing, up, with `address` (when given) on it.
    private func setUpBridge(_ address: String?) async throws {
        guard let address else {
            var commands: [String] = []
            if if_nametoindex(bridge) == 0 { commands.append("link add \(bridge) type bridge") }
            commands.append("link set \(bridge) up")
            return try await batch(commands)
        }
        try await ensureBridge(address: nil)  // one set-up of the link itself, whatever addresses follow
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
            "link add \(host) mtu \(mtu) type veth peer name eth0 mtu \(mtu) address \(Self.mac(for: address)) netns \(namespace)",
            "link set \(host) master \(bridge) up",
            // With br_netfilter, a published port's DNAT is bridged, not routed: an instance that calls its own
            // published port needs its frame sent back out the port it came in on.
            "link set \(host) type bridge_slave hairpin on",
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
        _ = try? await Subprocess.run(ip, ["link", "delete", vxlan])
        _ = try? await Subprocess.run(ip, ["link", "delete", bridge, "type", "bridge"])
        bridgeSetUps.removeAll()
        vxlanReady = false
        programmed = [:]
    }

    // MARK: - The overlay

    /// Forgets the overlay's entries (an agent starting over): the VXLAN device goes, the next `program` makes it
    /// again with only the entries wanted then.
    public func resetOverlay() async {
        if if_nametoindex(vxlan) != 0 { _ = try? await Subprocess.run(ip, ["link", "delete", vxlan]) }
        vxlanReady = false
        programmed = [:]
    }

    /// An instance's MAC address, derived from its IP (02:42 then the four bytes), so every node knows the MAC of
    /// every instance IP without being told and a migrated instance keeps it.
    public nonisolated static func mac(for address: String) -> String {
        let bytes = address.split(separator: ".").map { UInt8($0) ?? 0 }
        return (["02", "42"] + bytes.map { String(format: "%02x", $0) }).joined(separator: ":")
    }

    /// The VXLAN device on the bridge that carries frames for remote instance IPs.
    public nonisolated var vxlan: String { "vx" + String(bridge.prefix(13)) }

    /// Turns the overlay on: `localIP` is this node's underlay address (the VXLAN tunnel's source).
    public func configureOverlay(vni: Int, localIP: String, port: Int = 4789) {
        overlay = (vni, localIP, port)
    }

    /// Makes every node's instance IPs reachable from here: `remote` maps each instance IP that runs on another
    /// node to that node's underlay address. Per IP, a VXLAN forwarding entry (its MAC → the node), a bridge entry
    /// (its MAC is behind the VXLAN port) and a neighbour entry (answered by the VXLAN device's ARP proxy) — the
    /// Docker-overlay model: IPs move between nodes, so there are no per-node subnets. Entries of IPs gone or now
    /// local are removed. Calls may overlap; the last wanted state wins.
    public func program(remote: [String: String]) async throws {
        wantedRoutes = remote
        guard !programming else { return }
        programming = true
        defer { programming = false }
        while programmed != wantedRoutes {
            let target = wantedRoutes
            try await apply(target)
            programmed = target
        }
    }

    private func apply(_ target: [String: String]) async throws {
        guard let overlay else { return }
        if target.isEmpty && programmed.isEmpty { return }
        if !vxlanReady {
            try await ensureBridge(address: nil)
            if if_nametoindex(vxlan) == 0 {
                try await batch([
                    "link add \(vxlan) mtu \(mtu) type vxlan id \(overlay.vni) dstport \(overlay.port) local \(overlay.localIP) nolearning proxy",
                ])
            }
            try await batch(["link set \(vxlan) master \(bridge) up"])
            vxlanReady = true
        }
        var removals: [String] = [], neighbourRemovals: [String] = []
        for (address, _) in programmed where target[address] == nil {
            let mac = Self.mac(for: address)
            removals += ["fdb del \(mac) dev \(vxlan) self", "fdb del \(mac) dev \(vxlan) master"]
            neighbourRemovals.append("neigh del \(address) dev \(vxlan)")
        }
        var additions: [String] = [], neighbours: [String] = []
        for (address, node) in target where programmed[address] != node {
            let mac = Self.mac(for: address)
            additions += ["fdb replace \(mac) dev \(vxlan) dst \(node) self permanent", "fdb replace \(mac) dev \(vxlan) master static"]
            neighbours.append("neigh replace \(address) lladdr \(mac) dev \(vxlan) nud permanent")
        }
        // Removals may meet entries already gone: -force goes on past those.
        if !removals.isEmpty { _ = try? await Subprocess.run(bridgeTool, ["-force", "-batch", "-"], input: Array((removals.joined(separator: "\n") + "\n").utf8)) }
        if !neighbourRemovals.isEmpty { _ = try? await Subprocess.run(ip, ["-force", "-batch", "-"], input: Array((neighbourRemovals.joined(separator: "\n") + "\n").utf8)) }
        if !additions.isEmpty {
            let result = try await Subprocess.run(bridgeTool, ["-batch", "-"], input: Array((additions.joined(separator: "\n") + "\n").utf8))
            guard result.succeeded else { throw NetworkError.command("bridge -batch -: \(result.errors.trimmingCharacters(in: .whitespacesAndNewlines))") }
            try await batch(neighbours)
        }
    }

    private func batch(_ commands: [String], namespace: String? = nil) async throws {
        let arguments = (namespace.map { ["-n", $0] } ?? []) + ["-batch", "-"]
        let result = try await Subprocess.run(ip, arguments, input: Array((commands.joined(separator: "\n") + "\n").utf8))
        guard result.succeeded else {
            throw NetworkError.command("ip \(arguments.joined(separator: " ")): \(result.errors.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
