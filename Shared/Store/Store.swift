import Foundation
import Logging
import Synchronization

/// Where the store connects and how many connections it keeps.
public struct StoreConfiguration: Sendable {
    /// A libpq connection URL or conninfo string (`SIGMA_DATABASE_URL`); may name several hosts.
    public var url: String
    public var poolSize: Int = 8
    /// How long a call waits for a free connection before it fails with UNAVAILABLE.
    public var acquireTimeout: Duration = .seconds(10)
    /// How long one connection attempt may take (bounds every call while PostgreSQL is down).
    public var connectTimeoutSeconds: Int = 3
    public var statementTimeout: Duration = .seconds(30)
    /// How often a conflicting transaction (40001, 40P01) is tried in all.
    public var maxTransactionAttempts: Int = 10
    public var applicationName: String = "sigma"

    public init(url: String) {
        self.url = url
    }

    /// The conninfo actually used: the URL plus timeouts and keepalives, so that a dead peer is noticed.
    var conninfo: String {
        let extras = [
            "connect_timeout=\(connectTimeoutSeconds)", "keepalives=1", "keepalives_idle=5",
            "keepalives_interval=2", "keepalives_count=3", "application_name=\(applicationName)",
            "target_session_attrs=read-write",
        ]
        if url.contains("://") {
            return url + (url.contains("?") ? "&" : "?") + extras.joined(separator: "&")
        }
        return url + " " + extras.joined(separator: " ")
    }
}

/// The one gateway to PostgreSQL: a pool of connections, each owned by its own thread.
///
/// Queries take their values as parameters, never pasted into SQL. Calls made while PostgreSQL is down
/// fail with ``StoreError/Code/unavailable`` within the connect timeout; the next call reconnects.
public final class Store: Sendable {
    public let configuration: StoreConfiguration
    let logger: Logger
    private let workers: [PGWorker]
    private let pool: Mutex<PoolState>

