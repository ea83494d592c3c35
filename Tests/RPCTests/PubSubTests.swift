import Foundation
@_spi(Testing) @testable import RPC
import Protocol
import Synchronization
import Testing

/// A publishing service in miniature: a list that grows, a PUB feed of its additions and a Snapshot RPC.
final class GrowingList: Sendable {
    static let snapshotMethod = RPCMethod<Text, Text>("Snapshot", idempotent: true)
    /// The events after a sequence ("epoch|sequence"), as "sequence=item,..." or "none" when not kept.
    static let missedMethod = RPCMethod<Text, Text>("Missed", idempotent: true)
    let items = Mutex<[String]>([])
    let publisher: Publisher

    init(heartbeat: Duration = .milliseconds(50), keepsRecent: Int = 0) throws {
        publisher = try Publisher(endpoint: "tcp://127.0.0.1:*", heartbeat: heartbeat, keepsRecent: { _ in keepsRecent }, logger: testLogger)
    }

    func append(_ item: String) {
        // The state and its sequence number change together, so a snapshot is always consistent.
        items.withLock { items in
            items.append(item)
            publisher.publish(topic: "list", payload: Array(item.utf8))
        }
    }

    /// The list's snapshot through its RPC, as a subscriber takes it.
    static func snapshot(_ rpc: RPCClient) async throws -> EventSnapshot {
        let parts = try await rpc.call(snapshotMethod, text("list")).value.split(separator: "|", maxSplits: 2, omittingEmptySubsequences: false)
        return EventSnapshot(sequence: UInt64(parts[1])!, epoch: UInt64(parts[0])!, payload: Array(parts[2].utf8))
    }

    var handlers: RPCHandlers {
        var handlers = RPCHandlers()
        handlers.register(Self.snapshotMethod) { [self] _, _ in
            items.withLock { items in
                text("\(publisher.epoch)|\(publisher.sequence(of: "list"))|" + items.joined(separator: ","))
            }
        }
        handlers.register(Self.missedMethod) { [self] request, _ in
            let parts = request.value.split(separator: "|")
            guard UInt64(parts[0]) == publisher.epoch, let missed = publisher.missed(on: "list", after: UInt64(parts[1])!) else { return text("none") }
            return text(missed.map { "\($0.sequence)=\(String(decoding: $0.payload, as: UTF8.self))" }.joined(separator: ","))
        }
        return handlers
    }
}

/// What the subscriber has rebuilt from snapshots and updates.
final class Replica: Sendable {
    let state = Mutex<(items: [String], snapshots: Int)>(([], 0))

    func apply(_ event: SubscriberEvent) {
        state.withLock { state in
            switch event {
            case .snapshot(_, _, let payload):
                let text = String(decoding: payload, as: UTF8.self)
                state.items = text.isEmpty ? [] : text.split(separator: ",").map(String.init)
                state.snapshots += 1
            case .update(_, _, let payload):
                state.items.append(String(decoding: payload, as: UTF8.self))
            }
        }
    }

    /// Waits (bounded) until the replica holds `expected`.
    func converges(to expected: [String], within limit: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if state.withLock({ $0.items }) == expected { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }
}

@Suite struct PubSubTests {
    @Test func gapTriggersResyncFromSnapshot() async throws {
        let list = try GrowingList()
        try await withServer(handlers: list.handlers) { _, endpoint in
            let rpc = try client(endpoint)
            let replica = Replica()
            let subscriber = try Subscriber(endpoints: [list.publisher.endpoint], topics: ["list"], logger: testLogger) { _ in try await GrowingList.snapshot(rpc) }
            let consumer = Task { for await event in subscriber.events { replica.apply(event) } }
            defer {
                subscriber.close()
                consumer.cancel()
            }
            for index in 0..<20 { list.append("a\(index)") }
            #expect(await replica.converges(to: (0..<20).map { "a\($0)" }))
            let snapshotsBefore = replica.state.withLock { $0.snapshots }

            // The network loses one event: the next one reveals the gap and the replica resyncs.
            list.items.withLock { items in
                items.append("lost")
                list.publisher.loseNextEvent(on: "list")
            }
            list.append("after")
            #expect(await replica.converges(to: (0..<20).map { "a\($0)" } + ["lost", "after"]))
            #expect(replica.state.withLock { $0.snapshots } > snapshotsBefore)
        }
        await list.publisher.close()
    }

