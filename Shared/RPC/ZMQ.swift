import CZeroMQ
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An error reported by libzmq.
public struct ZMQError: Error, CustomStringConvertible, Sendable {
    public let errno: Int32
    public let operation: String

    init(_ operation: String, errno: Int32 = zmq_errno()) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String { "\(operation): \(String(cString: zmq_strerror(errno)))" }
    var isAgain: Bool { errno == EAGAIN }
}

/// A libzmq context. Sockets of one context may talk over `inproc://`.
final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer


    init() {
        handle = zmq_ctx_new()!
    }

    deinit {
        zmq_ctx_term(handle)
    }
}


/// A libzmq socket. Not thread-safe: only the thread that owns it may use it (docs/architecture.md, "Threads").
final class ZMQSocket {
    let handle: UnsafeMutableRawPointer
    // Keeps the context alive for as long as the socket is.
    private let context: ZMQContext

    init(_ context: ZMQContext, type: Int32) throws {
        guard let handle = zmq_socket(context.handle, type) else { throw ZMQError("zmq_socket") }
        self.handle = handle
        self.context = context
        // Not 0: with linger 0 libzmq tears a disconnected peer's pipe down at once, and a multipart message
        // being read from it at that moment trips `!_more` in fq.cpp. With a linger the pipe drains first.
        try set(ZMQ_LINGER, Int32(200))
    }

    deinit {
        zmq_close(handle)
    }

    func set(_ option: Int32, _ value: Int32) throws {
        var v = value
        guard zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size) == 0 else {
            throw ZMQError("zmq_setsockopt(\(option))")
        }
    }

    func set(_ option: Int32, _ value: Int64) throws {
        var v = value
        guard zmq_setsockopt(handle, option, &v, MemoryLayout<Int64>.size) == 0 else {
            throw ZMQError("zmq_setsockopt(\(option))")
        }
    }

    func set(_ option: Int32, _ value: String) throws {
        let rc = value.withCString { zmq_setsockopt(handle, option, $0, strlen($0)) }
        guard rc == 0 else { throw ZMQError("zmq_setsockopt(\(option))") }
    }

    func set(_ option: Int32, bytes: [UInt8]) throws {
        let rc = bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        guard rc == 0 else { throw ZMQError("zmq_setsockopt(\(option))") }
    }

    func getString(_ option: Int32) throws -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        var size = buffer.count
        guard zmq_getsockopt(handle, option, &buffer, &size) == 0 else { throw ZMQError("zmq_getsockopt(\(option))") }
        return string(fromCBuffer: buffer)
    }

    func getInt32(_ option: Int32) throws -> Int32 {
        var value: Int32 = 0
        var size = MemoryLayout<Int32>.size
        guard zmq_getsockopt(handle, option, &value, &size) == 0 else { throw ZMQError("zmq_getsockopt(\(option))") }
        return value
    }

    func bind(_ endpoint: String) throws {
        guard zmq_bind(handle, endpoint) == 0 else { throw ZMQError("zmq_bind(\(endpoint))") }
    }

    func connect(_ endpoint: String) throws {
        guard zmq_connect(handle, endpoint) == 0 else { throw ZMQError("zmq_connect(\(endpoint))") }
    }

    /// The endpoint actually bound (resolves `tcp://127.0.0.1:*` to the chosen port).
    var lastEndpoint: String { (try? getString(ZMQ_LAST_ENDPOINT)) ?? "" }

    /// Stops connecting to `endpoint` (no error when it was not connected).
    func disconnect(_ endpoint: String) {
        _ = zmq_disconnect(handle, endpoint)
    }

    /// Sends all frames as one multipart message. Returns false when the socket would block
    /// (only possible with `dontWait`); nothing has been sent then.
    @discardableResult
    func send(_ frames: [[UInt8]], dontWait: Bool = false) throws -> Bool {
        for (index, frame) in frames.enumerated() {
            var flags: Int32 = index < frames.count - 1 ? ZMQ_SNDMORE : 0
            if dontWait { flags |= ZMQ_DONTWAIT }
            let rc = frame.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
            if rc < 0 {
                let error = ZMQError("zmq_send")
                // libzmq sends a multipart message atomically: EAGAIN can only happen on the first frame.
                if error.isAgain && index == 0 { return false }
                throw error
            }
        }
        return true
    }

    /// Receives one multipart message. Returns nil when nothing is waiting (with `dontWait`).
    /// `userId` is the ZAP user id of the peer (its CURVE public key in Z85), when authenticated.
    func receive(dontWait: Bool = false) throws -> (frames: [[UInt8]], userId: String?)? {
        var frames: [[UInt8]] = []
        var userId: String?
        while true {
            var message = zmq_msg_t()
            zmq_msg_init(&message)
            defer { zmq_msg_close(&message) }
            let rc = zmq_msg_recv(&message, handle, dontWait ? ZMQ_DONTWAIT : 0)
            if rc < 0 {
                let error = ZMQError("zmq_msg_recv")
                if error.isAgain && frames.isEmpty { return nil }
                throw error
            }
            let size = zmq_msg_size(&message)
            if size > 0, let data = zmq_msg_data(&message) {
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            } else {
                frames.append([])
            }
            // A ROUTER's identity frame is made locally and carries no metadata; the peer's frames do.
            if userId == nil, let property = zmq_msg_gets(&message, "User-Id") {
                let value = String(cString: property)
                if !value.isEmpty { userId = value }
            }
            if zmq_msg_more(&message) == 0 { break }
        }
        return (frames, userId)
    }
}

/// Waits until one of the sockets or file descriptors is ready. `timeoutMs` < 0 waits forever.
/// Returns the revents of each item, in order.
func zmqPoll(_ items: inout [zmq_pollitem_t], timeoutMs: Int) throws {
    let rc = items.withUnsafeMutableBufferPointer { zmq_poll($0.baseAddress, Int32($0.count), timeoutMs) }
    if rc < 0 {
        let error = ZMQError("zmq_poll")
        if error.errno == EINTR { return }
        throw error
    }
}

func pollItem(socket: ZMQSocket, events: Int32) -> zmq_pollitem_t {
    zmq_pollitem_t(socket: socket.handle, fd: 0, events: Int16(events), revents: 0)
}

func pollItem(fd: Int32) -> zmq_pollitem_t {
    zmq_pollitem_t(socket: nil, fd: fd, events: Int16(ZMQ_POLLIN), revents: 0)
}

extension zmq_pollitem_t {
    var readable: Bool { revents & Int16(ZMQ_POLLIN) != 0 }
    var writable: Bool { revents & Int16(ZMQ_POLLOUT) != 0 }
}

/// Wakes a thread blocked in `zmq_poll` from any other thread (an eventfd in the poll set).
final class Wakeup: @unchecked Sendable {
    let fd: Int32

    init() {
        fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        precondition(fd >= 0, "eventfd failed: \(errno)")
    }

    deinit { close(fd) }

    func signal() {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    func drain() {
        var value: UInt64 = 0
        _ = read(fd, &value, 8)
    }
}

/// Starts a named thread that runs `body` (the owner of one or more sockets).
func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = name
    thread.stackSize = 1 << 20
    thread.start()
}

/// The text of a NUL-terminated C buffer.
func string(fromCBuffer buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Tells a socket-owning thread to finish: a flag plus the wakeup that interrupts its poll.
final class LoopControl: Sendable {
    let wakeup = Wakeup()
    private let stopped = Atomic<Bool>(false)

    func stop() {
        stopped.store(true, ordering: .releasing)
        wakeup.signal()
    }

    var isStopped: Bool { stopped.load(ordering: .acquiring) }
}
