import Core
import Foundation

/// One published port: host IP:`hostPort` → instance IP:`containerPort`.
public struct PortMapping: Hashable, Sendable {
    public var instance: String
    public var transport: String  // "tcp" or "udp"
    public var hostPort: Int
    public var instanceIP: String
    public var containerPort: Int

    public init(instance: String, transport: String, hostPort: Int, instanceIP: String, containerPort: Int) {
        self.instance = instance
        self.transport = transport
        self.hostPort = hostPort
        self.instanceIP = instanceIP
        self.containerPort = containerPort
    }
}

/// The host-compatible network: nftables DNAT from the node's IP and an allocated port to an instance's IP and
/// container port — for traffic from other hosts, from the node itself and (hairpin, masqueraded) from instances
/// on the same node, the published instance itself included. (When br_netfilter is on, as with Docker, the DNAT
/// of traffic from the bridge is bridged, not routed: there the postrouting hook sees no input interface, and an
/// instance calling its own port is masqueraded by the `itself` set, "instance IP . instance IP", so that its
/// kernel does not drop a packet from its own address; its bridge port is in hairpin mode.) Each mapped port is also held by a socket of the agent's, so nothing else on the node can
/// bind it. Instances reach the node itself only through what is published; what they send beyond the node (the
/// control plane, other hosts) leaves with the node's address. One table per agent
/// (`ip sigma_<bridge>`), removed with everything in it by `removeTable`.
public actor HostPorts {
    public let table: String
    let bridge: String
    let hostIP: String
    let nft: String
    var ready = false
    var mappings: [PortMapping: [Int32]] = [:]
    /// The overlay's VXLAN port, which no instance may send to (a datagram to another node's would be taken
    /// for a frame of the overlay, with any source inside).
    let overlayPort: Int
    /// Each guarded instance's bridge port, IP and MAC (the `own` set's element).
    var guarded: [String: String] = [:]
    /// What instances may reach of the control plane and of other nodes.
    public let reach: Reach
    /// Other nodes' underlay addresses, as last set (`setNodes`), and as the table holds them.
    var nodes: Set<String> = []
    var appliedNodes: Set<String> = []
    var settingUp: Task<Void, Error>?

    /// The control plane's hosts, of which instances reach only Discovery and the config center (`services`,
    /// TCP), and the host-port range, the only ports instances reach on any node (published ports).
    public struct Reach: Sendable, Equatable {
        public var controlHosts: [String]
        public var services: [String]  // "address . port"
        public var hostPorts: ClosedRange<Int>

        public init(controlHosts: [String] = [], services: [(host: String, port: Int)] = [], hostPorts: ClosedRange<Int> = HostPortRange.default) {
            self.controlHosts = controlHosts.filter { IPv4Address($0) != nil }
            self.services = services.filter { IPv4Address($0.host) != nil }.map { "\($0.host) . \($0.port)" }
            self.hostPorts = hostPorts
        }
    }

    public init(bridge: String, hostIP: String, overlayPort: Int = 4789, reach: Reach = Reach(), nft: String = "nft") {
        table = "sigma_" + bridge.replacingOccurrences(of: "-", with: "_")
        self.bridge = bridge
        self.hostIP = hostIP
        self.overlayPort = overlayPort
        self.reach = reach
        self.nft = Subprocess.find(nft) ?? Subprocess.find("/usr/sbin/nft") ?? nft
    }

    /// The table, its chains and maps; IP forwarding on. Made before the first instance starts (every
    /// instance needs the egress masquerade and the input filter, published ports or not); made anew only
    /// after `removeTable`.
    public func setUp() async throws {
        guard !ready else { return }
        // One set-up at a time: a second made while the first ran would delete what was added in between.
        if let settingUp { return try await settingUp.value }
        let task = Task { try await self.makeTables() }
        settingUp = task
        defer { settingUp = nil }
        try await task.value
        ready = true
        try await syncNodes()
    }

    private func makeTables() async throws {
        appliedNodes = nodes
        try? Data("1\n".utf8).write(to: URL(fileURLWithPath: "/proc/sys/net/ipv4/ip_forward"))
        let script = """
            table ip \(table)
            delete table ip \(table)
            table ip \(table) {
                map published {
                    type inet_proto . inet_service : ipv4_addr . inet_service
                }
                set itself {
                    type ipv4_addr . ipv4_addr
                }
                set control {
                    type ipv4_addr
                    \(Self.elements(reach.controlHosts))
                }
                set services {
                    type ipv4_addr . inet_service
                    \(Self.elements(reach.services))
                }
                set nodes {
                    type ipv4_addr
                    \(Self.elements(Array(appliedNodes.union([hostIP])).sorted()))
                }
                chain prerouting {
                    type nat hook prerouting priority dstnat; policy accept;
                    ip daddr \(hostIP) dnat ip to meta l4proto . th dport map @published
                }
                chain output {
                    type nat hook output priority -100; policy accept;
                    ip daddr \(hostIP) dnat ip to meta l4proto . th dport map @published
                }
                chain postrouting {
                    type nat hook postrouting priority srcnat; policy accept;
                    oifname "\(bridge)" ct status dnat iifname "\(bridge)" masquerade
                    oifname "\(bridge)" ct status dnat ip saddr . ip daddr @itself masquerade
                    iifname "\(bridge)" oifname != "\(bridge)" masquerade
                }
                chain input {
                    type filter hook input priority filter; policy accept;
                    udp dport \(overlayPort) ip saddr != @nodes counter drop
                    iifname "\(bridge)" ct state established,related accept
                    iifname "\(bridge)" ct status dnat accept
                    iifname "\(bridge)" drop
                }
                chain forward {
                    type filter hook forward priority filter; policy accept;
                    iifname != "\(bridge)" accept
                    ct state established,related accept
                    ip daddr . tcp dport @services accept
                    ip daddr @control counter drop
                    ip daddr @nodes meta l4proto { tcp, udp } th dport \(reach.hostPorts.lowerBound)-\(reach.hostPorts.upperBound) counter accept
                    ip daddr @nodes counter drop
                }
            }
            table bridge \(table)
            delete table bridge \(table)
            table bridge \(table) {
                set ports {
                    type ifname
                }
                set own {
                    type ifname . ipv4_addr . ether_addr
                }
                chain prerouting {
                    type filter hook prerouting priority filter; policy accept;
                    iifname != @ports accept
                    ether type arp iifname . arp saddr ip . arp saddr ether @own accept
                    ether type != ip drop
                    iifname . ip saddr . ether saddr != @own drop
                    udp dport \(overlayPort) counter drop
                }
            }

            """
        try await run(script)
    }

    /// Publishes `mapping`: holds the port (when something else holds it already, the DNAT entry still wins for
    /// traffic to the node's IP, and `warning` says so), then adds the DNAT entry.
    @discardableResult
    public func publish(_ mapping: PortMapping) async throws -> String? {
        try await setUp()
        if mappings[mapping] != nil { return nil }
        var warning: String?
        var held: [Int32] = []
        do {
            held = try hold(mapping)
        } catch {
            warning = "\(error)"
        }
        do {
            try await run("""
                add element ip \(table) published { \(mapping.transport) . \(mapping.hostPort) : \(mapping.instanceIP) . \(mapping.containerPort) }
                add element ip \(table) itself { \(mapping.instanceIP) . \(mapping.instanceIP) }

                """)
        } catch {
            held.forEach { close($0) }
            throw error
        }
        mappings[mapping] = held
        return warning
    }

    /// Removes every mapping and the guard of `instance` and lets its ports go.
    public func unpublish(instance: String) async {
        await unguard(instance: instance)
        var addresses = Set<String>()
        for (mapping, held) in mappings where mapping.instance == instance {
            _ = try? await run("delete element ip \(table) published { \(mapping.transport) . \(mapping.hostPort) }\n")
            held.forEach { close($0) }
            mappings[mapping] = nil
            addresses.insert(mapping.instanceIP)
        }
        for address in addresses where !mappings.keys.contains(where: { $0.instanceIP == address }) {
            _ = try? await run("delete element ip \(table) itself { \(address) . \(address) }\n")
        }
    }

    public func published() -> [PortMapping] { Array(mappings.keys) }

    /// Lets frames from the instance's bridge port `interface` through only with its own IP and MAC (IPv4 and
    /// ARP; nothing else: no IPv6, no other ether type) and none to the overlay's port. Done before the instance
    /// runs. (The bridge family has no match on the bridge here (no `meta ibrname`), so the rules name this
    /// node's instance ports: several agents may share one network namespace, each with its own bridge.)
    public func guardInstance(_ instance: String, interface: String, ip: String, mac: String) async throws {
        try await setUp()
        let element = "\(interface) . \(ip) . \(mac)"
        if guarded[instance] == element { return }
        await unguard(instance: instance)
        try await run("""
            add element bridge \(table) ports { \(interface) }
            add element bridge \(table) own { \(element) }

            """)
        guarded[instance] = element
    }

    /// The other nodes' underlay addresses (from the routes): instances reach them only on host ports.
    public func setNodes(_ addresses: Set<String>) async throws {
        nodes = addresses.filter { IPv4Address($0) != nil }
        try await syncNodes()
    }

    /// Writes `nodes` into the table when they differ from what it holds (before the set-up, it writes them).
    private func syncNodes() async throws {
        while ready, appliedNodes != nodes {
            let wanted = nodes
            try await run("""
                flush set ip \(table) nodes
                add element ip \(table) nodes { \(Array(wanted.union([hostIP])).sorted().joined(separator: ", ")) }

                """)
            appliedNodes = wanted
        }
    }

    /// `elements = { a, b }`, or nothing for an empty set.
    static func elements(_ values: [String]) -> String {
        values.isEmpty ? "" : "elements = { \(values.joined(separator: ", ")) }"
    }

    /// Removes the instance's guard (its port is gone with its namespace).
    public func unguard(instance: String) async {
        guard let element = guarded.removeValue(forKey: instance) else { return }
        let interface = element.prefix { $0 != " " }
        _ = try? await run("delete element bridge \(table) ports { \(interface) }\n")
        _ = try? await run("delete element bridge \(table) own { \(element) }\n")
    }

    /// Removes the tables (a decommissioned node, and an agent starting over).
    public func removeTable() async {
        _ = try? await Subprocess.run(nft, ["delete", "table", "ip", table])
        _ = try? await Subprocess.run(nft, ["delete", "table", "bridge", table])
        guarded = [:]
        for held in mappings.values { held.forEach { close($0) } }
        mappings = [:]
        ready = false
    }

    /// A socket bound to the host port (listening, for TCP), kept open while the mapping lives.
    private func hold(_ mapping: PortMapping) throws -> [Int32] {
        let type = mapping.transport == "udp" ? Int32(SOCK_DGRAM.rawValue) : Int32(SOCK_STREAM.rawValue)
        let fd = socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw NetworkError.command("cannot hold port \(mapping.hostPort): socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(clamping: mapping.hostPort).bigEndian
        address.sin_addr.s_addr = INADDR_ANY
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            let code = errno
            close(fd)
            throw NetworkError.command("host port \(mapping.hostPort)/\(mapping.transport) is taken on this node: \(String(cString: strerror(code)))")
        }
        if mapping.transport != "udp" { listen(fd, 1) }
        return [fd]
    }

    private func run(_ script: String) async throws {
        let result = try await Subprocess.run(nft, ["-f", "-"], input: Array(script.utf8))
        guard result.succeeded else {
            throw NetworkError.command("nft: \(result.errors.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
