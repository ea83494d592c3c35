import Foundation
import NodeRuntime
import Testing

/// The runtime against real runc, real cgroup v1 files and real namespaces.
@Suite(.serialized) struct RuntimeTests {
    @Test func startsLogsAndStopsWithTheGracePeriod() async throws {
        try await withRuntime { runtime in
            let record = try await runtime.start(LaunchRequest(
                id: "web-0", image: .host,
                command: ["/bin/sh", "-c", "echo hello from $SIGMA_APP; trap 'echo bye; exit 0' TERM; while :; do sleep 0.05; done"],
                env: ["SIGMA_APP": "web"]))
            #expect(record.pid > 0)
            #expect(await runtime.isRunning("web-0"))
            try await eventually("the greeting in the log") { contents(runtime.logFile(of: "web-0")).contains("hello from web") }
            // The instance has namespaces of its own.
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(record.pid)/ns/pid")
                != FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/pid"))
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(record.pid)/ns/net")
                != FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net"))
            let ending = await runtime.stop("web-0", grace: .seconds(10))
            #expect(ending == .exited(0))
            #expect(ending.state == "Succeeded")
            #expect(contents(runtime.logFile(of: "web-0")).contains("bye"))
        }
    }

    @Test func aProcessThatIgnoresSIGTERMIsKilledAfterItsGrace() async throws {
        try await withRuntime { runtime in
            // The first process of a pid namespace ignores signals it has no handler for: SIGTERM does nothing.
            try await runtime.start(LaunchRequest(id: "stubborn", image: .host, command: ["/bin/sleep", "1000"]))
            let ending = await runtime.stop("stubborn", grace: .milliseconds(200))
            #expect(ending == .signaled(SIGKILL))
            #expect(ending.state == "Killed")
            #expect(ending.description == "signal SIGKILL")
            #expect(ending.exitCode == 137)
        }
    }

