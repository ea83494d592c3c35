import CZeroMQ
import Foundation
import Logging
import Protocol
import SwiftProtobuf

/// The thread that owns a server's sockets: the ROUTER, its monitor and, with CURVE, the ZAP handler.
/// It reads requests, hands each to a task, and writes the replies those tasks leave in the outbox.
final class ServerLoop {
    let server: RPCServer
    let context: ZMQContext
    let router: ZMQSocket
    let monitor: ZMQSocket
    let zap: ZAPHandler?
    let boundEndpoint: String
    private var logger: Logger { server.logger }

    init(server: RPCServer) throws {
        self.server = server
        let configuration = server.configuration
        // A context of its own: its ZAP endpoint carries this server's allow-list, and terminating it at
        // stop releases the port before stop() returns (a shared context closes sockets asynchronously).
        context = ZMQContext()
        if let curve = configuration.curve {
            let logger = server.logger
            zap = try ZAPHandler(context: context, allowed: curve.allowList) { address, key, accepted in
                if accepted {
                    logger.debug("CURVE client admitted", metadata: ["peer": "\(address)", "key": "\(key)"])
                } else {
                    logger.warning("CURVE client refused: key not on the allow-list", metadata: ["peer": "\(address)", "key": "\(key)"])
                }
            }
        } else {
            zap = nil
        }
        router = try ZMQSocket(context, type: ZMQ_ROUTER)
        try router.set(ZMQ_MAXMSGSIZE, configuration.hardMaxMessageBytes)
        try router.set(ZMQ_ROUTER_MANDATORY, Int32(0))
        try router.set(ZMQ_SNDHWM, Int32(100_000))
        try router.set(ZMQ_RCVHWM, Int32(100_000))
        if let curve = configuration.curve { try router.applyCurveServer(curve) }

        let monitorEndpoint = "inproc://rpc-monitor-\(UUID().uuidString)"
        let events = ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
        guard zmq_socket_monitor(router.handle, monitorEndpoint, events) == 0 else { throw ZMQError("zmq_socket_monitor") }
        monitor = try ZMQSocket(context, type: ZMQ_PAIR)
        try monitor.connect(monitorEndpoint)

        try router.bind(configuration.endpoint)
        boundEndpoint = router.lastEndpoint
    }

    func run() {
        var stopDeadline: ContinuousClock.Instant?
        while true {
            if stopDeadline == nil && server.isStopping {
                stopDeadline = .now + server.configuration.shutdownGrace
                let tasks = server.inFlight.withLock { $0.calls.values.map(\.task) }
                tasks.forEach { $0.cancel() }
            }
            if let stopDeadline {
                let pending = server.inFlight.withLock { $0.count }
                if (pending == 0 && server.outbox.withLock { $0.isEmpty }) || ContinuousClock.now >= stopDeadline { break }
            }
            var items = [
                pollItem(fd: server.wakeup.fd),
                pollItem(socket: monitor, events: ZMQ_POLLIN),
                // While stopping, new requests stay unread; the socket closes once the calls in flight answered.
                pollItem(socket: router, events: stopDeadline == nil ? ZMQ_POLLIN : 0),
            ]
            if let zap { items.append(pollItem(socket: zap.socket, events: ZMQ_POLLIN)) }
            do {
                try zmqPoll(&items, timeoutMs: stopDeadline == nil ? msUntilNextDeadline() : 50)
                if items[0].readable { server.wakeup.drain() }
                server.expireDeadlines()
                try flushOutbox()
                if items[1].readable { try readMonitor() }
                if items.count > 3 && items[3].readable { try zap?.serve() }
                if items[2].readable {
                    try readRequests()
                    // Handlers that finished without suspending have answered already: send at once.
                    try flushOutbox()
                }
            } catch {
                logger.error("server loop error", metadata: ["error": "\(error)"])
            }
        }
        logger.info("stopped", metadata: ["endpoint": "\(boundEndpoint)"])
    }

