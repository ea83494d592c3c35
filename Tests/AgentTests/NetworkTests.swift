import Foundation
import NodeRuntime
import Testing
import TestSupport

/// A bridge and subnet of the test's own: a /24 inside 100.64.0.0/10 no other test of the run uses, a bridge named after the test,
/// both removed afterwards.
func withNodeNetwork<T>(_ body: (NodeNetwork, _ subnet: String) async throws -> T) async throws -> T {
    let subnet = TestSubnets.next()
    let network = try NodeNetwork(bridge: "sgt\(UUID().uuidString.prefix(6).lowercased())")
    do {
        let result = try await body(network, subnet)
        await network.removeBridge()
        return result
    } catch {
        await network.removeBridge()
        throw error
    }
}

/// Connects to `host:port` over TCP and returns the first line the peer sends; nil if nobody listens.
func tcpExchange(_ host: String, _ port: UInt16) -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    inet_pton(AF_INET, host, &address.sin_addr)
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { return nil }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        received += buffer[0..<n]
        if received.contains(UInt8(ascii: "\n")) { break }
    }
    return String(decoding: received, as: UTF8.self)
}

@Suite(.serialized) struct NetworkTests {
    @Test func anInstanceGetsItsAddressRouteAndLoopbackOnTheBridge() async throws {
        let image = try ImageReference(parsing: try await DemoImage.shared.reference())
        try await withNodeNetwork { network, subnet in
            try await withRuntime { runtime in
                let address = "\(subnet).17", gateway = "\(subnet).1"
                let attached = try await network.attach("net-0", ip: address, prefixLength: 24, gateway: gateway)
                defer { Task { await network.detach("net-0") } }
                try await runtime.start(LaunchRequest(
                    id: "net-0", image: image,
                    command: ["/bin/sh", "-c", "ip -4 addr show; ip route; ip link show lo; exec nc -ll -p 7000 -e /bin/hostname"],
                    hostname: "net-zero", networkNamespace: attached.namespacePath))
                try await eventually("the listener") { tcpExchange(address, 7000) != nil }
                #expect(tcpExchange(address, 7000)?.trimmingCharacters(in: .whitespacesAndNewlines) == "net-zero")
                let log = contents(runtime.logFile(of: "net-0"))
                #expect(log.contains("inet \(address)/24"))
                #expect(log.contains("default via \(gateway) dev eth0"))
                #expect(log.contains("LOOPBACK,UP"))
                #expect(FileManager.default.fileExists(atPath: "/sys/class/net/\(attached.hostInterface)/master"))

                _ = await runtime.stop("net-0", grace: .milliseconds(100))
                await network.detach("net-0")
                #expect(!FileManager.default.fileExists(atPath: attached.namespacePath))
                // A namespace's links go a moment after the namespace (the kernel cleans up in the background).
                try await eventually("the veth gone") { !FileManager.default.fileExists(atPath: "/sys/class/net/\(attached.hostInterface)") }
            }
        }
    }

