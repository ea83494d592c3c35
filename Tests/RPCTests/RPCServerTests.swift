import Foundation
import Protocol
@testable import RPC
import SwiftProtobuf
import Testing

@Suite struct RPCServerTests {
    @Test func roundTrip() async throws {
        try await withServer { _, endpoint in
            let client = try client(endpoint)
            let reply = try await client.call(TestMethods.echo, text("hello sigma"))
            #expect(reply.value == "hello sigma")
        }
    }

    @Test func thousandConcurrentCallsFrom64Tasks() async throws {
        try await withServer { _, endpoint in
            let client = try client(endpoint, timeout: .seconds(30))
            let results = try await withThrowingTaskGroup(of: Int.self) { group in
                for task in 0..<64 {
                    group.addTask {
                        var ok = 0
                        for call in 0..<16 where task * 16 + call < 1000 {
                            let value = "\(task)-\(call)"
                            let reply = try await client.call(TestMethods.echo, text(value))
                            if reply.value == value { ok += 1 }
                        }
                        return ok
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(results == 1000)
        }
    }

    @Test func slowHandlerDoesNotBlockOthers() async throws {
        try await withServer { _, endpoint in
            let client = try client(endpoint, timeout: .seconds(30))
            // 2,000 calls parked in a long poll hold no thread...
            let parked = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<2000 { group.addTask { _ = try? await client.call(TestMethods.sleep, text("20000"), timeout: .seconds(20)) } }
                    try await group.waitForAll()
                }
            }
            // ...so a quick call still answers.
            for index in 0..<20 {
                let reply = try await client.call(TestMethods.echo, text("quick \(index)"))
                #expect(reply.value == "quick \(index)")
            }
            parked.cancel()
        }
    }

    @Test func deadlineExceeded() async throws {
        try await withServer { _, endpoint in
            let client = try client(endpoint)
            // Connected first, so that the short deadline measures the call, not the handshake.
            #expect(try await client.call(TestMethods.echo, text("warm")).value == "warm")
            let error = await #expect(throws: RPCError.self) {
                _ = try await client.call(TestMethods.sleep, text("5000"), timeout: .milliseconds(200))
            }
            #expect(error?.code == .deadlineExceeded)
            // The server keeps serving.
            #expect(try await client.call(TestMethods.echo, text("after")).value == "after")
        }
    }

    /// The server answers DEADLINE_EXCEEDED itself (a bare DEALER has no deadline of its own), the shortest
    /// deadline first even when a longer one came before it.
    @Test func serverKeepsEachCallsDeadline() async throws {
        try await withServer { _, endpoint in
            let long = try RawDealer(endpoint: endpoint)
            let short = try RawDealer(endpoint: endpoint)
            let sleep = try text("20000").serializedBytes() as [UInt8]
            // 30 s to answer: nothing comes back within 0.3 s.
            #expect(try await long.exchange([[], try header(method: "Sleep", id: 1, timeoutMs: 30_000), sleep], timeout: .milliseconds(300)) == nil)
            for id: UInt64 in 2...4 {
                let frames = try await short.exchange([[], try header(method: "Sleep", id: id, timeoutMs: 150), sleep], timeout: .seconds(10))
                let reply = try replyHeader(frames)
                #expect(reply?.status == .deadlineExceeded)
                #expect(reply?.requestID == id)
                #expect(reply?.message == "deadline of 150 ms exceeded")
            }
            // The largest deadline a header can ask for is kept too (no overflow in the loop's wait).
            let far = try await short.exchange([[], try header(method: "Sleep", id: 5, timeoutMs: .max), try text("10").serializedBytes()],
                                               timeout: .seconds(10))
            #expect(try replyHeader(far)?.status == .ok)
            #expect(try await client(endpoint).call(TestMethods.echo, text("after")).value == "after")
        }
    }