    /// Issue 17, case 6: with an init as PID 1, a command with no SIGTERM handler ends at SIGTERM (not after
    /// the grace period, by SIGKILL), its exit code says so, and orphans are reaped instead of left as zombies.
    @Test func anInitAsPID1PassesSignalsOnAndReapsOrphans() async throws {
        guard let tini = Subprocess.find("tini-static") else { throw HarnessError("tini-static is not installed (scripts/deps installs tini)") }
        // The subshell exits at once: its loop is orphaned to PID 1 and ends only once the shell has become
        // `sleep` (exec'd), so the shell can't have reaped it first whatever the machine's load.
        let command = ["/bin/sh", "-c",
                       "p=$$; (while [ \"$(cat /proc/$p/comm)\" != sleep ]; do sleep 0.01; done &); exec /bin/sleep 1000"]
        func children(_ pid: Int32) -> [Int32] {
            ((try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? "").split(separator: " ").compactMap { Int32($0) }
        }
        func isSleeper(_ pid: Int32) -> Bool {
            (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) == "/bin/sleep\u{0}1000\u{0}"
        }
        func isZombie(_ pid: Int32) -> Bool { (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.contains(") Z ") == true }
        try await withRuntime(initProgram: tini) { runtime in
            let record = try await runtime.start(LaunchRequest(id: "plain", image: .host, command: command))
            // The init's only child is the command: the orphan it was given has been reaped.
            try await eventually("the orphan reaped") {
                let under = children(record.pid)
                return under.count == 1 && isSleeper(under[0])
            }
            let ending = await runtime.stop("plain", grace: .seconds(60))
            #expect(ending == .exited(128 + SIGTERM))
            #expect(ending.state == "Failed")
        }
        // Without one, the same orphan stays a zombie under `sleep`, which never waits.
        try await withRuntime { runtime in
            let record = try await runtime.start(LaunchRequest(id: "plain", image: .host, command: command))
            try await eventually("a zombie") { isSleeper(record.pid) && children(record.pid).contains(where: isZombie) }
            #expect(await runtime.stop("plain", grace: .milliseconds(100)) == .signaled(SIGKILL))
        }
    }

    /// Isolation I, item 2: an instance runs under the seccomp profile resolved for its capabilities. It has no
    /// CAP_SYS_ADMIN, so a user namespace (where it would get one) and every mount are refused; what an
    /// ordinary service does (fork, threads through clone3's fallback, sockets) still works.
    @Test func seccompRefusesNamespacesAndMounts() async throws {
        let probe = """
            grep '^Seccomp:' /proc/self/status
            unshare -Urm sh -c 'mount -t tmpfs none /dev/shm && echo MOUNTED'; echo "unshare exit $?"
            unshare -n true; echo "netns exit $?"
            ( echo forked ) & wait
            """
        try await withRuntime { runtime in
            try await runtime.start(LaunchRequest(id: "probe", image: .host, command: ["/bin/sh", "-c", probe]))
            _ = try #require(await runtime.waitForEnding("probe", within: .seconds(20)))
            let log = try contents(runtime.logFile(of: "probe"))
            #expect(log.contains("Seccomp:\t2"), "\(log)")
            #expect(!log.contains("MOUNTED"), "\(log)")
            #expect(log.contains("unshare exit 1"), "\(log)")
            #expect(log.contains("Operation not permitted"), "\(log)")
            #expect(log.contains("netns exit 1"), "\(log)")
            #expect(log.contains("forked"), "\(log)")
        }
    }

    /// Isolation I, item 4: an instance on the host's own folders (`image: host`) sees none of the host's /etc
    /// but an allow-list of harmless files: no shadow, no keys kept under /etc; its passwd, group, hosts and
    /// resolv.conf are its own. The host's folders are read-only all the way down (a write under a mount below
    /// /usr fails too), and it has writable /tmp, /var and /run of its own.
    @Test func hostModeSeesNoneOfTheHostsSecrets() async throws {
        let id = String(UUID().uuidString.prefix(8)).lowercased()
        let submount = "/usr/local/sigma-test-\(id)", secrets = "/etc/sigma-test-\(id)"
        try FileManager.default.createDirectory(atPath: submount, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: secrets, withIntermediateDirectories: true)
        defer {
            umount2(submount, Int32(MNT_DETACH))
            rmdir(submount)
            try? FileManager.default.removeItem(atPath: secrets)
        }
        try Data("secret-key = stolen\n".utf8).write(to: URL(fileURLWithPath: secrets + "/cluster.key"))
        _ = try await Subprocess.check(Subprocess.find("mount") ?? "/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", submount])
        let probe = """
            cat /etc/shadow; echo "shadow $?"
            cat /etc/gshadow; echo "gshadow $?"
            cat \(secrets)/cluster.key; echo "keys $?"
            touch \(submount)/planted; echo "submount $?"
            touch /usr/planted; echo "usr $?"
            for d in /tmp /var/tmp /run; do touch $d/mine && echo "writable $d"; done
            echo "hosts:"; cat /etc/hosts
            echo "passwd:"; cat /etc/passwd
            ls -d /etc/ssl /etc/alternatives /etc/ld.so.cache
            """
        try await withRuntime { runtime in
            try await runtime.start(LaunchRequest(
                id: "host", image: .host, command: ["/bin/sh", "-c", probe], env: ["SIGMA_INSTANCE_IP": "100.64.9.9"], hostname: "web-0"))
            _ = try #require(await runtime.waitForEnding("host", within: .seconds(20)))
            let log = try contents(runtime.logFile(of: "host"))
            for refused in ["shadow 1", "gshadow 1", "keys 1", "submount 1", "usr 1"] {
                #expect(log.contains(refused), "\(refused): \(log)")
            }
            #expect(!log.contains("stolen"))
            #expect(!FileManager.default.fileExists(atPath: submount + "/planted"))
            for folder in ["/tmp", "/var/tmp", "/run"] { #expect(log.contains("writable \(folder)"), "\(log)") }
            let hosts = log.components(separatedBy: "hosts:\n").last?.components(separatedBy: "passwd:").first ?? ""
            #expect(hosts.contains("100.64.9.9\tweb-0"), "\(hosts)")
            let passwd = log.components(separatedBy: "passwd:\n").last ?? ""
            #expect(passwd.hasPrefix("root:x:0:0:"), "\(passwd)")
            // System accounts (packages run as their own users), no people: no uid from 1000 to 65533.
            for line in passwd.split(separator: "\n") where line.split(separator: ":").count > 2 {
                let uid = Int(line.split(separator: ":")[2]) ?? 0
                #expect(uid < 1000 || uid >= 65534, "\(line)")
            }
            #expect(log.contains("/etc/ssl") && log.contains("/etc/ld.so.cache"), "\(log)")
        }
    }

    /// Isolation I, item 3: the image's USER is honoured (it ran as root), the request's user overrides it (by
    /// number or by the image's names), and runAsNonRoot refuses uid 0 with the reason.
    @Test func theImagesUserIsHonouredAndRootCanBeRefused() async throws {
        guard let umoci = Subprocess.find("umoci") else { throw HarnessError("umoci is not installed") }
        let demo = try ImageReference(parsing: try await DemoImage.shared.reference())
        guard case .ociLayout(let demoPath, let tag) = demo else { throw HarnessError("the demo image is not an OCI layout") }
        let layout = NSTemporaryDirectory() + "sigma-user-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: layout) }
        try await Subprocess.check("/bin/cp", ["-a", demoPath, layout])
        try await Subprocess.check(umoci, ["config", "--image", "\(layout):\(tag)", "--tag", "user", "--config.user", "1000:1000"])
        let withUser = ImageReference.ociLayout(path: layout, tag: "user")
        try await withRuntime { runtime in
            func identity(_ id: String, _ image: ImageReference, user: String = "") async throws -> String {
                var request = LaunchRequest(id: id, image: image, command: ["/bin/sh", "-c", "echo uid=$(id -u) gid=$(id -g)"])
                request.user = user
                try await runtime.start(request)
                _ = try #require(await runtime.waitForEnding(id, within: .seconds(20)))
                return contents(runtime.logFile(of: id)).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            let fromImage = try await identity("image-user", withUser)
            #expect(fromImage == "uid=1000 gid=1000")
            #expect(await runtime.user(of: "image-user") == InstanceUser(uid: 1000, gid: 1000))
            let byNumber = try await identity("number", withUser, user: "2000:3000")
            #expect(byNumber == "uid=2000 gid=3000")
            let byName = try await identity("by-name", demo, user: "root")
            #expect(byName == "uid=0 gid=0")
            var refused = LaunchRequest(id: "non-root", image: demo, command: ["/bin/true"])
            refused.runAsNonRoot = true
            let failure = await #expect(throws: RuntimeError.self) { try await runtime.start(refused) }
            #expect("\(failure.map { "\($0)" } ?? "")".contains("runAsNonRoot: it would run as root"))
            var unknown = LaunchRequest(id: "unknown", image: demo, command: ["/bin/true"])
            unknown.user = "postgres"
            let missing = await #expect(throws: RuntimeError.self) { try await runtime.start(unknown) }
            #expect("\(missing.map { "\($0)" } ?? "")".contains("user \"postgres\" is not in the instance's /etc/passwd"))
        }
    }

    @Test func exitCodesAreKept() async throws {
        try await withRuntime { runtime in
            try await runtime.start(LaunchRequest(id: "job", image: .host, command: ["/bin/sh", "-c", "echo failing >&2; exit 3"]))
            let ending = try #require(await runtime.waitForEnding("job", within: .seconds(20)))
            #expect(ending == .exited(3))
            #expect(ending.state == "Failed")
            #expect(contents(runtime.logFile(of: "job")).contains("failing"))
        }
    }

    @Test func aMemoryHogIsOOMKilledAndSaysSo() async throws {
        try await withRuntime { runtime in
            let limits = CgroupLimits(memoryLimitBytes: 32 << 20)
            // dd needs a 256 MiB buffer: far over the limit, and no swap to escape to.
            try await runtime.start(LaunchRequest(
                id: "hog", image: .host, command: ["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=4"],
                limits: limits))
            let ending = try #require(await runtime.waitForEnding("hog", within: .seconds(30)))
            #expect(ending == .oomKilled)
            #expect(ending.state == "OOMKilled")
            #expect(ending.exitCode == 137)
        }
    }

    @Test func theCPUQuotaIsSetAndThrottlesABusyLoop() async throws {
        try await withRuntime { runtime in
            try await runtime.start(LaunchRequest(
                id: "busy", image: .host, command: ["/bin/sh", "-c", "while :; do :; done"],
                limits: CgroupLimits(cpuLimitMillis: 200, cpuRequestMillis: 100)))
            let cgroup = runtime.cgroup(of: "busy")
            #expect(try contents("\(cgroup.root)/cpu/\(cgroup.path)/cpu.cfs_quota_us").trimmingCharacters(in: .whitespacesAndNewlines) == "20000")
            #expect(try contents("\(cgroup.root)/cpu/\(cgroup.path)/cpu.cfs_period_us").trimmingCharacters(in: .whitespacesAndNewlines) == "100000")
            #expect(try contents("\(cgroup.root)/cpu/\(cgroup.path)/cpu.shares").trimmingCharacters(in: .whitespacesAndNewlines) == "102")
            try await eventually("the throttling counters to rise") {
                let reading = try #require(await runtime.reading("busy"))
                return reading.throttledPeriods > 2 && reading.throttledNanos > 0
            }
            let reading = try #require(await runtime.reading("busy"))
            #expect(reading.applied.cpuLimitMillis == 200)
            #expect(reading.cpuNanos > 0)
            _ = await runtime.stop("busy", grace: .milliseconds(100))
        }
    }

    @Test func limitsChangeLiveOnTheSameProcess() async throws {
        try await withRuntime { runtime in
            let record = try await runtime.start(LaunchRequest(
                id: "live", image: .host, command: ["/bin/sleep", "1000"],
                limits: CgroupLimits(cpuLimitMillis: 500, cpuRequestMillis: 250, memoryLimitBytes: 64 << 20)))
            let raised = try await runtime.update("live", limits: CgroupLimits(
                cpuLimitMillis: 2000, cpuRequestMillis: 1000, memoryLimitBytes: 256 << 20, pids: 100))
            #expect(raised.applied == CgroupLimits(cpuLimitMillis: 2000, cpuRequestMillis: 1000, memoryLimitBytes: 256 << 20, pids: 100))
            #expect(raised.swapDisabled)
            let lowered = try await runtime.update("live", limits: CgroupLimits(
                cpuLimitMillis: 100, cpuRequestMillis: 100, memoryLimitBytes: 16 << 20, pids: 50))
            #expect(lowered.applied.memoryLimitBytes == 16 << 20)
            #expect(lowered.applied.cpuLimitMillis == 100)
            #expect(lowered.swapDisabled)
            let unlimited = try await runtime.update("live", limits: CgroupLimits(cpuRequestMillis: 100, pids: 0))
            #expect(unlimited.applied.memoryLimitBytes == 0)
            #expect(unlimited.applied.cpuLimitMillis == 0)
            #expect(unlimited.applied.pids == 0)
            #expect(unlimited.swapDisabled)
            // The same process all along.
            #expect(await runtime.isRunning("live"))
            #expect(runtime.cgroup(of: "live").tasks() == [record.pid])
            _ = await runtime.stop("live", grace: .milliseconds(100))
        }
    }

    @Test func swapIsOffInTheCgroup() async throws {
        try await withRuntime { runtime in
            try await runtime.start(LaunchRequest(
                id: "noswap", image: .host, command: ["/bin/sleep", "1000"], limits: CgroupLimits(memoryLimitBytes: 48 << 20)))
            let cgroup = runtime.cgroup(of: "noswap")
            let directory = "\(cgroup.root)/memory/\(cgroup.path)"
            #expect(contents(directory + "/memory.swappiness").trimmingCharacters(in: .whitespacesAndNewlines) == "0")
            #expect(contents(directory + "/memory.limit_in_bytes").trimmingCharacters(in: .whitespacesAndNewlines) == "\(48 << 20)")
            if FileManager.default.fileExists(atPath: directory + "/memory.memsw.limit_in_bytes") {
                #expect(contents(directory + "/memory.memsw.limit_in_bytes").trimmingCharacters(in: .whitespacesAndNewlines) == "\(48 << 20)")
            }
            _ = await runtime.stop("noswap", grace: .milliseconds(100))
        }
    }

    @Test func aMemoryLimitBelowUsageIsRefusedAndTheOldOneStays() async throws {
        try await withRuntime { runtime in
            // 40 MB in /dev/shm (tmpfs, charged to the instance, not reclaimable without swap).
            try await runtime.start(LaunchRequest(
                id: "full", image: .host,
                command: ["/bin/sh", "-c", "head -c 40000000 /dev/zero > /dev/shm/ballast && echo filled && exec sleep 1000"],
                limits: CgroupLimits(memoryLimitBytes: 128 << 20)))
            try await eventually("the ballast") { contents(runtime.logFile(of: "full")).contains("filled") }
            do {
                _ = try await runtime.update("full", limits: CgroupLimits(memoryLimitBytes: 8 << 20))
                Issue.record("a limit below usage was accepted")
            } catch let CgroupError.limitBelowUsage(limit, usage) {
                #expect(limit == 8 << 20)
                #expect(usage > 30_000_000)
            }
            let reading = try #require(await runtime.reading("full"))
            #expect(reading.applied.memoryLimitBytes == 128 << 20)
            #expect(await runtime.isRunning("full"))
            _ = await runtime.stop("full", grace: .milliseconds(100))
        }
    }

    @Test func aForkBombStaysInsideItsPidsLimit() async throws {
        try await withRuntime { runtime in
            try await runtime.start(LaunchRequest(
                id: "forks", image: .host,
                // The bomb runs in a subshell, which ends when a fork is refused; its children stay.
                command: ["/bin/sh", "-c", "(while :; do sleep 1000 & done) 2>/dev/null; echo contained; exec sleep 1000"],
                limits: CgroupLimits(pids: 40)))
            try await eventually("the bomb to hit the limit") { contents(runtime.logFile(of: "forks")).contains("contained") }
            let cgroup = runtime.cgroup(of: "forks")
            let refused = contents("\(cgroup.root)/pids/\(cgroup.path)/pids.events").split(separator: " ").last.map { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 } ?? 0
            #expect(refused > 0)
            let reading = try #require(await runtime.reading("forks"))
            #expect(reading.tasks <= 40 && reading.tasks >= 35)
            #expect(reading.applied.pids == 40)
            #expect(await runtime.isRunning("forks"))
            // The node still forks.
            #expect(try await Subprocess.check("/bin/true", []) == "")
            _ = await runtime.stop("forks", grace: .milliseconds(100))
        }
    }

    @Test func aRestartedRuntimeFindsWhatRunsAndWhatEnded() async throws {
        try await withRuntime { runtime in
            let record = try await runtime.start(LaunchRequest(
                id: "keeps", image: .host, command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do echo tick; sleep 0.05; done"]),
                labels: ["generation": "4"])
            try await runtime.start(LaunchRequest(id: "ends", image: .host, command: ["/bin/sh", "-c", "exit 5"]))
            _ = await runtime.waitForEnding("ends", within: .seconds(20))

            // A second runtime on the same folder: the agent after a restart.
            let again = try InstanceRuntime(configuration: runtime.configuration, logger: quietLogger)
            let found = await again.found()
            let keeps = try #require(found.first { $0.record.id == "keeps" })
            #expect(keeps.ending == nil)
            #expect(keeps.record.pid == record.pid)
            #expect(keeps.record.labels["generation"] == "4")
            #expect(found.first { $0.record.id == "ends" }?.ending == .exited(5))
            // The monitor still writes its log.
            let before = contents(again.logFile(of: "keeps")).count
            try await eventually("more log lines") { contents(again.logFile(of: "keeps")).count > before }
            #expect(await again.stop("keeps", grace: .seconds(10)) == .exited(0))
        }
    }

    /// A start over a container of the same id that still runs (an agent that crashed between start and its
    /// record, then started the instance again): the old run is ended first, and its monitor's ending can't
    /// be read as the new run's (it was, and the next start killed the live copy: a loop of SIGKILLs).
    @Test func aStartOverALeftoverRunIsNotEndedByTheOldMonitor() async throws {
        try await withRuntime { runtime in
            // It says so once its trap is set: as PID 1 of its namespace it ignores a SIGTERM that comes before.
            let command = ["/bin/sh", "-c", "trap 'exit 0' TERM; echo trapped; while :; do sleep 0.05; done"]
            let first = try await runtime.start(LaunchRequest(id: "again", image: .host, command: command))
            let directory = runtime.directory(of: "again")
            let oldMonitors = monitors(watching: directory)
            #expect(!oldMonitors.isEmpty)
            // (Under load the first run may not have said so yet; it must, or the count below never reaches 2.)
            try await eventually("the first run's trap is set") { contents(runtime.logFile(of: "again")).contains("trapped") }

            let second = try await runtime.start(LaunchRequest(id: "again", image: .host, command: command))
            #expect(second.pid != first.pid)
            // Once the first run's monitor is gone, whatever it wrote has been written.
            try await eventually("the first run's monitor ends") { monitors(watching: directory).allSatisfy { !oldMonitors.contains($0) } }
            #expect(kill(first.pid, 0) != 0)
            #expect(await runtime.ending(of: "again") == nil)
            #expect(await runtime.isRunning("again"))
            // The second run writes a log of its own; the first one's is kept as the previous run's.
            try await eventually("the second run's trap is set") { contents(runtime.logFile(of: "again")) == "trapped\n" }
            #expect(contents(runtime.previousLogFile(of: "again")) == "trapped\n")
            #expect(await runtime.stop("again", grace: .seconds(10)) == .exited(0))
        }
    }

    @Test func imagesRunFromAnOCILayoutCachedByDigest() async throws {
        let image = try ImageReference(parsing: try await DemoImage.shared.reference())
        try await withRuntime { runtime in
            let first = try await runtime.start(LaunchRequest(
                id: "img-0", image: image, command: ["/bin/sh", "-c", "echo from busybox > /tmp/x && cat /tmp/x && ls /bin/busybox"]))
            #expect(first.imageDigest?.hasPrefix("sha256:") == true)
            #expect(try #require(await runtime.waitForEnding("img-0", within: .seconds(20))) == .exited(0))
            #expect(contents(runtime.logFile(of: "img-0")).contains("from busybox"))
            // No command: the image's own (sh), which exits at once on an empty stdin.
            let second = try await runtime.start(LaunchRequest(id: "img-1", image: image))
            #expect(second.imageDigest == first.imageDigest)
            #expect(try #require(await runtime.waitForEnding("img-1", within: .seconds(20))) == .exited(0))
            // The instances' writes stay in their own layer, never in the shared image.
            let unpacked = try #require(try await runtime.images.unpack(image))
            #expect(!FileManager.default.fileExists(atPath: unpacked.rootfs + "/tmp/x"))
            await runtime.cleanUp("img-0", removeFolder: true)
            await runtime.cleanUp("img-1", removeFolder: true)
            // Unused, but used a moment ago: kept for a later start; past the keep time: removed.
            #expect(await runtime.images.collectGarbage(inUse: await runtime.digestsInUse(), unusedFor: .seconds(600)).isEmpty)
            #expect(await runtime.images.collectGarbage(inUse: await runtime.digestsInUse()) == [unpacked.digest])
            #expect(!FileManager.default.fileExists(atPath: unpacked.rootfs))
        }
    }

    @Test func aMissingOrCorruptImageFailsTheInstanceWithTheReason() async throws {
        try await withRuntime { runtime in
            let missing = NSTemporaryDirectory() + "sigma-no-image-\(UUID().uuidString.prefix(8))"
            await #expect(throws: RuntimeError.self) {
                try await runtime.start(LaunchRequest(id: "gone", image: .ociLayout(path: missing, tag: "v1"), command: ["/bin/true"]))
            }
            let gone = try #require(await runtime.ending(of: "gone"))
            #expect(gone.state == "Failed")
            #expect(gone.description.contains("not found"))

            let corrupt = NSTemporaryDirectory() + "sigma-bad-image-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: corrupt, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: corrupt) }
            try Data("{not json".utf8).write(to: URL(fileURLWithPath: corrupt + "/index.json"))
            await #expect(throws: RuntimeError.self) {
                try await runtime.start(LaunchRequest(id: "bad", image: .ociLayout(path: corrupt, tag: "v1"), command: ["/bin/true"]))
            }
            #expect(try #require(await runtime.ending(of: "bad")).description.contains("corrupt"))

            // A command that does not exist: runc's own error is the reason.
            await #expect(throws: RuntimeError.self) {
                try await runtime.start(LaunchRequest(id: "nocmd", image: .host, command: ["/no/such/program"]))
            }
            #expect(try #require(await runtime.ending(of: "nocmd")).description.contains("no such file"))
        }
    }

    @Test func aDockerArchiveRunsThroughSkopeo() async throws {
        let image = try ImageReference(parsing: try await DemoImage.shared.reference())
        guard case .ociLayout(let layout, let tag) = image else { throw HarnessError("the demo image is not a layout") }
        let archive = NSTemporaryDirectory() + "sigma-archive-\(UUID().uuidString.prefix(8)).tar"
        defer { try? FileManager.default.removeItem(atPath: archive) }
        try await Subprocess.check(try #require(Subprocess.find("skopeo")), [
            "copy", "--quiet", "oci:\(layout):\(tag)", "docker-archive:\(archive):sigma/demo:latest",
        ])
        try await withRuntime { runtime in
            let record = try await runtime.start(LaunchRequest(
                id: "archived", image: .dockerArchive(path: archive), command: ["/bin/sh", "-c", "echo from an archive"]))
            #expect(record.imageDigest?.hasPrefix("sha256:") == true)
            #expect(try #require(await runtime.waitForEnding("archived", within: .seconds(20))) == .exited(0))
            #expect(contents(runtime.logFile(of: "archived")).contains("from an archive"))
        }
    }

