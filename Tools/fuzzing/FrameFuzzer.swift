import Core
import Foundation
import Protocol
import RPC
import SwiftProtobuf

/// Hostile requests, the same ones for the same seed: garbage frames, broken envelopes, unknown methods and
/// real methods with bodies that are random protobuf wire carrying hostile values (SQL metacharacters, NUL
/// bytes, huge strings, extreme numbers, truncated fields). What a service must do with each: answer with a
/// typed status and keep serving.
public struct FrameFuzzer {
    public struct Input {
        public let frames: [[UInt8]]
        /// The request id in its header, when it has a readable one (the reply must echo it).
        public let requestID: UInt64?
        public let kind: String
    }

    var random: SeededGenerator
    let methods: [String]
    var nextID: UInt64 = 1

    /// Every method any Sigma service serves (the registries in Shared/Protocol/Status.swift); a service answers
    /// the others UNIMPLEMENTED.
    public static let knownMethods = CommonMethods.all + AllocatorMethods.all + SchedulerMethods.all + DiscoveryMethods.all
        + ConfigMethods.all + AgentMethods.all + AccessMethods.all

    static let hostileStrings: [String] = [
        "", "web", "n1", "default", "100.64.0.0/16", "'; DROP TABLE instances; --", "\" OR 1=1 --", "%s%s%n%x",
        "\u{0}", "a\u{0}b", "../../etc/passwd", "$(reboot)", "`id`", "{{instance.ip}}", "{{#peers}}", "\u{202E}evil",
        "😀🚀", "\\", "null", "-1", "NaN", "1e309", "tcp://127.0.0.1:1", "UPPER CASE", String(repeating: "A", count: 300),
        String(repeating: "x", count: 70_000),
    ]
    static let interestingNumbers: [UInt64] = [
        0, 1, 2, 3, 7, 255, 65_535, 65_536, 100_000, 100_001, 1 << 31 - 1, 1 << 31, 1 << 32, 1 << 63, UInt64.max, UInt64.max - 1,
    ]

    public init(seed: UInt64, methods: [String] = FrameFuzzer.knownMethods) {
        random = SeededGenerator(seed: seed)
        self.methods = methods
    }

    mutating func int(_ range: Range<Int>) -> Int { Int.random(in: range, using: &random) }
    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) } }
    mutating func pick<T>(_ values: [T]) -> T { values[int(0..<values.count)] }

    public mutating func next() -> Input {
        switch int(0..<100) {
        case 0..<8:
            // Frames of noise, any number of them.
            return Input(frames: (0..<int(1..<6)).map { _ in bytes(int(0..<48)) }, requestID: nil, kind: "noise")
        case 8..<14:
            // A delimiter, then a header that is not one.
            return Input(frames: [[], bytes(int(1..<40)), bytes(int(0..<40))], requestID: nil, kind: "bad-header")
        case 14..<18:
            // A good header in the wrong place, or frames missing or extra.
            let header = self.header(method: pick(methods)).bytes
            let frames: [[UInt8]] = int(0..<2) == 0 ? [header, []] : [[], header, [], bytes(8)]
            return Input(frames: frames, requestID: nil, kind: "bad-framing")
        case 18..<22:
            let (header, id) = self.header(method: pick(methods), version: pick([0, 2, 99, UInt32.max]))
            return Input(frames: [[], header, []], requestID: id, kind: "bad-version")
        case 22..<28:
            let (header, id) = self.header(method: pick(["", "health", "DROP TABLE", String(repeating: "M", count: 5000), "Resolve\u{0}"]))
            return Input(frames: [[], header, []], requestID: id, kind: "unknown-method")
        case 28:
            // Over the request limit (4 MiB): RESOURCE_EXHAUSTED, without reading it into a message.
            let (header, id) = self.header(method: pick(methods))
            return Input(frames: [[], header, [UInt8](repeating: 0x41, count: (4 << 20) + 1)], requestID: id, kind: "oversized")
        default:
            let (header, id) = self.header(method: pick(methods))
            return Input(frames: [[], header, message(depth: 0)], requestID: id, kind: "hostile-body")
        }
    }

    mutating func header(method: String, version: UInt32 = sigmaProtocolVersion) -> (bytes: [UInt8], id: UInt64) {
        var header = Sigma_V1_RequestHeader()
        header.protocolVersion = version
        header.method = method
        header.requestID = nextID
        header.timeoutMs = UInt64(pick([0, 1, 100, 5000]))
        if int(0..<10) == 0 { header.token = pick(Self.hostileStrings) }
        nextID += 1
        return ((try? header.serializedBytes()) ?? [], header.requestID)
    }

    /// Random protobuf wire: fields 1-12 with any wire type; values hostile; now and then a truncated field.
    mutating func message(depth: Int) -> [UInt8] {
        var out: [UInt8] = []
        for _ in 0..<int(0..<6) {
            let field = UInt64(int(1..<13))
            switch int(0..<10) {
            case 0..<4:
                out += Self.varint(field << 3 | 0) + Self.varint(pick(Self.interestingNumbers))
            case 4..<8:
                let value: [UInt8] = depth < 3 && int(0..<3) == 0 ? message(depth: depth + 1) : Array(pick(Self.hostileStrings).utf8)
                out += Self.varint(field << 3 | 2) + Self.varint(UInt64(value.count)) + value
            case 8:
                out += Self.varint(field << 3 | 1) + bytes(8)
            default:
                // Truncated or impossible: a length past the end, or wire types 3, 4, 6 and 7.
                out += int(0..<2) == 0 ? Self.varint(field << 3 | 2) + Self.varint(1000) + bytes(3) : Self.varint(field << 3 | UInt64(pick([3, 4, 6, 7])))
            }
        }
        return out
    }

    static func varint(_ value: UInt64) -> [UInt8] {
        var value = value, out: [UInt8] = []
        repeat {
            var byte = UInt8(value & 0x7F)
            value >>= 7
            if value != 0 { byte |= 0x80 }
            out.append(byte)
        } while value != 0
        return out
    }
}

