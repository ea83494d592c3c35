import CZeroMQ
import Foundation
import Logging
import Protocol
import SwiftProtobuf
import Synchronization

/// Publishes events on a PUB socket, numbered 1, 2, 3, ... per topic (the ZeroMQ Guide's Clone pattern).
///
/// Frames: `[topic][sigma.v1.EventHeader][payload]`. A subscriber that sees a gap in the numbers, or a new
/// epoch (this publisher restarted), fetches a snapshot through an RPC of the publishing service, which
/// answers with its state and ``sequence(of:)`` taken together.
public final class Publisher: Sendable {
    /// Random per publisher: a subscriber that sees another epoch knows the numbering restarted.
    public let epoch = UInt64.random(in: 1...UInt64.max)
    let logger: Logger
    /// What waits to be sent and each topic's last number, under one lock: an event takes its number and its
    /// place in the queue together (two publishing threads never send their events out of order), and the
    /// sending loop reads the numbers with the queue it takes (a heartbeat never announces a number before
    /// its event went out).
    struct State {
        var outbox: [[[UInt8]]] = []
        var sequences: [String: UInt64] = [:]
        /// Each topic's latest events, for `missed(on:after:)`.
        var recent: [String: [(sequence: UInt64, payload: [UInt8])]] = [:]
        /// Topics whose next event is numbered and kept but not sent (tests of the catch-up path).
        var unsent: Set<String> = []
    }
    let state = Mutex(State())
    /// How many of a topic's latest events are kept for subscribers that missed some (`missed(on:after:)`).
    let keepsRecent: @Sendable (String) -> Int
    let control = LoopControl()
    let done = Mutex<CheckedContinuation<Void, Never>?>(nil)
    private let bound: String

    /// Binds `endpoint` (port `*` picks a free one); the socket then lives on a thread of its own.
    /// Every `heartbeat` each topic's last sequence goes out as well, so that a subscriber that missed the
    /// latest events finds out even when nothing else is published.
    ///
    /// With `admits`, every subscription is checked first (an XPUB socket with manual subscriptions): a
    /// subscriber gets a topic only when `admits(topic, its CURVE key)` says so; refused subscriptions are
    /// logged and have no effect (ZeroMQ has no way to tell the subscriber).
    ///
    /// `keepsRecent(topic)` events of each topic are kept (none by default), so that a subscriber that missed
    /// some catches up on just those (`missed(on:after:)`) instead of fetching the whole state.
    public init(
        endpoint: String, curve: CurveServerConfiguration? = nil, heartbeat: Duration = .seconds(1),
        admits: (@Sendable (_ topic: String, _ subscriberKey: String?) -> Bool)? = nil,
        keepsRecent: @escaping @Sendable (String) -> Int = { _ in 0 }, logger: Logger
    ) throws {
        self.logger = logger
        self.keepsRecent = keepsRecent
        let loop = try PublisherLoop(endpoint: endpoint, curve: curve, heartbeat: heartbeat, admits: admits, logger: logger)
        bound = loop.socket.lastEndpoint
        startThread(name: "publisher") { [self] in
            loop.run(self)
            done.withLock { $0.take() }?.resume()
        }
    }

    /// The endpoint actually bound.
    public var endpoint: String { bound }

    /// Publishes `payload` on `topic` and returns its sequence number.
    @discardableResult
    public func publish(topic: String, payload: [UInt8]) -> UInt64 {
        let keep = keepsRecent(topic)
        let (next, wasEmpty) = state.withLock { state -> (UInt64, Bool) in
            let next = (state.sequences[topic] ?? 0) + 1
            state.sequences[topic] = next
            if state.unsent.remove(topic) == nil {
                state.outbox.append(eventFrames(topic: topic, sequence: next, heartbeat: false, payload: payload))
            }
            if keep > 0 {
                state.recent[topic, default: []].append((next, payload))
                if state.recent[topic]!.count > keep { state.recent[topic]!.removeFirst(state.recent[topic]!.count - keep) }
            }
            return (next, state.outbox.count == 1)
        }
        if wasEmpty { control.wakeup.signal() }
        return next
    }

    /// The last sequence number published on `topic` (0 before the first). Read it together with the
    /// state a snapshot returns.
    public func sequence(of topic: String) -> UInt64 {
        state.withLock { $0.sequences[topic] ?? 0 }
    }

    /// The events on `topic` after `sequence`, in order up to the last one, when this publisher still keeps all
    /// of them (an empty list: none came after it); nil when it doesn't (the subscriber needs the snapshot).
    public func missed(on topic: String, after sequence: UInt64) -> [(sequence: UInt64, payload: [UInt8])]? {
        state.withLock { state in
            let last = state.sequences[topic] ?? 0
            guard sequence <= last else { return nil }
            if sequence == last { return [] }
            let kept = state.recent[topic] ?? []
            guard let first = kept.first, first.sequence <= sequence + 1 else { return nil }
            return Array(kept.drop { $0.sequence <= sequence })
        }
    }