    /// Isolation I, item 5: what leaves an instance's port carries its own IP and MAC or is dropped at the
    /// bridge: a forged source (an address the instance added to itself), IPv6 (which the node's `ip` filter
    /// would not see), and any datagram to the overlay's VXLAN port (another node would take it for a frame of
    /// the overlay). Its own traffic still goes through.
    @Test func anInstanceSendsOnlyAsItself() async throws {
        let listener = """
            import os, socket, threading
            seen = []
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("0.0.0.0", 4789))
            def receive():
                while True:
                    seen.append(udp.recvfrom(100)[1][0])
            threading.Thread(target=receive, daemon=True).start()
            def serve(family, port):
                s = socket.socket(family, socket.SOCK_STREAM)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
                s.listen(16)
                while True:
                    c, a = s.accept()
                    data = c.recv(100)
                    c.sendall(("from " + a[0] + " udp " + ",".join(seen) + "\\n").encode())
                    c.close()
                    if data.startswith(b"quit"):
                        os._exit(0)
            threading.Thread(target=serve, args=(socket.AF_INET6, 7001), daemon=True).start()
            serve(socket.AF_INET, 7000)
            """
        let connector = """
            import socket, sys
            source, target, port, message = sys.argv[1:5]
            family = socket.AF_INET6 if ":" in target else socket.AF_INET
            address = socket.getaddrinfo(target, int(port), family, socket.SOCK_STREAM)[0][4]
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(1.5)
            if source != "-":
                s.bind((source, 0))
            try:
                s.connect(address)
                s.sendall(message.encode())
                print(s.recv(200).decode().strip())
            except Exception as e:
                print("failed", e)
            """
        guard let python = Subprocess.find("python3") else { throw HarnessError("python3 is not installed") }
        let ip = Subprocess.find("ip") ?? "/usr/sbin/ip"
        try await withNodeNetwork { network, subnet in
            let hostPorts = HostPorts(bridge: await network.bridge, hostIP: "\(subnet).1")
            defer { Task { await hostPorts.removeTable() } }
            let a = "\(subnet).21", b = "\(subnet).22", forged = "\(subnet).250"
            let first = try await network.attach("spoof-a", ip: a, prefixLength: 24, gateway: "\(subnet).1")
            let second = try await network.attach("spoof-b", ip: b, prefixLength: 24, gateway: "\(subnet).1")
            defer { Task { await network.detach("spoof-a"); await network.detach("spoof-b") } }
            for (id, attached) in [("spoof-a", first), ("spoof-b", second)] {
                try await hostPorts.guardInstance(id, interface: attached.hostInterface, ip: attached.ip, mac: NodeNetwork.mac(for: attached.ip))
            }
            func inA(_ arguments: [String]) async throws -> String {
                try await Subprocess.run(ip, ["netns", "exec", first.namespace] + arguments, timeout: .seconds(10)).output
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            }
            func call(from source: String, _ target: String, _ port: Int, _ message: String = "hi") async throws -> String {
                try await inA([python, "-c", connector, source, target, "\(port)", message])
            }
            let serving = Task {
                try await Subprocess.run(ip, ["netns", "exec", second.namespace, python, "-c", listener], timeout: .seconds(120))
            }
            defer { serving.cancel() }
            try await eventually("the listener") { try await call(from: "-", b, 7000).hasPrefix("from \(a)") }

            _ = try await Subprocess.check(ip, ["-n", first.namespace, "addr", "add", "\(forged)/32", "dev", "eth0"])
            #expect(try await call(from: forged, b, 7000).hasPrefix("failed"))
            _ = try await inA([python, "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('\(b)', 4789))"])
            // B's IPv6 link-local address (once out of duplicate address detection).
            var linkLocal = ""
            try await eventually("B's link-local address") {
                let shown = try await Subprocess.check(ip, ["-n", second.namespace, "-6", "-o", "addr", "show", "dev", "eth0"])
                guard !shown.contains("tentative"), let range = shown.range(of: "fe80::[0-9a-f:]+", options: .regularExpression) else { return false }
                linkLocal = String(shown[range])
                return true
            }
            #expect(try await call(from: "-", "\(linkLocal)%eth0", 7001).hasPrefix("failed"))
            // Its own traffic goes through, and B saw no datagram on the overlay's port.
            #expect(try await call(from: "-", b, 7000, "quit") == "from \(a) udp")
            _ = try await serving.value
        }
    }

    @Test func badAddressesAndBridgeNamesAreRefused() async throws {
        #expect(throws: NetworkError.self) { try NodeNetwork(bridge: "a-name-longer-than-15") }
        #expect(throws: NetworkError.self) { try NodeNetwork(bridge: "br 0") }
        try await withNodeNetwork { network, subnet in
            await #expect(throws: NetworkError.self) {
                try await network.attach("x", ip: "\(subnet).300", prefixLength: 24, gateway: "\(subnet).1")
            }
            await #expect(throws: NetworkError.self) {
                try await network.attach("x", ip: "\(subnet).3", prefixLength: 33, gateway: "\(subnet).1")
            }
        }
    }
}