    /// A subscriber that missed events the publisher still keeps fetches just those (no snapshot); one that
    /// missed more than it keeps gets the snapshot.
    @Test func aGapWithinWhatThePublisherKeepsIsCaughtUpWithoutASnapshot() async throws {
        let list = try GrowingList(keepsRecent: 3)
        try await withServer(handlers: list.handlers) { _, endpoint in
            let rpc = try client(endpoint)
            let replica = Replica()
            let catchUps = Mutex(0)
            let subscriber = try Subscriber(
                endpoints: [list.publisher.endpoint], topics: ["list"], logger: testLogger, resyncJitter: .milliseconds(20),
                catchUp: { _, after, epoch in
                    catchUps.withLock { $0 += 1 }
                    let answer = try await rpc.call(GrowingList.missedMethod, text("\(epoch)|\(after)")).value
                    guard answer != "none" else { return nil }
                    return .missed(answer.split(separator: ",").map { entry in
                        let parts = entry.split(separator: "=", maxSplits: 1)
                        return (UInt64(parts[0])!, Array(parts[1].utf8))
                    })
                }
            ) { _ in try await GrowingList.snapshot(rpc) }
            let consumer = Task { for await event in subscriber.events { replica.apply(event) } }
            defer {
                subscriber.close()
                consumer.cancel()
            }
            var expected: [String] = []
            repeat {
                list.append("warm\(expected.count)")
                expected.append("warm\(expected.count)")
            } while await !replica.converges(to: expected, within: .milliseconds(200))
            let snapshots = replica.state.withLock { $0.snapshots }

            // One event dropped on the way, still kept by the publisher: the next reveals the gap, and the two
            // arrive as updates.
            list.publisher.dropNextSend(on: "list")
            list.append("dropped")
            list.append("after")
            expected += ["dropped", "after"]
            #expect(await replica.converges(to: expected))
            #expect(replica.state.withLock { $0.snapshots } == snapshots, "caught up without a snapshot")
            #expect(catchUps.withLock { $0 } >= 1)

            // Four dropped in a row, more than the three kept: the snapshot.
            for index in 0..<4 {
                list.publisher.dropNextSend(on: "list")
                list.append("lost\(index)")
                expected.append("lost\(index)")
            }
            list.append("last")
            expected.append("last")
            #expect(await replica.converges(to: expected))
            #expect(replica.state.withLock { $0.snapshots } > snapshots)
        }
        await list.publisher.close()
    }

    /// Events published from several threads at once, with a heartbeat every millisecond, reach a live
    /// subscriber as updates in their numbers' order: no heartbeat ever announces a number before its event
    /// went out, and no two events leave out of order, so nothing makes it resync.
    @Test func concurrentPublishingAndHeartbeatsNeverForceAResync() async throws {
        let list = try GrowingList(heartbeat: .milliseconds(1))
        try await withServer(handlers: list.handlers) { _, endpoint in
            let rpc = try client(endpoint)
            let replica = Replica()
            let subscriber = try Subscriber(endpoints: [list.publisher.endpoint], topics: ["list"], logger: testLogger) { _ in try await GrowingList.snapshot(rpc) }
            let consumer = Task { for await event in subscriber.events { replica.apply(event) } }
            defer {
                subscriber.close()
                consumer.cancel()
            }
            // Live first: ZeroMQ joins a subscriber a moment after it connects (what it misses meanwhile is
            // a resync, rightly).
            var warm = 0
            repeat {
                list.append("warm\(warm)")
                warm += 1
            } while await !replica.converges(to: (0..<warm).map { "warm\($0)" }, within: .milliseconds(200))
            let snapshots = replica.state.withLock { $0.snapshots }

            // Four threads publish straight to the feed (the state is not kept: no snapshot may be needed).
            let threads = 4, each = 1500
            await withTaskGroup(of: Void.self) { group in
                for thread in 0..<threads {
                    group.addTask {
                        for index in 0..<each {
                            list.publisher.publish(topic: "list", payload: Array("t\(thread)-\(index)".utf8))
                            if index % 100 == 0 { await Task.yield() }
                        }
                    }
                }
            }
            let expected = threads * each + warm
            let deadline = ContinuousClock.now + .seconds(20)
            while replica.state.withLock({ $0.items.count }) < expected && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            let (items, after) = replica.state.withLock { ($0.items, $0.snapshots) }
            #expect(after == snapshots, "\(after - snapshots) resync(s) while nothing was lost")
            #expect(items.count == expected)
            for thread in 0..<threads {
                let inOrder = items.filter { $0.hasPrefix("t\(thread)-") } == (0..<each).map { "t\(thread)-\($0)" }
                #expect(inOrder, "thread \(thread)'s events all there, in order")
            }
        }
        await list.publisher.close()
    }

    @Test func stateMachineOrdersAndDetectsGaps() {
        var machine = CloneStateMachine(topics: ["t"])
        func event(_ sequence: UInt64, epoch: UInt64 = 1, topic: String = "t") -> RawEvent {
            RawEvent(topic: topic, sequence: sequence, epoch: epoch, payload: [])
        }
        #expect(machine.receive(event(1)) == .ignore)  // nothing before the first snapshot
        machine.applySnapshot(topic: "t", EventSnapshot(sequence: 5, epoch: 1, payload: []))
        #expect(machine.receive(event(4)) == .ignore)
        #expect(machine.receive(event(5)) == .ignore)
        #expect(machine.receive(event(6)) == .deliver(.update(topic: "t", sequence: 6, payload: [])))
        #expect(machine.receive(event(6, topic: "other")) == .ignore)
        guard case .resync = machine.receive(event(8)) else { Issue.record("a gap must resync"); return }
        guard case .resync = machine.receive(event(7, epoch: 2)) else { Issue.record("a new epoch must resync"); return }
        #expect(machine.receive(event(7)) == .deliver(.update(topic: "t", sequence: 7, payload: [])))
        var heartbeat = event(7)
        heartbeat.heartbeat = true
        #expect(machine.receive(heartbeat) == .ignore)  // nothing missed
        heartbeat = event(9)
        heartbeat.heartbeat = true
        guard case .resync = machine.receive(heartbeat) else { Issue.record("a heartbeat past us must resync"); return }
    }
}
