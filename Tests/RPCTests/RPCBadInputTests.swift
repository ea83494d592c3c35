import Foundation
import Protocol
import RPC
import SwiftProtobuf
import Testing

/// What a server answers to frames no well-behaved client sends.
@Suite struct RPCBadInputTests {
    @Test func garbageHeaderIsInvalidArgument() async throws {
        try await withServer { _, endpoint in
            let raw = try RawDealer(endpoint: endpoint)
            let reply = try replyHeader(await raw.exchange([[], [0xff, 0xff, 0xff, 0x07, 0x01], []], timeout: .seconds(5)))
            #expect(reply?.status == .invalidArgument)
            #expect(reply?.requestID == 0)
        }
    }

    @Test func missingDelimiterIsInvalidArgument() async throws {
        try await withServer { _, endpoint in
            let raw = try RawDealer(endpoint: endpoint)
            let reply = try replyHeader(await raw.exchange([try header(method: "Echo"), []], timeout: .seconds(5)))
            #expect(reply?.status == .invalidArgument)
        }
    }

    @Test func wrongFrameCountIsInvalidArgument() async throws {
        try await withServer { _, endpoint in
            let raw = try RawDealer(endpoint: endpoint)
            for frames: [[UInt8]] in [[[]], [[], try header(method: "Echo")], [[], try header(method: "Echo"), [], [1], [2]]] {
                let reply = try replyHeader(await raw.exchange(frames, timeout: .seconds(5)))
                #expect(reply?.status == .invalidArgument, "frames: \(frames.count)")
            }
        }
    }

    @Test func truncatedPayloadIsInvalidArgument() async throws {
        try await withServer { _, endpoint in
            let raw = try RawDealer(endpoint: endpoint)
            let full: [UInt8] = try text("a string of some length").serializedBytes()
            let reply = try replyHeader(await raw.exchange([[], try header(method: "Echo", id: 42), Array(full.prefix(5))], timeout: .seconds(5)))
            #expect(reply?.status == .invalidArgument)
            #expect(reply?.requestID == 42)
        }
    }

    @Test func unknownMethodIsUnimplemented() async throws {
        try await withServer { _, endpoint in
            let raw = try RawDealer(endpoint: endpoint)
            let reply = try replyHeader(await raw.exchange([[], try header(method: "DropTables"), []], timeout: .seconds(5)))
            #expect(reply?.status == .unimplemented)
        }
    }

    @Test func unknownProtocolVersionIsFailedPrecondition() async throws {
        try await withServer { _, endpoint in
            let raw = try RawDealer(endpoint: endpoint)
            let reply = try replyHeader(await raw.exchange([[], try header(method: "Echo", version: 2), []], timeout: .seconds(5)))
            #expect(reply?.status == .failedPrecondition)
        }
    }

    @Test func requestOverSizeLimitIsResourceExhausted() async throws {
        try await withServer({ $0.maxRequestBytes = 1024 }) { _, endpoint in
            let client = try client(endpoint)
            let error = await #expect(throws: RPCError.self) {
                _ = try await client.call(TestMethods.echo, text(String(repeating: "x", count: 4096)))
            }
            #expect(error?.code == .resourceExhausted)
            #expect(try await client.call(TestMethods.echo, text("small")).value == "small")
        }
    }

    @Test func frameOverHardCapDropsOnlyThatPeer() async throws {
        try await withServer({ $0.hardMaxMessageBytes = 64 * 1024 }) { _, endpoint in
            let raw = try RawDealer(endpoint: endpoint)
            let huge = [UInt8](repeating: 0x41, count: 256 * 1024)
            let reply = try await raw.exchange([[], try header(method: "Echo"), huge], timeout: .milliseconds(500))
            #expect(reply == nil)
            let client = try client(endpoint)
            #expect(try await client.call(TestMethods.echo, text("others fine")).value == "others fine")
        }
    }
}
