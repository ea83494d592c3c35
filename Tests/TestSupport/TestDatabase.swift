import Foundation
import Logging
import Store

#if canImport(Glibc)
import Glibc
#endif

/// A fresh, empty database for one test, in the PostgreSQL that `make test` started
/// (`SIGMA_TEST_DATABASE_URL`). Dropped again by `withTestDatabase` even when the test fails.
public struct TestDatabase: Sendable {
    public let name: String
    public let url: String

    public init(name: String, url: String) {
        self.name = name
        self.url = url
    }

    public static var adminURL: String {
        get throws {
            guard let url = ProcessInfo.processInfo.environment["SIGMA_TEST_DATABASE_URL"], !url.isEmpty else {
                throw TestSetupError("SIGMA_TEST_DATABASE_URL is not set: run the tests with `make test`")
            }
            return url
        }
    }
}

public struct TestSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public let quietLogger: Logger = {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
}()

/// A store for a test's own queries. Its connection attempts may take up to 15 s: with every suite running at
/// once on two cores, a backend can take longer than the services' 3 s to start, and a test's setup failing on
/// that says nothing about the code under test. (The services keep their own, shorter timeout and retry.)
public func testStore(_ url: String, poolSize: Int = 4) -> Store {
    var configuration = StoreConfiguration(url: url)
    configuration.connectTimeoutSeconds = 15
    configuration.poolSize = poolSize
    return Store(configuration: configuration, logger: quietLogger)
}

/// Replaces the database name (the path) of a postgresql:// URL.
public func databaseURL(_ url: String, database: String) -> String {
    guard var components = URLComponents(string: url) else { return url }
    components.path = "/" + database
    return components.string ?? url
}

/// Creates a database, runs `body` with its URL, drops it.
public func withTestDatabase<T>(_ body: (TestDatabase) async throws -> T) async throws -> T {
    let admin = testStore(try TestDatabase.adminURL, poolSize: 1)
    defer { admin.shutdown() }
    let name = "sigma_t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
    // A database name is an identifier and cannot be a parameter; this one is made of hex digits only.
    try await admin.execute("CREATE DATABASE \(name)")
    let database = TestDatabase(name: String(name), url: databaseURL(try TestDatabase.adminURL, database: String(name)))
    do {
        let result = try await body(database)
        try await admin.execute("DROP DATABASE \(name) WITH (FORCE)")
        return result
    } catch {
        _ = try? await admin.execute("DROP DATABASE \(name) WITH (FORCE)")
        throw error
    }
}

/// The package's root folder (where scripts/ lives).
public let packageRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// Runs a program to its end and returns its standard output; throws when it fails. The wait happens on a
/// thread of its own: blocking the cooperative pool would stall every other test's timers.
@discardableResult
public func runProgram(_ path: String, _ arguments: [String]) async throws -> String {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try runProgramBlocking(path, arguments) })
        }
        thread.start()
    }
}

/// Runs a program to its end and returns its exit code and its standard output and error together, whatever
/// the exit code (for tests of exit codes).
public func runProgramStatus(_ path: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result {
                let result = try spawnAndWait(path, arguments)
                return ((result.status >> 8) & 0xff, result.output + result.errors)
            })
        }
        thread.start()
    }
}

func runProgramBlocking(_ path: String, _ arguments: [String]) throws -> String {
    let result = try spawnAndWait(path, arguments)
    guard result.status == 0 else {
        throw TestSetupError("\(path) \(arguments.joined(separator: " ")) failed (status \(result.status)): \(result.errors)")
    }
    return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// (posix_spawn and waitpid: Foundation's Process.waitUntilExit can miss the exit inside the test runner.)
public func spawnAndWait(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String, errors: String) {
    // Output goes to files, not pipes: a server the program starts may hold a pipe long after it ended.
    let base = NSTemporaryDirectory() + "sigma-run-\(UUID().uuidString)"
    defer {
        try? FileManager.default.removeItem(atPath: base + ".out")
        try? FileManager.default.removeItem(atPath: base + ".err")
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, base + ".out", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, base + ".err", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // No signal blocked or ignored in the child (what the calling thread blocks survives exec).
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD, SIGALRM] { sigaddset(&defaults, signal) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let rc = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
    guard rc == 0 else { throw TestSetupError("cannot start \(path): errno \(rc)") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let output = String(decoding: FileManager.default.contents(atPath: base + ".out") ?? Data(), as: UTF8.self)
    let errors = String(decoding: FileManager.default.contents(atPath: base + ".err") ?? Data(), as: UTF8.self)
    return (status, output, errors)
}

/// A PostgreSQL cluster of a test's own (for tests that stop and restart it), in a temporary folder,
/// started through scripts/pg. `withPrivatePostgres` stops and removes it even when the test fails.
public struct PrivatePostgres: Sendable {
    public let directory: String
    public let url: String

    public func stop() async throws { try await runProgram(packageRoot.path + "/scripts/pg", ["stop", directory]) }
    public func start() async throws { try await runProgram(packageRoot.path + "/scripts/pg", ["start", directory]) }
}

public func withPrivatePostgres<T>(_ body: (PrivatePostgres) async throws -> T) async throws -> T {
    let base = packageRoot.path + "/.sigma"
    try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    let directory = base + "/test-private-" + UUID().uuidString.prefix(8).lowercased()
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let url = try await runProgram(packageRoot.path + "/scripts/pg", ["start", directory])
    let postgres = PrivatePostgres(directory: directory, url: url)
    do {
        let result = try await body(postgres)
        try? await postgres.stop()
        try? FileManager.default.removeItem(atPath: directory)
        return result
    } catch {
        try? await postgres.stop()
        try? FileManager.default.removeItem(atPath: directory)
        throw error
    }
}

/// A primary and a streaming standby of its own (synchronous: a commit returns once the standby has it), and
/// the multi-host URL that finds whichever is the primary (`target_session_attrs=read-write`). Both are
/// stopped and removed even when the test fails.
public struct PostgresPair: Sendable {
    public let primary: PrivatePostgres
    public let standby: PrivatePostgres
    public let url: String

    /// The primary dies at once (no checkpoint, no goodbye to its clients).
    public func crashPrimary() async throws { try await runProgram(packageRoot.path + "/scripts/pg", ["crash", primary.directory]) }
    /// The standby becomes the primary.
    public func promoteStandby() async throws { try await runProgram(packageRoot.path + "/scripts/pg", ["promote", standby.directory]) }
}

public func withPostgresPair<T>(_ body: (PostgresPair) async throws -> T) async throws -> T {
    let base = packageRoot.path + "/.sigma"
    try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    let folder = base + "/test-pair-" + UUID().uuidString.prefix(8).lowercased()
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    chmod(folder, 0o755)
    let script = packageRoot.path + "/scripts/pg"
    defer {
        for side in ["standby", "primary"] { _ = try? spawnAndWait(script, ["stop", folder + "/" + side]) }
        try? FileManager.default.removeItem(atPath: folder)
    }
    let primaryURL = try await runProgram(script, ["start-sync", folder + "/primary"])
    let standbyURL = try await runProgram(script, ["standby", folder + "/primary", folder + "/standby"])
    func address(_ url: String) -> String { String(url.dropFirst("postgresql://postgres@".count).prefix { $0 != "/" }) }
    let url = "postgresql://postgres@\(address(primaryURL)),\(address(standbyURL))/postgres?target_session_attrs=read-write"
    return try await body(PostgresPair(
        primary: PrivatePostgres(directory: folder + "/primary", url: primaryURL),
        standby: PrivatePostgres(directory: folder + "/standby", url: standbyURL), url: url))
}
