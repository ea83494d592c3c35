import CZeroMQ
import Foundation
import Synchronization

/// A bare DEALER that sends whatever frames it is given: for protocol tests, fuzzers and clients of other
/// tools. Each exchange runs its blocking calls on a thread of its own, never on the cooperative pool.
public final class RawDealer: Sendable {
    private let socket: Mutex<ZMQSocketBox>

    public init(endpoint: String, curve: CurveClientConfiguration? = nil) throws {
        let context = ZMQContext()
        let dealer = try ZMQSocket(context, type: ZMQ_DEALER)
        if let curve { try dealer.applyCurveClient(curve) }
        try dealer.connect(endpoint)
        socket = Mutex(ZMQSocketBox(dealer))
    }

    /// Sends `frames` as one message and returns the first reply, or nil when none came within `timeout`.
    public func exchange(_ frames: [[UInt8]], timeout: Duration) async throws -> [[UInt8]]? {
        try await withCheckedThrowingContinuation { continuation in
            startThread(name: "raw-dealer") { [self] in
                do {
                    let reply = try socket.withLock { box -> [[UInt8]]? in
                        try box.socket.send(frames)
                        var items = [pollItem(socket: box.socket, events: ZMQ_POLLIN)]
                        let ms = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
                        try zmqPoll(&items, timeoutMs: ms)
                        guard items[0].readable else { return nil }
                        return try box.socket.receive(dontWait: true)?.frames
                    }
                    continuation.resume(returning: reply)
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }
}

/// Moves a socket between threads under a lock (a full memory barrier, as libzmq requires).
struct ZMQSocketBox: @unchecked Sendable {
    let socket: ZMQSocket
    init(_ socket: ZMQSocket) { self.socket = socket }
}
