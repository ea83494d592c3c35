import CZeroMQ
import Foundation
import Logging
import Protocol
import SwiftProtobuf
import Synchronization

/// How an ``RPCClient`` reaches a service.
public struct RPCClientConfiguration: Sendable {
    /// Every replica's endpoint; calls are spread over those that are connected.
    public var endpoints: [String]
    /// Used when a call names no timeout.
    public var defaultTimeout: Duration = .seconds(10)
    /// Longest pause between two attempts of an idempotent call.
    public var maxBackoff: Duration = .milliseconds(500)
    public var curve: CurveClientConfiguration?
    /// A reply frame larger than this drops the connection (protects the client's memory).
    public var hardMaxMessageBytes: Int64 = 64 << 20

    public init(endpoints: [String]) {
        self.endpoints = endpoints
    }
}

/// An async client for one service (all its replicas). Safe to use from many tasks at once: each call has
/// its own request id, so many can be in flight on one connection. A call waits at most its timeout;
/// idempotent calls are retried with backoff when a replica is unreachable or drops the connection.
public final class RPCClient: Sendable {
    public let configuration: RPCClientConfiguration
    let logger: Logger
    let channel = ClientChannel()
    /// The socket thread as a task executor. `withTaskExecutorPreference(client.executor) { ... }` runs a
    /// caller's loop of calls on it, which saves two thread hand-offs a call; the code in it must not block.
    public let executor: RPCClientExecutor
    let nextId = Atomic<UInt64>(0)
    let closed = Atomic<Bool>(false)

    public init(configuration: RPCClientConfiguration, logger: Logger = Logger(label: "sigma.rpc.client")) throws {
        guard !configuration.endpoints.isEmpty else { throw RPCConfigurationError("no endpoints given") }
        self.configuration = configuration
        self.logger = logger
        executor = RPCClientExecutor(channel: channel)
        // Sockets are made and connected here, then handed to the loop thread for good.
        let loop = try ClientLoop(configuration: configuration, executor: executor, logger: logger)
        startThread(name: "rpc-client") { loop.run() }
    }

    deinit {
        close()
    }

    /// Closes the connections; calls still waiting fail with UNAVAILABLE.
    public func close() {
        if !closed.exchange(true, ordering: .acquiringAndReleasing) {
            enqueue(.close)
        }
    }

    func enqueue(_ command: ClientCommand) { channel.enqueue(command) }

    /// Calls `method` and returns its typed response, or throws ``RPCError`` with the server's status
    /// (or UNAVAILABLE / DEADLINE_EXCEEDED when no answer came in time).
    public func call<Request, Response>(
        _ method: RPCMethod<Request, Response>, _ request: Request, timeout: Duration? = nil, token: String = ""
    ) async throws -> Response {
        let body: [UInt8] = try request.serializedBytes()
        let reply = try await callRaw(method: method.name, body: body, idempotent: method.idempotent,
                                      timeout: timeout, token: token)
        do {
            return try Response(serializedBytes: reply)
        } catch {
            throw RPCError.internal("reply of \(method.name) is not a valid \(Response.protoMessageName)")
        }
    }

    /// The untyped form of ``call(_:_:timeout:token:)``: payload bytes in, payload bytes out.
    public func callRaw(
        method: String, body: [UInt8], idempotent: Bool, timeout: Duration? = nil, token: String = ""
    ) async throws -> [UInt8] {
        let deadline = ContinuousClock.now + (timeout ?? configuration.defaultTimeout)
        var attempt = 0
        while true {
            attempt += 1
            let outcome = try await exchange(method: method, body: body, token: token, deadline: deadline)
            switch outcome {
            case .reply(let header, let payload):
                if header.status == .ok { return payload }
                let error = RPCError(header.status, header.message)
                if header.status == .unavailable && idempotent && ContinuousClock.now < deadline {
                    try await backoff(attempt: attempt, deadline: deadline)
                    continue
                }
                throw error
            case .lost(let reason):
                if idempotent && ContinuousClock.now < deadline {
                    logger.debug("retrying", metadata: ["method": "\(method)", "attempt": "\(attempt)", "reason": "\(reason)"])
                    try await backoff(attempt: attempt, deadline: deadline)
                    continue
                }
                throw RPCError.unavailable("\(method): \(reason)")
            case .expired(let sent):
                if sent {
                    throw RPCError.deadlineExceeded("\(method): no reply before the deadline")
                }
                throw RPCError.unavailable(
                    "\(method): no server reachable at \(configuration.endpoints.joined(separator: ", ")) before the deadline")
            case .refused(let reason):
                throw RPCError.unauthenticated("\(method): \(reason)")
            }
        }
    }

    private func backoff(attempt: Int, deadline: ContinuousClock.Instant) async throws {
        let base = Duration.milliseconds(10) * (1 << min(attempt, 10))
        let capped = min(base, configuration.maxBackoff)
        let jittered = capped * Double.random(in: 0.5...1.0)
        let remaining = deadline - .now
        try await Task.sleep(for: min(jittered, max(remaining, .zero)))
    }

