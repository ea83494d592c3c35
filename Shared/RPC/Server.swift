import CZeroMQ
import Foundation
import Logging
import Protocol
import SwiftProtobuf
import Synchronization

/// How an ``RPCServer`` listens.
public struct RPCServerConfiguration: Sendable {
    /// A ZeroMQ endpoint, e.g. `tcp://127.0.0.1:7101`; `tcp://127.0.0.1:*` picks a free port.
    public var endpoint: String
    /// Requests larger than this (all frames after the delimiter) get RESOURCE_EXHAUSTED.
    public var maxRequestBytes: Int = 4 << 20
    /// A frame larger than this makes libzmq drop the connection before reading it into memory.
    public var hardMaxMessageBytes: Int64 = 64 << 20
    /// With a key pair, the server requires CURVE and admits only allow-listed client keys.
    public var curve: CurveServerConfiguration?
    /// How long `stop()` waits for calls in flight to answer.
    public var shutdownGrace: Duration = .seconds(2)

    public init(endpoint: String) {
        self.endpoint = endpoint
    }
}

/// A ZeroMQ ROUTER server. One thread owns the socket; every request runs as its own task, so a slow or
/// long-polling handler holds no thread and never blocks the others.
public final class RPCServer: Sendable {
    public let configuration: RPCServerConfiguration
    let handlers: RPCHandlers
    let logger: Logger
    let observer: RPCCallObserver?

    let outbox = Mutex<[[[UInt8]]]>([])
    let inFlight = Mutex<InFlightCalls>(InFlightCalls())
    let wakeup = Wakeup()
    let state = Mutex<State>(State())

    struct State {
        var boundEndpoint: String?
        var started = false
        var stopping = false
        var finished = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        var nextTaskKey: UInt64 = 0
    }

    public init(
        configuration: RPCServerConfiguration, handlers: RPCHandlers, logger: Logger,
        observer: RPCCallObserver? = nil
    ) {
        self.configuration = configuration
        self.handlers = handlers
        self.logger = logger
        self.observer = observer
    }

    /// The endpoint actually bound (with the port filled in), once started.
    public var endpoint: String? { state.withLock { $0.boundEndpoint } }