    @Test func theLogIsRotated() async throws {
        try await withRuntime(logMaxBytes: 4096) { runtime in
            // About 40 KB of output into a 4 KB log kept as the current file and two old ones.
            try await runtime.start(LaunchRequest(
                id: "chatty", image: .host,
                command: ["/bin/sh", "-c", "i=0; while [ $i -lt 1000 ]; do echo line $i of the chatty instance; i=$((i+1)); done"]))
            #expect(try #require(await runtime.waitForEnding("chatty", within: .seconds(20))) == .exited(0))
            let log = runtime.logFile(of: "chatty")
            let sizes = [log, log + ".1", log + ".2"].map {
                (try? FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int) ?? -1
            }
            #expect(sizes.allSatisfy { $0 > 0 && $0 <= 4096 }, "\(sizes)")
            #expect(!FileManager.default.fileExists(atPath: log + ".3"))
            #expect(contents(log).contains("line 999 of the chatty instance"))
        }
    }

    @Test func eachRunHasItsOwnLogAndTheRunBeforeIsKept() async throws {
        try await withRuntime { runtime in
            func run(_ text: String) async throws {
                try await runtime.start(LaunchRequest(id: "runs", image: .host, command: ["/bin/sh", "-c", "echo \(text)"]))
                #expect(try #require(await runtime.waitForEnding("runs", within: .seconds(20))) == .exited(0))
            }
            let log = runtime.logFile(of: "runs"), previous = runtime.previousLogFile(of: "runs")
            let before = Int64(Date().timeIntervalSince1970 * 1000)
            try await run("first")
            #expect(contents(log) == "first\n")
            #expect(!FileManager.default.fileExists(atPath: previous))
            try await run("second")
            try await run("third")
            #expect(contents(log) == "third\n")
            #expect(contents(previous) == "second\n", "one earlier run kept")
            // Each log's times: where the output of each second with output starts, in wall-clock milliseconds.
            for file in [log, previous] {
                let entries = contents(file + ".times").split(separator: "\n").map { $0.split(separator: " ").compactMap { Int64($0) } }
                #expect(entries.count == 1 && entries[0].count == 2, "\(entries)")
                #expect(entries.first?.last == 0)
                #expect((before - 1000...before + 60_000).contains(entries.first?.first ?? 0))
            }
        }
    }

    @Test func imageReferencesParse() throws {
        #expect(try ImageReference(parsing: "host") == .host)
        #expect(try ImageReference(parsing: "oci:/srv/images/web:v2") == .ociLayout(path: "/srv/images/web", tag: "v2"))
        #expect(try ImageReference(parsing: "oci:/srv/images/web") == .ociLayout(path: "/srv/images/web", tag: "latest"))
        #expect(try ImageReference(parsing: "docker-archive:/tmp/web.tar") == .dockerArchive(path: "/tmp/web.tar"))
        #expect(try ImageReference(parsing: "docker://busybox:1.36") == .registry("docker://busybox:1.36"))
        #expect(throws: ImageError.badReference("nginx:latest")) { try ImageReference(parsing: "nginx:latest") }
        #expect(throws: ImageError.badReference("oci:")) { try ImageReference(parsing: "oci:") }
    }
}
