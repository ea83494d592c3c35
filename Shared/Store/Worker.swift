import Foundation
import Synchronization

/// A thread that owns one PostgreSQL connection and runs the jobs given to it, one at a time.
/// All blocking libpq calls happen here, never on Swift's cooperative pool.
final class PGWorker: @unchecked Sendable {
    typealias Job = (PGConnection) -> Void

    private let condition = NSCondition()
    private var jobs: [Job] = []
    private var stopping = false
    private let connection: PGConnection
    let sessionSetup: [String]

    init(conninfo: String, sessionSetup: [String], name: String) {
        connection = PGConnection(conninfo: conninfo)
        self.sessionSetup = sessionSetup
        let thread = Thread { [self] in loop() }
        thread.name = name
        thread.start()
    }

    /// Runs `body` on this worker's thread with a connected connection and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            submit { [sessionSetup] connection in
                do {
                    try connection.ensureConnected(sessionSetup: sessionSetup)
                    continuation.resume(returning: try body(connection))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    private func submit(_ job: @escaping Job) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopping { condition.wait() }
            if jobs.isEmpty && stopping {
                condition.unlock()
                break
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job(connection)
        }
        connection.close()
    }
}