    /// Binds and starts serving on the server's own thread. Returns the bound endpoint.
    @discardableResult
    public func start() async throws -> String {
        let endpoint: String = try await withCheckedThrowingContinuation { continuation in
            startThread(name: "rpc-server") { [self] in
                serve(reportingTo: continuation)
                let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                    s.finished = true
                    defer { s.waiters = [] }
                    return s.waiters
                }
                waiters.forEach { $0.resume() }
            }
        }
        if configuration.curve == nil {
            logger.warning(
                "CURVE is off: RPC traffic is plain TCP, unauthenticated and unencrypted",
                metadata: ["endpoint": "\(endpoint)"])
        }
        logger.info("serving", metadata: ["endpoint": "\(endpoint)", "methods": "\(handlers.methods.joined(separator: ","))"])
        return endpoint
    }

    /// Runs on the server thread: binds, reports the endpoint, serves until stopped. The sockets and their
    /// context are gone (the port is free again) when this returns.
    private func serve(reportingTo continuation: CheckedContinuation<String, Error>) {
        let loop: ServerLoop
        do {
            loop = try ServerLoop(server: self)
        } catch {
            continuation.resume(throwing: error)
            return
        }
        state.withLock {
            $0.started = true
            $0.boundEndpoint = loop.boundEndpoint
        }
        continuation.resume(returning: loop.boundEndpoint)
        loop.run()
    }

    /// Asks the server to stop without waiting: it stops taking requests and cancels calls in flight.
    public func beginShutdown() {
        state.withLock { $0.stopping = true }
        wakeup.signal()
    }

    /// Stops taking requests, cancels calls in flight, waits up to the grace period for their answers,
    /// then closes the socket.
    public func stop() async {
        beginShutdown()
        await finished()
    }

    /// Returns once the server thread has closed its socket (at once if it never started).
    public func finished() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if !s.started || s.finished { return true }
                s.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    var isStopping: Bool { state.withLock { $0.stopping } }

    // MARK: - Called from handler tasks

    func enqueueReply(_ frames: [[UInt8]]) {
        let wasEmpty = outbox.withLock { box -> Bool in
            box.append(frames)
            return box.count == 1
        }
        if wasEmpty { wakeup.signal() }
    }

    func dispatch(
        identity: [UInt8], header: Sigma_V1_RequestHeader, body: [UInt8], peerKey: String?,
        handler: @escaping RPCHandlers.RawHandler, received: ContinuousClock.Instant
    ) {
        let deadline = header.timeoutMs > 0 ? received + .milliseconds(Int64(clamping: header.timeoutMs)) : nil
        let context = RequestContext(
            method: header.method, requestId: header.requestID, peerKey: peerKey, token: header.token,
            deadline: deadline, serverLogger: logger)
        let once = ReplyOnce()
        let key = state.withLock { s -> UInt64 in
            s.nextTaskKey &+= 1
            return s.nextTaskKey
        }
        // Started immediately on this (the server's) thread: a handler that answers without suspending
        // costs no thread hop; at its first suspension it continues on the cooperative pool.
        let task = Task.immediate { [self] in
            let outcome: (StatusCode, String, [UInt8])
            do {
                outcome = (.ok, "", try await handler(body, context))
            } catch let error as RPCStatusConvertible {
                let rpc = error.rpcError
                outcome = (rpc.code, rpc.message, [])
            } catch is CancellationError {
                outcome = (.unavailable, "server is shutting down", [])
            } catch {
                context.logger.error("handler failed with an unexpected error", metadata: ["error": "\(error)"])
                outcome = (.internal, "internal error: \(type(of: error))", [])
            }
            if once.claim() {
                reply(identity: identity, requestId: header.requestID, method: header.method,
                      status: outcome.0, message: outcome.1, body: outcome.2, received: received)
            }
            inFlight.withLock { $0.finish(key) }
        }
        // The deadline is kept by the server loop (it polls until the earliest one): no timer per call.
        let expiry = deadline.map {
            InFlightCalls.Expiry(deadline: $0, identity: identity, requestId: header.requestID, method: header.method,
                                 timeoutMs: header.timeoutMs, received: received, once: once)
        }
        inFlight.withLock { $0.register(key, task, expiry: expiry) }
    }

    /// Answers DEADLINE_EXCEEDED for every call whose deadline has passed, and cancels its handler.
    /// Called by the server loop, which then sends the replies.
    func expireDeadlines(now: ContinuousClock.Instant = .now) {
        for call in inFlight.withLock({ $0.expired(now: now) }) {
            guard let expiry = call.expiry, expiry.once.claim() else { continue }
            call.task.cancel()
            reply(identity: expiry.identity, requestId: expiry.requestId, method: expiry.method,
                  status: .deadlineExceeded, message: "deadline of \(expiry.timeoutMs) ms exceeded",
                  body: [], received: expiry.received)
        }
    }

    /// The longest reason a reply carries: a caller's input quoted in it (a 4 MiB name) never comes back whole.
    static let maxMessageCharacters = 1000

    static func bounded(_ message: String) -> String {
        guard message.utf8.count > maxMessageCharacters else { return message }
        let count = message.count
        guard count > maxMessageCharacters else { return message }
        return String(message.prefix(maxMessageCharacters)) + "… (cut at \(maxMessageCharacters) of \(count) characters)"
    }

    func reply(
        identity: [UInt8], requestId: UInt64, method: String, status: StatusCode, message: String,
        body: [UInt8], received: ContinuousClock.Instant
    ) {
        var header = Sigma_V1_ReplyHeader()
        header.protocolVersion = sigmaProtocolVersion
        header.requestID = requestId
        header.status = status
        header.message = Self.bounded(message)
        let headerBytes: [UInt8] = (try? header.serializedBytes()) ?? []
        enqueueReply([identity, [], headerBytes, body])
        if let observer {
            let elapsed = ContinuousClock.now - received
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            observer(handlers.handler(for: method) == nil ? "<unknown>" : method, status, seconds)
        }
    }
}