    struct PoolState {
        var free: [Int]
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Int, Error>)] = []
        var nextWaiter: UInt64 = 0
        /// Waiters whose timer may fire before they are queued, and those whose timer did: a waiter queued
        /// after its own deadline fails at once instead of waiting for a free connection without a bound.
        var queuing: Set<UInt64> = []
        var expired: Set<UInt64> = []
        var closed = false
    }

    public init(configuration: StoreConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        let setup = [
            "SET TIME ZONE 'UTC'",
            "SET statement_timeout = \(Int(configuration.statementTimeout.components.seconds * 1000))",
        ]
        workers = (0..<max(1, configuration.poolSize)).map {
            PGWorker(conninfo: configuration.conninfo, sessionSetup: setup, name: "pg-\($0)")
        }
        pool = Mutex(PoolState(free: Array(workers.indices)))
    }

    deinit {
        workers.forEach { $0.stop() }
    }

    /// Stops the worker threads and closes the connections.
    public func shutdown() {
        let waiters = pool.withLock { state -> [CheckedContinuation<Int, Error>] in
            state.closed = true
            defer { state.waiters = [] }
            return state.waiters.map(\.continuation)
        }
        waiters.forEach { $0.resume(throwing: StoreError(.unavailable, "store is shut down")) }
        workers.forEach { $0.stop() }
    }

    // MARK: - Queries

    /// Runs one statement and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ parameters: PGEncodable?...) async throws -> [Row] {
        try await query(sql, parameters: parameters)
    }

    public func query(_ sql: String, parameters: [PGEncodable?]) async throws -> [Row] {
        try await withConnection { try $0.execute(sql, parameters).rows }
    }

    /// Runs one statement and returns the number of rows it changed.
    @discardableResult
    public func execute(_ sql: String, _ parameters: PGEncodable?...) async throws -> Int {
        try await withConnection { try $0.execute(sql, parameters).affected }
    }

    /// Publishes `payload` on `channel` to every listener (PostgreSQL NOTIFY).
    public func notify(channel: String, payload: String) async throws {
        try await execute("SELECT pg_notify($1, $2)", channel, payload)
    }

    /// Runs `body` in a transaction and commits it. A serialization failure or deadlock (40001, 40P01)
    /// anywhere in it rolls back and runs `body` again, up to `maxTransactionAttempts` times in all, so
    /// `body` must not have effects outside the transaction.
    public func transaction<T: Sendable>(
        isolation: IsolationLevel = .serializable,
        _ body: @Sendable (Transaction) async throws -> T
    ) async throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            let index = try await acquire()
            defer { release(index) }
            let transaction = Transaction(worker: workers[index], attempt: attempt)
            do {
                try await transaction.execute("BEGIN ISOLATION LEVEL \(isolation.rawValue)")
                let result = try await body(transaction)
                try await transaction.execute("COMMIT")
                return result
            } catch let error as StoreError {
                _ = try? await transaction.execute("ROLLBACK")
                if error.code == .conflict && attempt < configuration.maxTransactionAttempts {
                    logger.debug("transaction conflict, retrying", metadata: ["attempt": "\(attempt)", "sqlstate": "\(error.sqlState ?? "")"])
                    try await Task.sleep(for: .milliseconds(Int.random(in: 1...(5 * attempt))))
                    continue
                }
                throw error
            } catch {
                _ = try? await transaction.execute("ROLLBACK")
                throw error
            }
        }
    }

    /// Runs `body` on a pooled connection's own thread.
    func withConnection<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        let index = try await acquire()
        defer { release(index) }
        return try await workers[index].run(body)
    }

    // MARK: - Pool

    private func acquire() async throws -> Int {
        // Fast path: a free connection, no waiting and no timer.
        let immediate = pool.withLock { state -> Result<Int, Error>? in
            if state.closed { return .failure(StoreError(.unavailable, "store is shut down")) }
            return state.free.popLast().map { .success($0) }
        }
        if let immediate { return try immediate.get() }

        let waiterId = pool.withLock { state -> UInt64 in
            state.nextWaiter += 1
            state.queuing.insert(state.nextWaiter)
            return state.nextWaiter
        }
        let timeout = configuration.acquireTimeout
        let timedOut = StoreError(.unavailable, "no database connection free within \(timeout)")
        // The timer runs on a Dispatch queue, not in the task pool: a pool kept busy elsewhere must not stretch
        // the bound.
        let timer = DispatchWorkItem { [self] in
            let waiter = pool.withLock { state -> CheckedContinuation<Int, Error>? in
                if state.queuing.contains(waiterId) {
                    state.expired.insert(waiterId)
                    return nil
                }
                guard let position = state.waiters.firstIndex(where: { $0.id == waiterId }) else { return nil }
                return state.waiters.remove(at: position).continuation
            }
            waiter?.resume(throwing: timedOut)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout.timeInterval, execute: timer)
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            let outcome = pool.withLock { state -> Result<Int, Error>? in
                state.queuing.remove(waiterId)
                if state.expired.remove(waiterId) != nil { return .failure(timedOut) }
                if state.closed { return .failure(StoreError(.unavailable, "store is shut down")) }
                if let index = state.free.popLast() { return .success(index) }
                state.waiters.append((waiterId, continuation))
                return nil
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }

    private func release(_ index: Int) {
        let waiter = pool.withLock { state -> CheckedContinuation<Int, Error>? in
            if state.waiters.isEmpty {
                state.free.append(index)
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        waiter?.resume(returning: index)
    }
}

public enum IsolationLevel: String, Sendable {
    case serializable = "SERIALIZABLE"
    case repeatableRead = "REPEATABLE READ"
    case readCommitted = "READ COMMITTED"
}

/// The statements of one transaction, all on one connection.
public struct Transaction: Sendable {
    let worker: PGWorker
    /// 1 on the first run of the body, 2 after one conflict, ...
    public let attempt: Int

    @discardableResult
    public func query(_ sql: String, _ parameters: PGEncodable?...) async throws -> [Row] {
        try await query(sql, parameters: parameters)
    }

    public func query(_ sql: String, parameters: [PGEncodable?]) async throws -> [Row] {
        try await worker.run { try $0.execute(sql, parameters).rows }
    }

    @discardableResult
    public func execute(_ sql: String, _ parameters: PGEncodable?...) async throws -> Int {
        try await worker.run { try $0.execute(sql, parameters).affected }
    }
}

extension Duration {
    /// Seconds, as Dispatch counts them.
    var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}
