import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A Sigma executable started by a test: stopped with SIGTERM (then SIGKILL) by `withServices` even when
/// the test fails. Its log goes to a file that a failing test can print.
public final class ServiceProcess: @unchecked Sendable {
    public let name: String
    /// The arguments it was started with (without `--ready-file`).
    public let arguments: [String]
    public let pid: pid_t
    public let readyFile: String
    public let logFile: String
    private var exitStatus: Int32?

    /// Folder of the built executables: `SIGMA_BIN_DIR` (set by `make test`), else .build/debug.
    public static var binDirectory: String {
        ProcessInfo.processInfo.environment["SIGMA_BIN_DIR"] ?? packageRoot.path + "/.build/debug"
    }

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        name = executable
        self.arguments = arguments
        let base = NSTemporaryDirectory() + "sigma-\(executable)-\(UUID().uuidString.prefix(8))"
        readyFile = base + ".ready"
        logFile = base + ".log"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logFile, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let path = Self.binDirectory + "/" + executable
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments + ["--ready-file", readyFile]).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, envp)
        guard rc == 0 else { throw TestSetupError("cannot start \(path): errno \(rc)") }
        self.pid = pid
    }

    /// Waits (bounded) for the service to write its ready file, and returns the endpoint it serves on.
    public func endpoint(within limit: Duration = .seconds(30)) async throws -> String {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: readyFile, encoding: .utf8), text.hasSuffix("\n") {
                return text.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            if let status = pollExit() { throw TestSetupError("\(name) exited (\(status)) before serving:\n\(log)") }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSetupError("\(name) did not serve within \(limit):\n\(log)")
    }

    public var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }

    /// The raw wait status once the process has ended, nil while it runs.
    public func pollExit() -> Int32? {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { exitStatus = status }
        return exitStatus
    }

    /// Kills the process at once (SIGKILL), as a crash would, and reaps it.
    public func crash() {
        guard pollExit() == nil else { return }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        exitStatus = status
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the exit code, or nil if it had to be killed.
    @discardableResult
    public func terminate(within limit: Duration = .seconds(15)) async -> Int32? {
        if pollExit() == nil { kill(pid, SIGTERM) }
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let status = pollExit() {
                return (status & 0x7f) == 0 ? (status >> 8) & 0xff : nil
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        exitStatus = status
        return nil
    }

    deinit {
        if pollExit() == nil {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        try? FileManager.default.removeItem(atPath: logFile)
        try? FileManager.default.removeItem(atPath: readyFile)
    }
}

/// Starts processes with `start`, runs `body`, then terminates every one of them, also on failure.
public func withServices<T>(
    _ start: () throws -> [ServiceProcess], _ body: ([ServiceProcess]) async throws -> T
) async throws -> T {
    let processes = try start()
    do {
        let result = try await body(processes)
        for process in processes { await process.terminate() }
        return result
    } catch {
        for process in processes { await process.terminate() }
        throw error
    }
}
