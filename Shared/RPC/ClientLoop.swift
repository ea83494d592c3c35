import CZeroMQ
import Foundation
import Logging
import Protocol
import SwiftProtobuf

/// The thread that owns a client's sockets: one DEALER per endpoint (so a dropped connection tells exactly
/// which calls were lost) and a monitor for each.
///
/// Calls go only to connections whose handshake is done. When a connection drops, its calls in flight
/// fail as lost and its DEALER is replaced by a fresh one, so nothing queued on the dead connection is
/// delivered later behind the caller's back. (ZMQ_IMMEDIATE would do the first part, but libzmq then tears
/// the pipe down under a reader in the middle of a multipart reply and asserts in fq.cpp.)
final class ClientLoop: @unchecked Sendable {
    final class Connection {
        let endpoint: String
        var dealer: ZMQSocket
        var monitor: ZMQSocket
        var ready = false
        var authRefused = false
        var inFlight = Set<UInt64>()
        /// After the server refused our key: when to try again (a refused client does not knock in a loop),
        /// and the pause before the next try after that.
        var retryAt: ContinuousClock.Instant?
        var refusedPause = ClientLoop.firstRefusedPause

        init(endpoint: String, sockets: (ZMQSocket, ZMQSocket)) {
            self.endpoint = endpoint
            (dealer, monitor) = sockets
        }
    }

    let context = ZMQContext()
    let configuration: RPCClientConfiguration
    let channel: ClientChannel
    let executor: RPCClientExecutor
    let logger: Logger
    var connections: [Connection] = []
    var pending: [UInt64: (call: PendingCall, connection: Int?)] = [:]
    var unsent: [UInt64] = []
    var cancelledEarly = Set<UInt64>()
    var nextConnection = 0
    var closing = false
    static let firstRefusedPause = Duration.milliseconds(200)
    static let longestRefusedPause = Duration.seconds(5)

    init(configuration: RPCClientConfiguration, executor: RPCClientExecutor, logger: Logger) throws {
        self.configuration = configuration
        self.executor = executor
        self.channel = executor.channel
        self.logger = logger
        for endpoint in configuration.endpoints {
            connections.append(Connection(endpoint: endpoint, sockets: try makeSockets(endpoint)))
        }
    }

    private func makeSockets(_ endpoint: String) throws -> (ZMQSocket, ZMQSocket) {
        let dealer = try ZMQSocket(context, type: ZMQ_DEALER)
        try dealer.set(ZMQ_RECONNECT_IVL, Int32(50))
        try dealer.set(ZMQ_RECONNECT_IVL_MAX, Int32(1000))
        try dealer.set(ZMQ_MAXMSGSIZE, configuration.hardMaxMessageBytes)
        try dealer.set(ZMQ_SNDHWM, Int32(100_000))
        try dealer.set(ZMQ_RCVHWM, Int32(100_000))
        if let curve = configuration.curve { try dealer.applyCurveClient(curve) }
        let monitorEndpoint = "inproc://rpc-client-monitor-\(UUID().uuidString)"
        let events = ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED
        guard zmq_socket_monitor(dealer.handle, monitorEndpoint, events) == 0 else { throw ZMQError("zmq_socket_monitor") }
        let monitor = try ZMQSocket(context, type: ZMQ_PAIR)
        try monitor.connect(monitorEndpoint)
        try dealer.connect(endpoint)
        return (dealer, monitor)
    }