    /// How long the loop may wait for a socket: until the earliest deadline of a call (rounded up), or forever.
    private func msUntilNextDeadline() -> Int {
        guard let next = server.inFlight.withLock({ $0.nextDeadline }) else { return -1 }
        let left = next - .now
        guard left > .zero else { return 0 }
        // A deadline days away (a header may ask for any number of milliseconds): wake now and then, recompute.
        guard left < .seconds(86_400) else { return 86_400_000 }
        let ms = left.components.seconds * 1000 + (left.components.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int(ms)
    }

    private func flushOutbox() throws {
        let replies = server.outbox.withLock { box -> [[[UInt8]]] in
            defer { box = [] }
            return box
        }
        for frames in replies {
            // A peer that went away is no error: its reply is dropped (ROUTER semantics).
            do { try router.send(frames) } catch { logger.debug("reply dropped", metadata: ["error": "\(error)"]) }
        }
    }

    /// Reads up to a batch of waiting requests, so replies keep flowing under load.
    private func readRequests() throws {
        for _ in 0..<256 {
            guard let (frames, userId) = try router.receive(dontWait: true) else { return }
            handle(frames: frames, peerKey: userId)
        }
    }

    private func handle(frames: [[UInt8]], peerKey: String?) {
        let received = ContinuousClock.now
        let identity = frames[0]
        func refuse(_ requestId: UInt64, _ method: String, _ code: StatusCode, _ message: String) {
            logger.notice("request refused", metadata: ["status": "\(code.name)", "reason": "\(message)"])
            server.reply(identity: identity, requestId: requestId, method: method, status: code, message: message,
                         body: [], received: received)
        }
        guard frames.count >= 2, frames[1].isEmpty else {
            return refuse(0, "", .invalidArgument, "malformed request: the first frame must be an empty delimiter")
        }
        let header: Sigma_V1_RequestHeader? = frames.count >= 3 ? try? Sigma_V1_RequestHeader(serializedBytes: frames[2]) : nil
        let requestId = header?.requestID ?? 0
        let size = frames.dropFirst(2).reduce(0) { $0 + $1.count }
        if size > server.configuration.maxRequestBytes {
            return refuse(requestId, header?.method ?? "", .resourceExhausted,
                          "request of \(size) bytes is over the limit of \(server.configuration.maxRequestBytes) bytes")
        }
        guard frames.count == 4 else {
            return refuse(requestId, header?.method ?? "", .invalidArgument,
                          "malformed request: expected 2 frames after the delimiter (header, body), got \(frames.count - 2)")
        }
        guard let header else {
            return refuse(0, "", .invalidArgument, "malformed request: the header frame is not a sigma.v1.RequestHeader")
        }
        guard header.protocolVersion == sigmaProtocolVersion else {
            return refuse(requestId, header.method, .failedPrecondition,
                          "protocol version \(header.protocolVersion) is not supported; this server speaks \(sigmaProtocolVersion)")
        }
        guard let handler = server.handlers.handler(for: header.method) else {
            return refuse(requestId, header.method, .unimplemented, "unknown method '\(header.method.prefix(200))'")
        }
        server.dispatch(identity: identity, header: header, body: frames[3], peerKey: peerKey, handler: handler,
                        received: received)
    }

    private func readMonitor() throws {
        while let (frames, _) = try monitor.receive(dontWait: true) {
            guard frames.count == 2, frames[0].count >= 6 else { continue }
            let event = Int32(UInt16(frames[0][0]) | UInt16(frames[0][1]) << 8)
            let peer = String(decoding: frames[1], as: UTF8.self)
            switch event {
            case ZMQ_EVENT_DISCONNECTED:
                logger.info(
                    "peer disconnected (it closed, or sent a frame over the hard cap of \(server.configuration.hardMaxMessageBytes) bytes)",
                    metadata: ["endpoint": "\(peer)"])
            case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
                // The ZAP handler has said which key it refused (once a minute per key).
                logger.debug("peer failed authentication", metadata: ["endpoint": "\(peer)"])
            default:
                logger.warning("peer handshake failed", metadata: ["endpoint": "\(peer)", "event": "\(event)"])
            }
        }
    }
}
