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
