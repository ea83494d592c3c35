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
        /// The host's link down: the agent runs but reaches nothing, then the link comes back.
        case linkCut
        /// Only the control plane out of the host's reach (a blackhole route to it); peers still reach the host.
        case controlPlaneUnreachable
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
            let sampler = CopyChecker.Sampler(runcRoots: bed.runcRoots, instance: before.id)
            let sampling = Task { await sampler.run() }
            defer { sampling.cancel() }
            try await cluster.eventually("the sampler sees the copy", within: .seconds(30)) { sampler.samples.withLock { $0.contains { !$0.isEmpty } } }

            let link = "\(bed.name)-h\(struck)-r", namespace = "\(bed.name)-h\(struck)"
            var commandLine: [String] = []
            var killedAt: Int64?
            let struckAt = NodeLeaseFile.bootMillis()
            switch failure {
            case .agentFrozen: kill(try bed.agentPID(host: struck), SIGSTOP)
            case .agentKilled: commandLine = try bed.killAgent(host: struck)
            case .linkCut: try await runProgram("/sbin/ip", ["link", "set", link, "down"])
            case .controlPlaneUnreachable: try await runProgram("/sbin/ip", ["-n", namespace, "route", "add", "blackhole", bed.control + "/32"])
            case .hostKilled:
                killedAt = NodeLeaseFile.bootMillis()
                try await bed.kill(host: struck)
            }
            let pid = try? bed.agentPID(host: struck)
            defer {
                if failure == .agentFrozen, let pid { kill(pid, SIGCONT) }
                if failure == .linkCut { _ = try? spawnAndWait("/sbin/ip", ["link", "set", link, "up"]) }
                if failure == .controlPlaneUnreachable {
                    _ = try? spawnAndWait("/sbin/ip", ["-n", namespace, "route", "del", "blackhole", bed.control + "/32"])
                }
            }
            try await cluster.eventually("running on another host", within: .seconds(60)) {
                let now = try await cluster.instance("one")
                return now?.state == "Running" && now?.node != before.node && now?.ip == before.ip
            }
            report.replacedAfterMillis = NodeLeaseFile.bootMillis() - struckAt
            switch failure {
            case .agentFrozen:
                // Frozen for 20 s in all: fast mode's old copy runs on meanwhile, safe mode's was killed at the lapse.
                let frozenFor = NodeLeaseFile.bootMillis() - struckAt
                if frozenFor < 20_000 { try await Task.sleep(for: .milliseconds(20_000 - frozenFor)) }
                if let pid { kill(pid, SIGCONT) }
            case .agentKilled: try bed.startAgent(host: struck, commandLine)
            case .linkCut: try await runProgram("/sbin/ip", ["link", "set", link, "up"])
            case .controlPlaneUnreachable: try await runProgram("/sbin/ip", ["-n", namespace, "route", "del", "blackhole", bed.control + "/32"])
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
            report.sampledOverlaps = sampler.overlaps
            let (lives, journal) = bed.copies(of: before.id, killed: killedAt.map { (struck, $0) })
            report.journalOverlapMillis = CopyChecker.longestOverlap(lives)
            report.journal = journal
        }
        return report
    }
}

extension Testbed {
    /// Each host's runc root (where `runc list` finds its containers).
    var runcRoots: [String] { (1...hosts.count).map { "/run/sigma-testbed/\(name)/h\($0)/state/runc" } }

    /// `instance`'s copies in every host's monitor journal, and the journal lines; a copy on the `killed` host
    /// ends when it was killed (its monitor died with it), any other open one now.
    func copies(of instance: String, killed: (host: Int, at: Int64)?) -> ([CopyChecker.Life], String) {
        var lives: [CopyChecker.Life] = []
        var lines: [String] = []
        let now = NodeLeaseFile.bootMillis()
        for host in 1...hosts.count {
            let text = (try? String(contentsOfFile: "/run/sigma-testbed/\(name)/h\(host)/state/copies.log", encoding: .utf8)) ?? ""
            lines += text.split(separator: "\n").filter { $0.contains(instance) }.map { "h\(host): \($0)" }
            lives += CopyChecker.lives(node: host, journal: text, instance: instance, openUntil: killed?.host == host ? killed!.at : now)
        }
        return (lives, lines.joined(separator: "\n"))
    }
}
