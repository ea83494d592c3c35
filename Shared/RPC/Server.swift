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
            inFlight.withLock { $0.finish(key) }?.cancel()
        }
        let running = inFlight.withLock { $0.register(key, task) }
        guard running, let deadline else { return }
        let timer = Task { [self] in
            try? await Task.sleep(until: deadline, clock: .continuous)
            guard !Task.isCancelled, once.claim() else { return }
            inFlight.withLock { $0.calls[key]?.task.cancel() }
            reply(identity: identity, requestId: header.requestID, method: header.method,
                  status: .deadlineExceeded, message: "deadline of \(header.timeoutMs) ms exceeded",
                  body: [], received: received)
        }
        inFlight.withLock { $0.attachTimer(key, timer) }?.cancel()
    }

    func reply(
        identity: [UInt8], requestId: UInt64, method: String, status: StatusCode, message: String,
        body: [UInt8], received: ContinuousClock.Instant
    ) {
        var header = Sigma_V1_ReplyHeader()
        header.protocolVersion = sigmaProtocolVersion
        header.requestID = requestId
        header.status = status
        header.message = message
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

/// The calls a server is working on: their tasks (to cancel at shutdown) and deadline timers (to cancel
/// when the call answers first).
struct InFlightCalls {
    struct Call {
        let task: Task<Void, Never>
        var timer: Task<Void, Never>?
    }

    var calls: [UInt64: Call] = [:]
    /// Calls that finished before they were registered (they answered without suspending).
    private var finishedEarly = Set<UInt64>()

    var count: Int { calls.count }

    /// Records a started call; false when it has already finished.
    mutating func register(_ key: UInt64, _ task: Task<Void, Never>) -> Bool {
        if finishedEarly.remove(key) != nil { return false }
        calls[key] = Call(task: task)
        return true
    }

    /// Forgets a finished call and returns its timer to cancel.
    mutating func finish(_ key: UInt64) -> Task<Void, Never>? {
        guard let call = calls.removeValue(forKey: key) else {
            finishedEarly.insert(key)
            return nil
        }
        return call.timer
    }

    /// Attaches a deadline timer; returns it back (to cancel) when the call finished meanwhile.
    mutating func attachTimer(_ key: UInt64, _ timer: Task<Void, Never>) -> Task<Void, Never>? {
        guard calls[key] != nil else { return timer }
        calls[key]?.timer = timer
        return nil
    }
}
