import CZeroMQ
import Foundation
import Logging
import Protocol
import SwiftProtobuf
import Synchronization

/// The state a publishing service returns for resync: its payload plus the sequence and epoch it matches.
public struct EventSnapshot: Sendable {
    public var sequence: UInt64
    public var epoch: UInt64
    public var payload: [UInt8]

    public init(sequence: UInt64, epoch: UInt64, payload: [UInt8]) {
        self.sequence = sequence
        self.epoch = epoch
        self.payload = payload
    }
}

/// What a publishing service answers a subscriber that missed events after `sequence` (its position): the
/// events it missed, numbered from `sequence + 1` on, or the whole state when the service no longer holds them
/// (nil instead: the subscriber asks for the snapshot itself).
public enum EventCatchUp: Sendable {
    case missed([(sequence: UInt64, payload: [UInt8])])
    case snapshot(EventSnapshot)
}

/// What a subscriber hands to its consumer: first a snapshot per topic, then the updates after it, in
/// order and without gaps. After a gap it hands a fresh snapshot and goes on from there.
public enum SubscriberEvent: Sendable, Equatable {
    case snapshot(topic: String, sequence: UInt64, payload: [UInt8])
    case update(topic: String, sequence: UInt64, payload: [UInt8])
}

/// Subscribes to topics of a ``Publisher`` and keeps them whole (the Clone pattern): it numbers what it
/// receives, and on a gap or a publisher restart asks `snapshot` (an RPC of the publishing service) for the
/// state, drops updates older than it, and continues. With `catchUp`, a gap in the same epoch first asks for
/// just the events missed (`Publisher.missed(on:after:)` on the service's side). A resync after the first
/// waits a random moment of up to `resyncJitter`, so the subscribers that all saw one gap don't all ask at once.
public final class Subscriber: Sendable {
    public let events: AsyncStream<SubscriberEvent>
    let control = LoopControl()
    private let consumer: Task<Void, Never>

    public init(
        endpoints: [String], topics: [String], curve: CurveClientConfiguration? = nil, logger: Logger,
        resyncJitter: Duration = .milliseconds(250),
        catchUp: (@Sendable (_ topic: String, _ after: UInt64, _ epoch: UInt64) async throws -> EventCatchUp?)? = nil,
        snapshot: @escaping @Sendable (String) async throws -> EventSnapshot
    ) throws {
        let (raw, rawContinuation) = AsyncStream<RawEvent>.makeStream()
        let (events, eventsContinuation) = AsyncStream<SubscriberEvent>.makeStream()
        self.events = events
        let loop = try SubscriberLoop(endpoints: endpoints, topics: topics, curve: curve, logger: logger)
        consumer = Task {
            var machine = CloneStateMachine(topics: topics)
            for topic in topics {
                await resync(topic, machine: &machine, snapshot: snapshot, output: eventsContinuation, logger: logger)
            }
            for await event in raw {
                switch machine.receive(event) {
                case .deliver(let update): eventsContinuation.yield(update)
                case .ignore: break
                case .resync(let reason):
                    let jitter = resyncJitter.components.seconds * 1000 + resyncJitter.components.attoseconds / 1_000_000_000_000_000
                    if jitter > 0 { try? await Task.sleep(for: .milliseconds(Int64.random(in: 0...jitter))) }
                    if let catchUp, event.epoch == machine.position(of: event.topic)?.epoch,
                       await caughtUp(event.topic, machine: &machine, catchUp: catchUp, output: eventsContinuation, logger: logger) { continue }
                    logger.info("resyncing from a snapshot", metadata: ["topic": "\(event.topic)", "reason": "\(reason)"])
                    await resync(event.topic, machine: &machine, snapshot: snapshot, output: eventsContinuation, logger: logger)
                }
            }
            eventsContinuation.finish()
        }
        let control = control
        startThread(name: "subscriber") { loop.run(output: rawContinuation, control: control) }
    }

    deinit { close() }

    /// Stops receiving; `events` ends.
    public func close() {
        control.stop()
    }
}

/// Asks `catchUp` for what the topic missed since its position and hands it on: the events missed, or the
/// snapshot the service answered instead. False when it answered neither (nil, an error, or events that do not
/// follow on): the caller fetches the snapshot.
private func caughtUp(
    _ topic: String, machine: inout CloneStateMachine,
    catchUp: @Sendable (String, UInt64, UInt64) async throws -> EventCatchUp?, output: AsyncStream<SubscriberEvent>.Continuation,
    logger: Logger
) async -> Bool {
    guard let position = machine.position(of: topic),
          let answer = (try? await catchUp(topic, position.sequence, position.epoch)) ?? nil else { return false }
    switch answer {
    case .missed(let missed):
        guard machine.canAppend(missed, to: topic) else { return false }
        for (sequence, payload) in missed {
            machine.advance(topic, to: sequence)
            output.yield(.update(topic: topic, sequence: sequence, payload: payload))
        }
        logger.debug("caught up", metadata: ["topic": "\(topic)", "events": "\(missed.count)"])
    case .snapshot(let state):
        deliver(state, of: topic, machine: &machine, output: output)
    }
    return true
}

