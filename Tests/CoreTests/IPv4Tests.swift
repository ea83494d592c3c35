import Core
import Testing

@Suite struct IPv4Tests {
    @Test(arguments: ["100.64.0.1", "0.0.0.0", "255.255.255.255", "198.18.0.254"])
    func addressRoundTrip(_ text: String) {
        #expect(IPv4Address(text)?.description == text)
    }

    @Test(arguments: ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "a.b.c.d", "1..2.3", "1.2.3.-4", "١.2.3.4"])
    func badAddresses(_ text: String) {
        #expect(IPv4Address(text) == nil)
    }

    @Test func cidr() throws {
        let cidr = try IPv4CIDR(parsing: "100.64.0.0/16")
        #expect(cidr.size == 65536)
        #expect(cidr.broadcast.description == "100.64.255.255")
        #expect(cidr.contains(IPv4Address("100.64.12.34")!))
        #expect(!cidr.contains(IPv4Address("100.65.0.0")!))
        #expect(cidr.overlaps(try IPv4CIDR(parsing: "100.64.128.0/17")))
        #expect(cidr.overlaps(try IPv4CIDR(parsing: "100.0.0.0/8")))
        #expect(!cidr.overlaps(try IPv4CIDR(parsing: "100.65.0.0/16")))
        #expect(cidr.structurallyReserved.map(\.description) == ["100.64.0.0", "100.64.255.255"])
        #expect(try IPv4CIDR(parsing: "10.0.0.0/31").structurallyReserved.isEmpty)
    }

    @Test(arguments: ["100.64.0.0", "100.64.0.0/33", "100.64.0.1/16", "x/8", "100.64.0.0/", "/16", "100.64.0.0/16/1"])
    func badCIDR(_ text: String) {
        #expect(throws: IPv4CIDR.ParseError.self) { try IPv4CIDR(parsing: text) }
    }
}