    @Test func deadlineHeapYieldsInOrder() {
        var generator = SystemRandomNumberGenerator()
        let start = ContinuousClock.now
        var heap = DeadlineHeap()
        var expected: [ContinuousClock.Instant] = []
        for key in 0..<500 {
            let at = start + .milliseconds(Int.random(in: 0..<10_000, using: &generator))
            heap.insert((at, UInt64(key)))
            expected.append(at)
            // Now and then take the smallest out, as the server loop does.
            if key % 7 == 0, let min = heap.min {
                #expect(min.deadline == expected.min())
                expected.remove(at: expected.firstIndex(of: min.deadline)!)
                heap.removeMin()
            }
        }
        var rebuilt = DeadlineHeap(expected.enumerated().map { ($0.element, UInt64($0.offset)) })
        var out: [ContinuousClock.Instant] = []
        while let min = heap.min {
            out.append(min.deadline)
            heap.removeMin()
            #expect(rebuilt.min?.deadline == min.deadline)
            rebuilt.removeMin()
        }
        #expect(out == expected.sorted())
        #expect(rebuilt.count == 0)
    }

    @Test func typedErrorsMapToStatus() async throws {
        try await withServer { _, endpoint in
            let client = try client(endpoint)
            let notFound = await #expect(throws: RPCError.self) { _ = try await client.call(TestMethods.fail, text("x")) }
            #expect(notFound == RPCError(.notFound, "no such thing: x"))
            let crash = await #expect(throws: RPCError.self) { _ = try await client.call(TestMethods.crash, text("")) }
            #expect(crash?.code == .internal)
            let unknown = await #expect(throws: RPCError.self) {
                _ = try await client.call(RPCMethod<Text, Text>("NoSuchMethod", idempotent: true), text(""))
            }
            #expect(unknown?.code == .unimplemented)
            #expect(try await client.call(TestMethods.echo, text("still up")).value == "still up")
        }
    }

    @Test func unreachableServerIsUnavailableInBoundedTime() async throws {
        // A port nobody listens on: bind a server, note its port, stop it.
        let endpoint = try await withServer { _, endpoint in endpoint }
        let client = try client(endpoint)
        let started = ContinuousClock.now
        let error = await #expect(throws: RPCError.self) {
            _ = try await client.call(TestMethods.echo, text("anyone?"), timeout: .milliseconds(300))
        }
        #expect(error?.code == .unavailable)
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test func retryAcrossServerRestart() async throws {
        let (arrived, arrival) = AsyncStream<Void>.makeStream()
        // A socket file of this test's own: a TCP port given up by the first server could be taken by another
        // suite's connection before the second binds it again.
        let socket = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-rpc-\(UUID().uuidString).sock").path
        defer { try? FileManager.default.removeItem(atPath: socket) }
        let first = RPCServer(configuration: .init(endpoint: "ipc://\(socket)"),
                              handlers: testHandlers(sleepStarted: { arrival.yield() }), logger: testLogger)
        let endpoint = try await first.start()
        let client = try client(endpoint, timeout: .seconds(20))
        #expect(try await client.call(TestMethods.echo, text("before")).value == "before")
        // A call in flight (the first server holds it for a minute) while the server goes away...
        let inFlight = Task { try await client.call(TestMethods.sleep, text("60000")) }
        var arrivals = arrived.makeAsyncIterator()
        await arrivals.next()
        await first.stop()
        // ...and a new server comes up on the same endpoint: the idempotent call is retried there.
        let second = RPCServer(configuration: .init(endpoint: endpoint), handlers: testHandlers(name: "second", sleeps: false),
                               logger: testLogger)
        try await second.start()
        let answer = await inFlight.result
        let after = await Task { try await client.call(TestMethods.echo, text("after")).value }.result
        await second.stop()
        #expect(try answer.get() == "second")
        #expect(try after.get() == "after")
    }

    @Test func replicasShareTheLoad() async throws {
        try await withServer(handlers: testHandlers(name: "a")) { _, a in
            try await withServer(handlers: testHandlers(name: "b")) { _, b in
                let client = try client(a, b)
                // Wait until both connections are up, then count who answers.
                var seen: [String: Int] = [:]
                for _ in 0..<200 {
                    let who = try await client.call(TestMethods.sleep, text("0")).value
                    seen[who, default: 0] += 1
                }
                #expect(seen["a", default: 0] > 20)
                #expect(seen["b", default: 0] > 20)
            }
        }
    }
}
