import Foundation
import Synchronization

/// How a program the agent ran ended, with what it printed.
public struct ProgramResult: Sendable {
    public var status: Int32
    public var output: String
    public var errors: String

    public var succeeded: Bool { status == 0 }
}

public struct ProgramError: Error, CustomStringConvertible {
    public var program: String
    public var arguments: [String]
    public var result: ProgramResult?
    public var reason: String

    public var description: String {
        let text = result.map { $0.errors.isEmpty ? $0.output : $0.errors }?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        return "\(program) \(arguments.prefix(3).joined(separator: " ")): \(reason)\(text.isEmpty ? "" : ": \(text)")"
    }
}

/// Runs helper programs (runc, ip, umoci, the monitor) with posix_spawn. The wait happens on a thread of its
/// own, never on Swift's cooperative pool; stdout and stderr are read together so neither pipe can fill up.
public enum Subprocess {
    /// Runs `path` to its end. `input` is written to its stdin (then closed); without it stdin is /dev/null.
    /// With `capture` false its stdout and stderr go to /dev/null (for programs that hand them on to a process
    /// that outlives them, like `runc run --detach`).
    /// With `timeout`, a program still running then is killed (SIGKILL) and its status is 137.
    public static func run(_ path: String, _ arguments: [String], input: [UInt8]? = nil, capture: Bool = true,
                           timeout: Duration? = nil) async throws -> ProgramResult {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(with: Result { try runBlocking(path, arguments, input: input, capture: capture, timeout: timeout) })
            }
            thread.stackSize = 256 << 10
            thread.start()
        }
    }

    /// Runs `path` and throws unless it exits 0.
    @discardableResult
    public static func check(_ path: String, _ arguments: [String], input: [UInt8]? = nil) async throws -> String {
        let result = try await run(path, arguments, input: input)
        guard result.succeeded else {
            throw ProgramError(program: path, arguments: arguments, result: result, reason: "exit status \(result.status)")
        }
        return result.output
    }

    public static func runBlocking(_ path: String, _ arguments: [String], input: [UInt8]? = nil, capture: Bool = true,
                                   timeout: Duration? = nil) throws -> ProgramResult {
        var stdoutPipe: [Int32] = [-1, -1], stderrPipe: [Int32] = [-1, -1], stdinPipe: [Int32] = [-1, -1]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        // Pipes are made close-on-exec and the program spawned under one lock, so no other spawn of this
        // process inherits them (a long-lived monitor holding a copy would keep a reader waiting for ever).
        let rc: Int32 = spawnLock.withLock { _ in
            guard makePipe(&stdoutPipe), makePipe(&stderrPipe), input == nil || makePipe(&stdinPipe) else { return errno }
            if input != nil {
                posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
            } else {
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            }
            if capture {
                posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
                posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
            } else {
                posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
            }
            var attributes = posix_spawnattr_t()
            posix_spawnattr_init(&attributes)
            defer { posix_spawnattr_destroy(&attributes) }
            resetSignals(&attributes)
            return posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        }
        close(stdoutPipe[1])
        close(stderrPipe[1])
        if input != nil { close(stdinPipe[0]) }
        guard rc == 0 else {
            close(stdoutPipe[0])
            close(stderrPipe[0])
            if input != nil { close(stdinPipe[1]) }
            throw ProgramError(program: path, arguments: arguments, reason: "cannot start: \(String(cString: strerror(rc)))")
        }
        if let input {
            input.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let n = write(stdinPipe[1], bytes.baseAddress! + offset, bytes.count - offset)
                    if n < 0 { if errno == EINTR { continue } else { break } }
                    offset += n
                }
            }
            close(stdinPipe[1])
        }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        let (output, errors) = readBoth(stdoutPipe[0], stderrPipe[0], deadline: deadline) { kill(pid, SIGKILL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return ProgramResult(status: code, output: output, errors: errors)
    }

    private static let spawnLock = Mutex(())

    /// A child starts with no signal blocked and default dispositions: a thread of this process may block
    /// some (the Swift runtime's do), and what is blocked or ignored survives exec — `timeout` would never fire.
    static func resetSignals(_ attributes: inout posix_spawnattr_t) {
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD, SIGALRM, SIGUSR1, SIGUSR2] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    }

    private static func makePipe(_ fds: inout [Int32]) -> Bool {
        guard pipe(&fds) == 0 else { return false }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        return true
    }

    /// Reads both pipes to their end; past `deadline`, `expire` runs once (it kills the program) and the pipes
    /// are closed.
    private static func readBoth(_ first: Int32, _ second: Int32, deadline: ContinuousClock.Instant?,
                                 expire: () -> Void) -> (String, String) {
        var buffers: [[UInt8]] = [[], []]
        var fds = [pollfd(fd: first, events: Int16(POLLIN), revents: 0), pollfd(fd: second, events: Int16(POLLIN), revents: 0)]
        var chunk = [UInt8](repeating: 0, count: 16384)
        var open = 2
        while open > 0 {
            var wait: Int32 = -1
            if let deadline {
                let left = deadline - ContinuousClock.now
                if left <= .zero {
                    expire()
                    for index in 0..<2 where fds[index].fd >= 0 { close(fds[index].fd) }
                    break
                }
                wait = Int32(max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
            }
            let ready = poll(&fds, 2, wait)
            if ready < 0 {
                if errno == EINTR { continue }
                break
            }
            if ready == 0 { continue }
            for index in 0..<2 where fds[index].fd >= 0 && fds[index].revents != 0 {
                let n = chunk.withUnsafeMutableBytes { read(fds[index].fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    buffers[index].append(contentsOf: chunk[0..<n])
                } else if n == 0 || errno != EINTR {
                    close(fds[index].fd)
                    fds[index].fd = -1
                    open -= 1
                }
            }
        }
        return (String(decoding: buffers[0], as: UTF8.self), String(decoding: buffers[1], as: UTF8.self))
    }

    /// The first executable called `name` on PATH (or `name` itself when it holds a slash).
    public static func find(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for directory in path.split(separator: ":") where access("\(directory)/\(name)", X_OK) == 0 {
            return "\(directory)/\(name)"
        }
        return nil
    }
}