    /// What is queued, taken, with every topic's last number as of it.
    func takeOutbox() -> (events: [[[UInt8]]], sequences: [String: UInt64]) {
        state.withLock { state in
            defer { state.outbox = [] }
            return (state.outbox, state.sequences)
        }
    }

    func eventFrames(topic: String, sequence: UInt64, heartbeat: Bool, payload: [UInt8]) -> [[UInt8]] {
        var header = Sigma_V1_EventHeader()
        header.protocolVersion = sigmaProtocolVersion
        header.topic = topic
        header.sequence = sequence
        header.epoch = epoch
        header.heartbeat = heartbeat
        return [Array(topic.utf8), (try? header.serializedBytes()) ?? [], payload]
    }

    /// Counts a number as used without sending it: what a subscriber sees when the network drops a message.
    /// Only for tests of the resync path.
    @_spi(Testing) public func loseNextEvent(on topic: String) {
        state.withLock { $0.sequences[topic] = ($0.sequences[topic] ?? 0) + 1 }
    }

    /// The next event on `topic` is numbered and kept (for `missed`) but never sent: what a subscriber sees when
    /// the network drops a message the publisher still holds. Only for tests of the catch-up path.
    @_spi(Testing) public func dropNextSend(on topic: String) {
        state.withLock { _ = $0.unsent.insert(topic) }
    }

    /// Sends what is queued and closes the socket.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            done.withLock { $0 = continuation }
            control.stop()
        }
    }
}

final class PublisherLoop: @unchecked Sendable {
    let context: ZMQContext
    let socket: ZMQSocket
    let zap: ZAPHandler?
    let logger: Logger
    let heartbeat: Duration
    let admits: (@Sendable (String, String?) -> Bool)?

    init(endpoint: String, curve: CurveServerConfiguration?, heartbeat: Duration,
         admits: (@Sendable (String, String?) -> Bool)?, logger: Logger) throws {
        self.logger = logger
        self.heartbeat = heartbeat
        self.admits = admits
        context = ZMQContext()
        if let curve {
            zap = try ZAPHandler(context: context, allowed: curve.allowList) { address, key, accepted in
                if !accepted { logger.warning("subscriber refused: key not on the allow-list", metadata: ["peer": "\(address)", "key": "\(key)"]) }
            }
        } else {
            zap = nil
        }
        socket = try ZMQSocket(context, type: admits == nil ? ZMQ_PUB : ZMQ_XPUB)
        if admits != nil { try socket.set(ZMQ_XPUB_MANUAL, Int32(1)) }
        try socket.set(ZMQ_SNDHWM, Int32(100_000))
        if let curve { try socket.applyCurveServer(curve) }
        try socket.bind(endpoint)
    }

    func run(_ publisher: Publisher) {
        let interval = Int(heartbeat.components.seconds * 1000 + heartbeat.components.attoseconds / 1_000_000_000_000_000)
        var nextHeartbeat = ContinuousClock.now + heartbeat
        while true {
            var items = [pollItem(fd: publisher.control.wakeup.fd)]
            if let zap { items.append(pollItem(socket: zap.socket, events: ZMQ_POLLIN)) }
            if admits != nil { items.append(pollItem(socket: socket, events: ZMQ_POLLIN)) }
            do {
                try zmqPoll(&items, timeoutMs: max(1, interval))
                if items[0].readable { publisher.control.wakeup.drain() }
                if zap != nil && items[1].readable { try zap?.serve() }
                if admits != nil && items[items.count - 1].readable { try decideSubscriptions() }
                // The queue first, then the heartbeat with the numbers read as it was taken: each number it
                // announces has gone out before it.
                let (events, sequences) = publisher.takeOutbox()
                for frames in events { try socket.send(frames) }
                if ContinuousClock.now >= nextHeartbeat {
                    nextHeartbeat = .now + heartbeat
                    for (topic, sequence) in sequences {
                        try socket.send(publisher.eventFrames(topic: topic, sequence: sequence, heartbeat: true, payload: []))
                    }
                }
            } catch {
                logger.error("publisher error", metadata: ["error": "\(error)"])
            }
            if publisher.control.isStopped && publisher.state.withLock({ $0.outbox.isEmpty }) { break }
        }
    }

    /// Each (un)subscription waiting on the XPUB socket: `\u{1}topic` or `\u{0}topic`, with the subscriber's
    /// key as its User-Id. An admitted one is applied to that subscriber's pipe (the one the message came
    /// from); unsubscribing always is.
    private func decideSubscriptions() throws {
        guard let admits else { return }
        for _ in 0..<1024 {
            guard let (frames, userId) = try socket.receive(dontWait: true) else { return }
            guard let message = frames.first, let kind = message.first, kind <= 1 else { continue }
            let topic = Array(message.dropFirst())
            if kind == 0 {
                try socket.set(ZMQ_UNSUBSCRIBE, bytes: topic)
                continue
            }
            let text = String(decoding: topic, as: UTF8.self)
            if admits(text, userId) {
                try socket.set(ZMQ_SUBSCRIBE, bytes: topic)
            } else {
                logger.warning("subscription refused", metadata: ["topic": "\(text)", "key": "\(userId ?? "none")"])
            }
        }
    }
}