    private func exchange(method: String, body: [UInt8], token: String, deadline: ContinuousClock.Instant) async throws
        -> CallOutcome
    {
        if closed.load(ordering: .acquiring) { return .lost("client is closed") }
        let id = nextId.add(1, ordering: .relaxed).newValue
        var header = Sigma_V1_RequestHeader()
        header.protocolVersion = sigmaProtocolVersion
        header.method = method
        header.requestID = id
        header.token = token
        let remaining = deadline - .now
        header.timeoutMs = UInt64(max(1, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000))
        let frames: [[UInt8]] = [[], try header.serializedBytes(), body]
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                enqueue(.send(PendingCall(id: id, frames: frames, deadline: deadline, continuation: continuation)))
            }
        } onCancel: {
            enqueue(.cancel(id))
        }
    }
}

enum CallOutcome: Sendable {
    case reply(Sigma_V1_ReplyHeader, [UInt8])
    /// Sent, but the connection it went over dropped.
    case lost(String)
    /// The deadline passed; `sent` tells whether any server got the request.
    case expired(sent: Bool)
    /// Every endpoint refused our CURVE key.
    case refused(String)
}

struct PendingCall: Sendable {
    let id: UInt64
    let frames: [[UInt8]]
    let deadline: ContinuousClock.Instant
    let continuation: CheckedContinuation<CallOutcome, Error>
}

enum ClientCommand: Sendable {
    case send(PendingCall)
    case cancel(UInt64)
    case close
}

/// Commands from calling tasks, and jobs of tasks that prefer the loop's executor, to the loop thread that
/// owns the sockets.
final class ClientChannel: Sendable {
    struct Queue {
        var commands: [ClientCommand] = []
        var jobs: [UnownedJob] = []
        /// Set when the loop thread has ended: jobs then go to the global executor.
        var finished = false
    }

    let queue = Mutex<Queue>(Queue())
    let wakeup = Wakeup()
    /// The loop thread, so that work it queues for itself does not wake it (it looks again before polling).
    let loopThread = Atomic<UInt>(0)

    /// The calling thread, as `loopThread` holds it.
    static var currentThread: UInt { UInt(bitPattern: Int(bitPattern: UInt(pthread_self()))) }

    var onLoopThread: Bool { loopThread.load(ordering: .relaxed) == Self.currentThread }

    /// Called by the loop thread before it starts.
    func adoptCurrentThread() { loopThread.store(Self.currentThread, ordering: .relaxed) }

    func enqueue(_ command: ClientCommand) {
        let queued = push { $0.commands.append(command) }
        if !queued, case .send(let call) = command { call.continuation.resume(returning: .lost("client is closed")) }
    }

    /// Queues a job for the loop thread; false when the loop has ended (the caller runs it elsewhere).
    func enqueue(job: UnownedJob) -> Bool {
        push { $0.jobs.append(job) }
    }

    /// Adds to the queue unless the loop has ended, and wakes the loop when the queue was empty (unless the loop
    /// itself is adding: it looks again before polling). False when the loop has ended.
    private func push(_ add: (inout Queue) -> Void) -> Bool {
        let outcome = queue.withLock { queue -> (queued: Bool, wasEmpty: Bool) in
            guard !queue.finished else { return (false, false) }
            add(&queue)
            return (true, queue.commands.count + queue.jobs.count == 1)
        }
        if outcome.wasEmpty && !onLoopThread { wakeup.signal() }
        return outcome.queued
    }

    func take() -> (commands: [ClientCommand], jobs: [UnownedJob]) {
        queue.withLock { queue in
            defer { queue.commands = []; queue.jobs = [] }
            return (queue.commands, queue.jobs)
        }
    }

    /// The loop has ended: what is still queued, for the caller to fail (calls) or hand on (jobs).
    func finish() -> (commands: [ClientCommand], jobs: [UnownedJob]) {
        queue.withLock { queue in
            queue.finished = true
            defer { queue.commands = []; queue.jobs = [] }
            return (queue.commands, queue.jobs)
        }
    }
}

/// Runs the jobs of tasks that prefer it on the client's socket thread (``RPCClient/executor``). A reply then
/// resumes its caller on the thread that received it, and the caller's next request is sent in the same
/// turn of the loop: neither direction crosses threads. Code run this way must not block; the loop serves
/// every call of its client meanwhile.
public final class RPCClientExecutor: TaskExecutor, Sendable {
    let channel: ClientChannel

    init(channel: ClientChannel) {
        self.channel = channel
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        if !channel.enqueue(job: unowned) {
            globalConcurrentExecutor.enqueue(ExecutorJob(unowned))
        }
    }

    /// Whether the caller runs on this client's socket thread (for checks like `dispatchPrecondition`).
    public var isCurrent: Bool { channel.onLoopThread }

    public func asUnownedTaskExecutor() -> UnownedTaskExecutor {
        UnownedTaskExecutor(ordinary: self)
    }
}
