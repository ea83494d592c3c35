import Foundation
import NodeRuntime
import Protocol
import Synchronization
import Testing
import TestSupport

/// At most one copy (failover: safe), checked two ways on real test hosts while one host fails: a sampler of
/// every host's runc state every 100 ms, and each copy's life as its monitor journals it (CLOCK_BOOTTIME, one
/// clock for every test host) compared for overlap. Safe mode never overlaps, whatever fails; fast mode does
/// while a frozen agent's old copy runs on, which shows the checkers see an overlap when there is one.
@Suite(.serialized) struct InstanceFailoverTests {
    enum Failure: String, CaseIterable, Sendable {
        /// The agent stopped (SIGSTOP) for 20 s: alive, silent, then back.
        case agentFrozen
        /// The agent killed (SIGKILL), its instances left running, started again later.
        case agentKilled
        /// The host's link down: the agent runs but reaches no control plane, then the link comes back.
        case linkCut
        /// The whole host gone (agent and namespace).
        case hostKilled
    }

    static let busybox = ["/bin/busybox", "/usr/bin/busybox"].first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test(arguments: Failure.allCases)
    func safeModeNeverRunsTwoCopies(_ failure: Failure) async throws {
        let report = try await Self.fail(failure, mode: "safe")
        print("safe, \(failure): replaced after \(report.replacedAfterMillis) ms; journal:\n\(report.journal)")
        #expect(report.sampledOverlaps == 0, "runc ran two copies at once in \(report.sampledOverlaps) samples")
        #expect(report.journalOverlapMillis == 0, "the monitors' journals overlap by \(report.journalOverlapMillis) ms: \(report.journal)")
    }

    @Test func fastModeOverlapsWhileTheOldCopyRunsOn() async throws {
        let report = try await Self.fail(.agentFrozen, mode: "fast")
        print("fast, agentFrozen: replaced after \(report.replacedAfterMillis) ms, overlap \(report.journalOverlapMillis) ms")
        #expect(report.sampledOverlaps > 0, "fast mode replaces at once: a frozen agent's copy still runs meanwhile")
        #expect(report.journalOverlapMillis > 0, "\(report.journal)")
    }

    struct Report {
        var sampledOverlaps = 0
        var journalOverlapMillis: Int64 = 0
        var journal = ""
        /// From the failure to the replacement seen Running.
        var replacedAfterMillis: Int64 = 0
    }

    /// One app instance on host 1 of three; `failure` strikes that host; waits for the replacement to run on
    /// another host, heals the host where it can, lets the sampler watch a little longer, and checks.
    static func fail(_ failure: Failure, mode: String) async throws -> Report {
        let busybox = try #require(Self.busybox)
        var report = Report()
        try await Testbed.with(hosts: 3, brokenAfter: 3, idcs: ["idc-a"], schedulerFlags: ["--node-lease-margin", "2"]) { bed, cluster in
            try await cluster.apply("one", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                spec.image = "host"
                spec.command = [busybox, "sh", "-c", "exec \(busybox) nc -ll -p 7000 -e \(busybox) hostname"]
                spec.failover = mode
                spec.lifecycle.stopGracePeriodSeconds = 1
            }
            try await cluster.eventually("Running", within: .seconds(60)) { try await cluster.allRunning("one", 1) }
            let before = try #require(try await cluster.instance("one"))
            let struck = bed.nodes.firstIndex(of: before.node)! + 1
            let sampler = CopySampler(bed: bed, instance: before.id)
            let sampling = Task { await sampler.run() }
            defer { sampling.cancel() }
            try await cluster.eventually("the sampler sees the copy", within: .seconds(30)) { sampler.samples.withLock { $0.contains { !$0.isEmpty } } }

            let link = "\(bed.name)-h\(struck)-r"
            var commandLine: [String] = []
            var killedAt: Int64?
            let struckAt = NodeLeaseFile.bootMillis()
            switch failure {
            case .agentFrozen: kill(try bed.agentPID(host: struck), SIGSTOP)
            case .agentKilled: commandLine = try bed.killAgent(host: struck)
            case .linkCut: try await runProgram("/sbin/ip", ["link", "set", link, "down"])
            case .hostKilled:
                killedAt = NodeLeaseFile.bootMillis()
                try await bed.kill(host: struck)
            }
            let pid = try? bed.agentPID(host: struck)
            defer {
                if failure == .agentFrozen, let pid { kill(pid, SIGCONT) }
                if failure == .linkCut { _ = try? spawnAndWait("/sbin/ip", ["link", "set", link, "up"]) }
            }
            try await cluster.eventually("running on another host", within: .seconds(60)) {
                let now = try await cluster.instance("one")
                return now?.state == "Running" && now?.node != before.node && now?.ip == before.ip
            }
            report.replacedAfterMillis = NodeLeaseFile.bootMillis() - struckAt
            switch failure {
            case .agentFrozen:
                // Fast mode: the frozen agent's copy is still running; give the sampler a second to see it.
                try await Task.sleep(for: .seconds(1))
                if let pid { kill(pid, SIGCONT) }
            case .agentKilled: try bed.startAgent(host: struck, commandLine)
            case .linkCut: try await runProgram("/sbin/ip", ["link", "set", link, "up"])
            case .hostKilled: break
            }
            if failure != .hostKilled {
                try await cluster.eventually("the struck host back and fenced", within: .seconds(60)) {
                    try await cluster.node(before.node).health == "Ready"
                }
            }
            // The struck host has fenced: whatever it still ran is gone, and it never starts the old copy again.
            try await cluster.eventually("one copy only, on the new host", within: .seconds(30)) {
                sampler.samples.withLock { samples in samples.suffix(5).allSatisfy { $0.count == 1 } && samples.count > 5 }
            }
            sampling.cancel()
            _ = await sampling.value
            report.sampledOverlaps = sampler.samples.withLock { $0.filter { $0.count > 1 }.count }
            (report.journalOverlapMillis, report.journal) = try CopySampler.journalOverlap(
                bed: bed, instance: before.id, killed: killedAt.map { (struck, $0) })
        }
        return report
    }
}