    func run() {
        channel.adoptCurrentThread()
        let executor = self.executor.asUnownedTaskExecutor()
        while !closing {
            reviveRefused()
            var items = [pollItem(fd: channel.wakeup.fd)]
            let wantOut = !unsent.isEmpty
            for connection in connections {
                items.append(pollItem(socket: connection.dealer, events: ZMQ_POLLIN | (wantOut && connection.ready ? ZMQ_POLLOUT : 0)))
                items.append(pollItem(socket: connection.monitor, events: ZMQ_POLLIN))
            }
            do {
                try zmqPoll(&items, timeoutMs: pollTimeoutMs())
                if items[0].readable { channel.wakeup.drain() }
                for (index, connection) in connections.enumerated() {
                    if items[2 + 2 * index].readable { try readMonitor(index) }
                    if items[1 + 2 * index].readable { try readReplies(connection) }
                }
                // Replies resumed their callers; those that prefer this thread run now and may queue their next
                // calls, which go out in this same turn.
                while true {
                    let (commands, jobs) = channel.take()
                    if commands.isEmpty && jobs.isEmpty { break }
                    for command in commands { apply(command) }
                    for job in jobs { job.runSynchronously(on: executor) }
                    if closing { break }
                }
                try sendUnsent()
                expire()
            } catch {
                logger.error("client loop error", metadata: ["error": "\(error)"])
            }
        }
        for (_, entry) in pending { entry.call.continuation.resume(returning: .lost("client is closed")) }
        pending = [:]
        connections = []
        // Calls queued after the close, and tasks that still prefer this thread, are not stranded.
        let (commands, jobs) = channel.finish()
        for case .send(let call) in commands { call.continuation.resume(returning: .lost("client is closed")) }
        for job in jobs { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    /// Connections refused for their key try again once their pause is over.
    private func reviveRefused() {
        let now = ContinuousClock.now
        for connection in connections {
            guard let at = connection.retryAt, at <= now else { continue }
            connection.retryAt = nil
            do {
                (connection.dealer, connection.monitor) = try makeSockets(connection.endpoint)
            } catch {
                logger.error("cannot reconnect", metadata: ["endpoint": "\(connection.endpoint)", "error": "\(error)"])
            }
        }
    }

    private func pollTimeoutMs() -> Int {
        let revival = connections.compactMap(\.retryAt).min()
        guard let nearest = (pending.values.map(\.call.deadline) + (revival.map { [$0] } ?? [])).min() else { return -1 }
        let left = nearest - .now
        if left <= .zero { return 0 }
        let ms = left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1
        return Int(min(ms, 60_000))
    }

    private func apply(_ command: ClientCommand) {
        switch command {
        case .send(let call):
            if cancelledEarly.remove(call.id) != nil {
                call.continuation.resume(throwing: CancellationError())
                return
            }
            pending[call.id] = (call, nil)
            unsent.append(call.id)
        case .cancel(let id):
            if let entry = pending.removeValue(forKey: id) {
                if let index = entry.connection { connections[index].inFlight.remove(id) }
                unsent.removeAll { $0 == id }
                entry.call.continuation.resume(throwing: CancellationError())
            } else {
                cancelledEarly.insert(id)
            }
        case .close:
            closing = true
        }
    }

    private func sendUnsent() throws {
        guard !unsent.isEmpty else { return }
        if connections.allSatisfy(\.authRefused) {
            let refused = unsent
            unsent = []
            for id in refused {
                pending.removeValue(forKey: id)?.call.continuation.resume(
                    returning: .refused("every server refused this client's CURVE key (is it on the allow-list?)"))
            }
            return
        }
        let usable = connections.indices.filter { connections[$0].ready }
        var sentCount = 0
        outer: for id in unsent {
            guard let entry = pending[id] else { sentCount += 1; continue }
            for step in 0..<usable.count {
                let index = usable[(nextConnection + step) % usable.count]
                if try connections[index].dealer.send(entry.call.frames, dontWait: true) {
                    nextConnection = (nextConnection + step + 1) % usable.count
                    pending[id] = (entry.call, index)
                    connections[index].inFlight.insert(id)
                    sentCount += 1
                    continue outer
                }
            }
            break  // no connection can take more now; wait for POLLOUT
        }
        unsent.removeFirst(sentCount)
    }

    private func readReplies(_ connection: Connection) throws {
        for _ in 0..<256 {
            guard let (frames, _) = try connection.dealer.receive(dontWait: true) else { return }
            guard frames.count == 3, frames[0].isEmpty,
                let header = try? Sigma_V1_ReplyHeader(serializedBytes: frames[1])
            else {
                logger.warning("malformed reply ignored", metadata: ["endpoint": "\(connection.endpoint)", "frames": "\(frames.count)"])
                continue
            }
            // A reply to a call that was given up (deadline, cancel, retry) is dropped.
            guard let entry = pending.removeValue(forKey: header.requestID) else { continue }
            connection.inFlight.remove(header.requestID)
            entry.call.continuation.resume(returning: .reply(header, frames[2]))
        }
    }

    private func readMonitor(_ index: Int) throws {
        let connection = connections[index]
        while let (frames, _) = try connection.monitor.receive(dontWait: true) {
            guard frames.count == 2, frames[0].count >= 6 else { continue }
            let event = Int32(UInt16(frames[0][0]) | UInt16(frames[0][1]) << 8)
            switch event {
            case ZMQ_EVENT_DISCONNECTED:
                let lost = connection.inFlight
                connection.inFlight = []
                connection.ready = false
                do {
                    try connection.dealer.set(ZMQ_LINGER, Int32(0))
                    if connection.authRefused {
                        // Refused for our key: knock again after a pause that doubles up to 5 s (a revoked key
                        // may be admitted again later), not at once and forever.
                        connection.dealer.disconnect(connection.endpoint)
                        if connection.retryAt == nil {
                            connection.retryAt = .now + connection.refusedPause
                            connection.refusedPause = min(connection.refusedPause * 2, Self.longestRefusedPause)
                        }
                    } else {
                        (connection.dealer, connection.monitor) = try makeSockets(connection.endpoint)
                    }
                } catch {
                    logger.error("cannot reconnect", metadata: ["endpoint": "\(connection.endpoint)", "error": "\(error)"])
                }
                if !lost.isEmpty {
                    logger.info("connection dropped with calls in flight", metadata: ["endpoint": "\(connection.endpoint)", "calls": "\(lost.count)"])
                }
                for id in lost {
                    pending.removeValue(forKey: id)?.call.continuation.resume(
                        returning: .lost("connection to \(connection.endpoint) dropped"))
                }
            case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
                if !connection.authRefused {
                    logger.warning("server refused our CURVE key", metadata: ["endpoint": "\(connection.endpoint)"])
                }
                connection.authRefused = true
            case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
                connection.authRefused = false
                connection.refusedPause = Self.firstRefusedPause
                connection.ready = true
            default:
                break
            }
        }
    }

    private func expire() {
        let now = ContinuousClock.now
        let expired = pending.filter { $0.value.call.deadline <= now }
        for (id, entry) in expired {
            pending.removeValue(forKey: id)
            if let index = entry.connection { connections[index].inFlight.remove(id) }
            entry.call.continuation.resume(returning: .expired(sent: entry.connection != nil))
        }
        if !expired.isEmpty { unsent.removeAll { expired[$0] != nil } }
    }
}