/// What came of a fuzzing run against one service.
public struct FuzzReport: Sendable {
    public var sent = 0
    public var statuses: [String: Int] = [:]
    public var problems: [String] = []
}

/// The known methods `endpoint` serves: each is asked with a body that cannot decode (INVALID_ARGUMENT when
/// served, UNIMPLEMENTED when not).
public func servedMethods(endpoint: String) async throws -> [String] {
    let dealer = try RawDealer(endpoint: endpoint)
    var served: [String] = []
    for (index, method) in FrameFuzzer.knownMethods.enumerated() {
        var header = Sigma_V1_RequestHeader()
        header.protocolVersion = sigmaProtocolVersion
        header.method = method
        header.requestID = UInt64(index + 1)
        guard let reply = try await dealer.exchange([[], try header.serializedBytes(), [0x07]], timeout: .seconds(10)),
              reply.count == 3, let answer = try? Sigma_V1_ReplyHeader(serializedBytes: reply[1])
        else { throw RPCError.unavailable("\(endpoint) does not answer") }
        if answer.status != .unimplemented { served.append(method) }
    }
    return served
}

/// Sends `count` inputs from `seed` to `endpoint`, one at a time, and checks each answer: a reply frame set with
/// a readable header, the request's own id, and a typed status that is not INTERNAL. Bodies go to the methods
/// the service serves (`servedMethods`), with unknown ones mixed in by the fuzzer itself.
public func fuzzService(endpoint: String, seed: UInt64, count: Int, methods: [String]? = nil,
                        progress: ((Int) -> Void)? = nil) async throws -> FuzzReport {
    let targets: [String]
    if let methods { targets = methods } else { targets = try await servedMethods(endpoint: endpoint) }
    var fuzzer = FrameFuzzer(seed: seed, methods: targets)
    var report = FuzzReport()
    var dealer = try RawDealer(endpoint: endpoint)
    for index in 0..<count {
        let input = fuzzer.next()
        report.sent += 1
        if let progress, index % 10_000 == 0 { progress(index) }
        guard let reply = try await dealer.exchange(input.frames, timeout: .seconds(10)) else {
            report.problems.append("#\(index) \(input.kind): no reply within 10 s")
            dealer = try RawDealer(endpoint: endpoint)  // a fresh connection, so later replies line up
            continue
        }
        guard reply.count == 3, reply[0].isEmpty, let header = try? Sigma_V1_ReplyHeader(serializedBytes: reply[1]) else {
            report.problems.append("#\(index) \(input.kind): the reply is not an envelope (\(reply.count) frames)")
            continue
        }
        let status = "\(header.status)"
        report.statuses[status, default: 0] += 1
        if header.status == .internal {
            report.problems.append("#\(index) \(input.kind): INTERNAL: \(header.message)")
        }
        if let id = input.requestID, header.requestID != id, header.requestID != 0 {
            report.problems.append("#\(index) \(input.kind): reply to request \(header.requestID), not \(id)")
        }
    }
    return report
}