/// Answers a call at most once: either the handler or its deadline, whichever comes first.
final class ReplyOnce: Sendable {
    private let done = Atomic<Bool>(false)
    func claim() -> Bool { !done.exchange(true, ordering: .acquiringAndReleasing) }
}

/// The calls a server is working on: their tasks (to cancel at shutdown) and their deadlines, in a min-heap
/// the server loop polls until the earliest of.
struct InFlightCalls {
    /// What a call's DEADLINE_EXCEEDED reply needs.
    struct Expiry {
        let deadline: ContinuousClock.Instant
        let identity: [UInt8]
        let requestId: UInt64
        let method: String
        let timeoutMs: UInt64
        let received: ContinuousClock.Instant
        let once: ReplyOnce
    }

    struct Call {
        let task: Task<Void, Never>
        let expiry: Expiry?
    }

    var calls: [UInt64: Call] = [:]
    /// Calls that finished before they were registered (they answered without suspending).
    private var finishedEarly = Set<UInt64>()
    /// (deadline, key) of calls with a deadline; entries of calls that finished stay until they come up
    /// (or the heap is rebuilt), and are skipped then.
    private var deadlines = DeadlineHeap()

    var count: Int { calls.count }

    /// The earliest deadline the loop must wake for (perhaps of a call that has finished meanwhile).
    var nextDeadline: ContinuousClock.Instant? { deadlines.min?.deadline }

    /// Records a started call, unless it has already finished.
    mutating func register(_ key: UInt64, _ task: Task<Void, Never>, expiry: Expiry?) {
        if finishedEarly.remove(key) != nil { return }
        calls[key] = Call(task: task, expiry: expiry)
        guard let expiry else { return }
        deadlines.insert((expiry.deadline, key))
        // Mostly finished calls' entries: rebuild from the calls still running.
        if deadlines.count > 1024 && deadlines.count > 4 * calls.count {
            deadlines = DeadlineHeap(calls.compactMap { key, call in call.expiry.map { ($0.deadline, key) } })
        }
    }

    /// Forgets a finished call.
    mutating func finish(_ key: UInt64) {
        if calls.removeValue(forKey: key) == nil { finishedEarly.insert(key) }
    }

    /// The running calls whose deadline is at or before `now` (they stay registered until their task ends).
    mutating func expired(now: ContinuousClock.Instant) -> [Call] {
        var due: [Call] = []
        while let top = deadlines.min, top.deadline <= now {
            deadlines.removeMin()
            if let call = calls[top.key] { due.append(call) }
        }
        return due
    }
}

/// A binary min-heap of (deadline, key).
struct DeadlineHeap {
    typealias Entry = (deadline: ContinuousClock.Instant, key: UInt64)
    private var entries: [Entry] = []

    init() {}

    init(_ entries: [Entry]) {
        self.entries = entries
        for index in stride(from: entries.count / 2 - 1, through: 0, by: -1) { siftDown(index) }
    }

    var count: Int { entries.count }
    var min: Entry? { entries.first }

    mutating func insert(_ entry: Entry) {
        entries.append(entry)
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].deadline < entries[parent].deadline else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    mutating func removeMin() {
        guard !entries.isEmpty else { return }
        entries.swapAt(0, entries.count - 1)
        entries.removeLast()
        siftDown(0)
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < entries.count && entries[left].deadline < entries[smallest].deadline { smallest = left }
            if right < entries.count && entries[right].deadline < entries[smallest].deadline { smallest = right }
            guard smallest != parent else { return }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
