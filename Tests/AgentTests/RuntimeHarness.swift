import Foundation
import Logging
import NodeRuntime
import TestSupport

let quietLogger: Logger = {
    var logger = Logger(label: "sigma.test.agent")
    logger.logLevel = .warning
    return logger
}()

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The seccomp profile the agent reads by default (scripts/deps installs it).
func systemSeccompProfile() throws -> SeccompProfile {
    try SeccompProfile.load(path: "/usr/share/containers/seccomp.json")
}

/// A runtime of a test's own: its own state folder, runc root and cgroup parent ("sigma-test-<id>", its own
/// from the top, so no test removes a parent another is creating a cgroup in), all removed afterwards, also
/// when the test fails.

func withRuntime<T>(logMaxBytes: Int64 = 10 << 20, initProgram: String? = nil, seccomp: Bool = true,
                    _ body: (InstanceRuntime) async throws -> T) async throws -> T {
    let id = String(UUID().uuidString.prefix(8)).lowercased()
    let state = NSTemporaryDirectory() + "sigma-runtime-\(id)"
    guard let runc = Subprocess.find("runc") else { throw HarnessError("runc is not installed (scripts/deps installs it)") }
    let configuration = RuntimeConfiguration(
        runtime: runc, monitor: ServiceProcess.binDirectory + "/sigma-monitor", stateDirectory: state,
        cgroupParent: "sigma-test-\(id)", logMaxBytes: logMaxBytes, logKeep: 2, initProgram: initProgram,
        seccomp: seccomp ? try systemSeccompProfile() : nil)
    let runtime = try InstanceRuntime(configuration: configuration, logger: quietLogger)
    do {
        let result = try await body(runtime)
        await removeEverything(runtime)
        return result
    } catch {
        await removeEverything(runtime)
        throw error
    }
}

func removeEverything(_ runtime: InstanceRuntime) async {
    let configuration = runtime.configuration
    let instances = (try? FileManager.default.contentsOfDirectory(atPath: configuration.stateDirectory + "/instances")) ?? []
    for id in instances { await runtime.cleanUp(id, removeFolder: true) }
    // The test's cgroup parent, in every controller.
    let parent = Cgroup(root: configuration.cgroupRoot, version: configuration.cgroupVersion, path: configuration.cgroupParent)
    parent.remove()
    try? FileManager.default.removeItem(atPath: configuration.stateDirectory)
}

/// The demo image (busybox-static in an OCI layout), built once per test run by scripts/demo-image and
/// removed when the test process exits.
actor DemoImage {
    static let shared = DemoImage()
    static let directory = NSTemporaryDirectory() + "sigma-demo-image-\(UUID().uuidString.prefix(8))"
    /// One build however many suites ask at once (an actor is reentrant across the build's await).
    private var build: Task<String, Error>?

    func reference() async throws -> String {
        if let build { return try await build.value }
        let started = Task {
            let reference = try await runProgram(packageRoot.path + "/scripts/demo-image", [Self.directory])
            atexit { try? FileManager.default.removeItem(atPath: DemoImage.directory) }
            return reference
        }
        build = started
        return try await started.value
    }
}

/// Polls `condition` until it holds (readiness, never a timing assertion); fails after `limit`.
func eventually(_ what: String, within limit: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + limit
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw HarnessError("timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

func contents(_ path: String) -> String {
    String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
}

/// The pids of the sigma-monitor processes whose instance folder is `directory` (read from /proc).
func monitors(watching directory: String) -> Set<Int32> {
    let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
    return Set(pids.filter { pid in
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard arguments.first?.hasSuffix("sigma-monitor") == true, let flag = arguments.firstIndex(of: "--dir") else { return false }
        return arguments.indices.contains(flag + 1) && arguments[flag + 1] == directory
    })
}
