import Foundation
@_spi(Testing) @testable import RPC
import Protocol
import Synchronization
import Testing

/// A publishing service in miniature: a list that grows, a PUB feed of its additions and a Snapshot RPC.
final class GrowingList: Sendable {
    static let snapshotMethod = RPCMethod<Text, Text>("Snapshot", idempotent: true)
    let items = Mutex<[String]>([])
    let publisher: Publisher

    init() throws {
        publisher = try Publisher(endpoint: "tcp://127.0.0.1:*", heartbeat: .milliseconds(50), logger: testLogger)
    }

    func append(_ item: String) {
        // The state and its sequence number change together, so a snapshot is always consistent.
        items.withLock { items in
            items.append(item)
            publisher.publish(topic: "list", payload: Array(item.utf8))
        }
    }

    var handlers: RPCHandlers {
        var handlers = RPCHandlers()
        handlers.register(Self.snapshotMethod) { [self] _, _ in
            items.withLock { items in
                text("\(publisher.epoch)|\(publisher.sequence(of: "list"))|" + items.joined(separator: ","))
            }
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
            let subscriber = try Subscriber(endpoints: [list.publisher.endpoint], topics: ["list"], logger: testLogger) { _ in
                let parts = try await rpc.call(GrowingList.snapshotMethod, text("list")).value
                    .split(separator: "|", maxSplits: 2, omittingEmptySubsequences: false)
                return EventSnapshot(sequence: UInt64(parts[1])!, epoch: UInt64(parts[0])!, payload: Array(parts[2].utf8))
            }
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
