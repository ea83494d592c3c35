import Foundation
import Protocol
import RPC
import Testing

/// Callers that prefer the client's socket thread (`RPCClient.executor`).
@Suite struct ClientExecutorTests {
    @Test func callsOnTheExecutorRunOnTheSocketThreadAndAnswerInOrder() async throws {
        try await withServer { _, endpoint in
            let client = try client(endpoint)
            defer { client.close() }
            _ = try await client.call(TestMethods.echo, text("warm"))
            // Without the preference a reply resumes its caller on the cooperative pool.
            #expect(!client.executor.isCurrent)
            let onLoop = try await withTaskExecutorPreference(client.executor) {
                var onLoop = 0
                for index in 0..<200 {
                    let reply = try await client.call(TestMethods.echo, text("call \(index)"))
                    #expect(reply.value == "call \(index)")
                    if client.executor.isCurrent { onLoop += 1 }
                }
                return onLoop
            }
            // Resumed by the thread that received the reply, every time.
            #expect(onLoop == 200)
        }
    }

    @Test func manyTasksSleepsAndDeadlinesOnTheExecutor() async throws {
        try await withServer { _, endpoint in
            let client = try client(endpoint)
            defer { client.close() }
            let answered = try await withTaskExecutorPreference(client.executor) {
                try await withThrowingTaskGroup(of: Int.self) { group in
                    for task in 0..<16 {
                        group.addTask {
                            var ok = 0
                            for call in 0..<25 {
                                // A timer resumes the task from another thread: the loop is woken for it.
                                if call % 10 == 0 { try await Task.sleep(for: .milliseconds(2)) }
                                if try await client.call(TestMethods.echo, text("\(task)-\(call)")).value == "\(task)-\(call)" { ok += 1 }
                            }
                            return ok
                        }
                    }
                    return try await group.reduce(0, +)
                }
            }
            #expect(answered == 400)
            let late = await withTaskExecutorPreference(client.executor) { () async -> RPCError? in
                do {
                    _ = try await client.call(TestMethods.sleep, text("2000"), timeout: .milliseconds(100))
                    return nil
                } catch let error as RPCError {
                    return error
                } catch {
                    return nil
                }
            }
            #expect(late?.code == .deadlineExceeded)
        }
    }

    @Test func closingTheClientStrandsNoTaskThatPrefersIt() async throws {
        try await withServer { _, endpoint in
            let client = try client(endpoint)
            let started = AsyncStream<Void>.makeStream()
            let worker = Task {
                await withTaskExecutorPreference(client.executor) { () async -> (answered: Int, error: RPCError?) in
                    var answered = 0
                    while true {
                        do {
                            _ = try await client.call(TestMethods.echo, text("x"), timeout: .seconds(2))
                            answered += 1
                            if answered == 10 { started.continuation.finish() }
                        } catch let error as RPCError {
                            // The loop has ended: the task goes on, on the global executor.
                            try? await Task.sleep(for: .milliseconds(1))
                            return (answered, error)
                        } catch {
                            return (answered, nil)
                        }
                    }
                }
            }
            for await _ in started.stream {}
            client.close()
            let outcome = await worker.value
            #expect(outcome.answered >= 10)
            #expect(outcome.error?.code == .unavailable)
        }
    }
}