/// Samples which test hosts' runc state shows an instance running, every 100 ms.
final class CopySampler: Sendable {
    let roots: [String]
    let instance: String
    let runc: String
    /// Each sample: the hosts (1-based) where the instance's container was running.
    let samples = Mutex<[Set<Int>]>([])

    init(bed: Testbed, instance: String) {
        roots = (1...bed.hosts.count).map { "/run/sigma-testbed/\(bed.name)/h\($0)/state/runc" }
        self.instance = instance
        runc = Subprocess.find("runc") ?? "/usr/sbin/runc"
    }

    func run() async {
        while !Task.isCancelled {
            var running = Set<Int>()
            for (index, root) in roots.enumerated() where FileManager.default.fileExists(atPath: root) {
                guard let output = try? await runProgram(runc, ["--root", root, "list", "--format", "json"]),
                      let list = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]] else { continue }
                if list.contains(where: { $0["id"] as? String == instance && $0["status"] as? String == "running" }) {
                    running.insert(index + 1)
                }
            }
            samples.withLock { $0.append(running) }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Each host's copies of `instance` from its monitors' journal (`STATE/copies.log`), as (start, stop)
    /// CLOCK_BOOTTIME milliseconds, a copy still running stopping now (and one on a `killed` host when it was
    /// killed: its monitor died with it); returns the longest overlap between copies on different hosts and
    /// the journal lines.
    static func journalOverlap(bed: Testbed, instance: String, killed: (host: Int, at: Int64)?) throws -> (Int64, String) {
        var lives: [(host: Int, start: Int64, stop: Int64)] = []
        var lines: [String] = []
        let now = NodeLeaseFile.bootMillis()
        for host in 1...bed.hosts.count {
            let path = "/run/sigma-testbed/\(bed.name)/h\(host)/state/copies.log"
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            var started: Int64?
            for line in text.split(separator: "\n") {
                let words = line.split(separator: " ").map(String.init)
                guard words.count >= 3, words[2] == instance, let at = Int64(words[0]) else { continue }
                lines.append("h\(host): \(line)")
                if words[1] == "start" { started = at }
                if words[1] == "stop", let start = started {
                    lives.append((host, start, at))
                    started = nil
                }
            }
            if let start = started { lives.append((host, start, killed?.host == host ? killed!.at : now)) }
        }
        var overlap: Int64 = 0
        for a in lives {
            for b in lives where b.host > a.host {
                overlap = max(overlap, min(a.stop, b.stop) - max(a.start, b.start))
            }
        }
        return (overlap, lines.joined(separator: "\n"))
    }
}