/// A snapshot taken: the topic's position is its sequence, and the consumer gets it.
private func deliver(
    _ state: EventSnapshot, of topic: String, machine: inout CloneStateMachine, output: AsyncStream<SubscriberEvent>.Continuation
) {
    machine.applySnapshot(topic: topic, state)
    output.yield(.snapshot(topic: topic, sequence: state.sequence, payload: state.payload))
}

private func resync(
    _ topic: String, machine: inout CloneStateMachine, snapshot: @Sendable (String) async throws -> EventSnapshot,
    output: AsyncStream<SubscriberEvent>.Continuation, logger: Logger
) async {
    var backoff = Duration.milliseconds(50)
    while !Task.isCancelled {
        do {
            deliver(try await snapshot(topic), of: topic, machine: &machine, output: output)
            return
        } catch {
            logger.warning("snapshot failed; retrying", metadata: ["topic": "\(topic)", "error": "\(error)"])
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(2))
        }
    }
}

struct RawEvent: Sendable {
    let topic: String
    let sequence: UInt64
    let epoch: UInt64
    let payload: [UInt8]
    var heartbeat = false
}

/// The Clone pattern's bookkeeping per topic, without I/O: what to do with each event received.
struct CloneStateMachine {
    enum Decision: Equatable {
        case deliver(SubscriberEvent)
        case ignore
        case resync(String)
    }

    struct Position { var sequence: UInt64; var epoch: UInt64 }
    private var positions: [String: Position] = [:]
    let topics: Set<String>

    init(topics: [String]) { self.topics = Set(topics) }

    mutating func applySnapshot(topic: String, _ snapshot: EventSnapshot) {
        positions[topic] = Position(sequence: snapshot.sequence, epoch: snapshot.epoch)
    }

    func position(of topic: String) -> Position? { positions[topic] }

    /// Whether `missed` follows on from the topic's position without a gap.
    func canAppend(_ missed: [(sequence: UInt64, payload: [UInt8])], to topic: String) -> Bool {
        guard let position = positions[topic] else { return false }
        return missed.enumerated().allSatisfy { $0.element.sequence == position.sequence + UInt64($0.offset) + 1 }
    }

    mutating func advance(_ topic: String, to sequence: UInt64) { positions[topic]?.sequence = sequence }

    mutating func receive(_ event: RawEvent) -> Decision {
        guard topics.contains(event.topic), let position = positions[event.topic] else { return .ignore }
        if event.epoch != position.epoch {
            return .resync("publisher restarted (epoch changed)")
        }
        if event.sequence <= position.sequence { return .ignore }  // already in the snapshot
        if event.heartbeat {
            return .resync("missed events up to \(event.sequence) (heartbeat)")
        }
        if event.sequence != position.sequence + 1 {
            return .resync("gap: expected \(position.sequence + 1), got \(event.sequence)")
        }
        positions[event.topic]?.sequence = event.sequence
        return .deliver(.update(topic: event.topic, sequence: event.sequence, payload: event.payload))
    }
}

final class SubscriberLoop: @unchecked Sendable {
    let context = ZMQContext()
    let socket: ZMQSocket
    let topics: Set<String>
    let logger: Logger

    init(endpoints: [String], topics: [String], curve: CurveClientConfiguration?, logger: Logger) throws {
        socket = try ZMQSocket(context, type: ZMQ_SUB)
        try socket.set(ZMQ_RCVHWM, Int32(100_000))
        if let curve { try socket.applyCurveClient(curve) }
        for topic in topics { try socket.set(ZMQ_SUBSCRIBE, topic) }
        for endpoint in endpoints { try socket.connect(endpoint) }
        self.topics = Set(topics)
        self.logger = logger
    }

    func run(output: AsyncStream<RawEvent>.Continuation, control: LoopControl) {
        while !control.isStopped {
            var items = [pollItem(fd: control.wakeup.fd), pollItem(socket: socket, events: ZMQ_POLLIN)]
            do {
                try zmqPoll(&items, timeoutMs: -1)
                if items[0].readable { control.wakeup.drain() }
                guard items[1].readable else { continue }
                while let (frames, _) = try socket.receive(dontWait: true) {
                    // Subscriptions match prefixes; keep exact topics only, and well-formed events only.
                    guard frames.count == 3, let topic = String(validating: frames[0], as: UTF8.self),
                        topics.contains(topic), let header = try? Sigma_V1_EventHeader(serializedBytes: frames[1]),
                        header.protocolVersion == sigmaProtocolVersion
                    else { continue }
                    output.yield(RawEvent(topic: topic, sequence: header.sequence, epoch: header.epoch, payload: frames[2],
                                          heartbeat: header.heartbeat))
                }
            } catch {
                logger.error("subscriber error", metadata: ["error": "\(error)"])
            }
        }
        output.finish()
    }
}
