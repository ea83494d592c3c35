import ArgumentParser
import Foundation
import Protocol
import RPC

/// The phases of `sigma-bench hollow` and what each measures.
extension HollowRun {
    /// `seconds` at rest: heartbeat p50/p99, nodes that turned Suspect or Broken, and CPU.
    func atRest(_ what: String, seconds: Double) async throws -> [Figure] {
        latencies.withLock { $0 = (true, []) }
        let since = unixMillis()
        let cpu = CPUWatch(watched)
        // The baseline: the scheduler's Health round trip over the same RPC path, under the same load.
        let probing = Task { [client] in
            var took: [Double] = []
            while !Task.isCancelled {
                let started = ContinuousClock.now
                if (try? await client.call(CommonMethods.health, .init())) != nil { took.append(milliseconds(ContinuousClock.now - started)) }
                try? await Task.sleep(for: .milliseconds(50))
            }
            return took.sorted()
        }
        try await Task.sleep(for: .seconds(seconds))
        probing.cancel()
        let health = await probing.value
        let used = cpu.percent()
        let values = latencies.withLock { state -> [Double] in
            state.recording = false
            return state.values.sorted()
        }
        let flaps = try await flapped(since: since)
        // No heartbeat answered within its timeout (3 intervals): the latency is at least that.
        let timedOut = milliseconds(interval * 3)
        return [
            Figure(name: "\(what): heartbeat p50", value: values.isEmpty ? timedOut : percentile(values, 0.5), unit: "ms",
                   baseline: percentile(health, 0.5), target: .none),
            Figure(name: "\(what): heartbeat p99", value: values.isEmpty ? timedOut : percentile(values, 0.99), unit: "ms",
                   baseline: percentile(health, 0.99), target: .maxValue(100)),
            Figure(name: "\(what): heartbeats answered", value: Double(values.count) / seconds, unit: "/s", baseline: 0, target: .none),
            Figure(name: "\(what): nodes that flapped", value: Double(flaps.count), unit: "nodes", baseline: 0, target: .maxValue(0)),
        ] + cpuFigures(what, used)
    }

    func cpuFigures(_ what: String, _ used: [String: Double]) -> [Figure] {
        let simulator = used["simulator"] ?? 0
        return ["scheduler", "allocator", "postgres"].map {
            Figure(name: "\(what): \($0) CPU", value: used[$0] ?? 0, unit: "%", baseline: simulator, target: .none)
        }
    }

    /// Nodes with a Suspect or Broken event since then (a node's flap), other than `except`.
    func flapped(since: Int64, except: Set<String> = []) async throws -> Set<String> {
        var request = Sigma_V1_ListEventsRequest()
        (request.kind, request.limit, request.sinceUnixMs) = ("node", 10_000, since)
        let events = try await client.call(SchedulerMethods.listEvents, request).events
        return Set(events.filter { ["Suspect", "Broken"].contains($0.reason) && !except.contains($0.name) }.map(\.name))
    }

    /// Applies nodes × instances replicas (apps of at most 1,000), times apply → all Running, and each
    /// instance's own time from the apply to its first accepted Running report. Returns id → (node, IP).
    func deploy(instances: Int, report: inout Report) async throws -> [String: (node: String, ip: String)] {
        let total = nodes.count * instances
        let apps = (total + 999) / 1000
        let since = unixMillis()
        let started = ContinuousClock.now
        for app in 0..<apps {
            var apply = Sigma_V1_ApplyAppRequest()
            apply.spec.name = "hollow-\(app)"
            apply.spec.image = "host"
            apply.spec.command = ["/bin/true"]
            apply.spec.replicas = Int32(min(1000, total - app * 1000))
            apply.spec.resources.request.cpuMillis = 10
            apply.spec.resources.request.memoryBytes = 16 << 20
            _ = try await client.call(SchedulerMethods.applyApp, apply)
        }
        let applied = ContinuousClock.now - started
        try await until("all \(total) Running", within: .seconds(600)) { try await self.ready() == total }
        let allRunning = ContinuousClock.now - started
        let each = nodes.flatMap { $0.confirmations.values.map { milliseconds($0 - started) / 1000 } }.sorted()
        let flaps = try await flapped(since: since)
        report.notes.append("\(apps) apps applied in \(format(milliseconds(applied) / 1000)) s; each instance timed from the first ApplyApp to its node's first accepted Running report")
        report.figures += [
            Figure(name: "apply → all \(total) Running", value: milliseconds(allRunning) / 1000, unit: "s", baseline: 0, target: .none),
            Figure(name: "instances Running per second", value: Double(total) / (milliseconds(allRunning) / 1000), unit: "/s", baseline: 0, target: .minValue(5000)),
            Figure(name: "per-instance apply → Running p50", value: percentile(each, 0.5), unit: "s", baseline: 0, target: .none),
            Figure(name: "per-instance apply → Running p99", value: percentile(each, 0.99), unit: "s", baseline: 0, target: .maxValue(5)),
            Figure(name: "nodes that flapped during the deploy", value: Double(flaps.count), unit: "nodes", baseline: 0, target: .maxValue(0)),
        ]
        return try await placements(apps)
    }

    /// Instances Running and ready over the hollow apps.
    func ready() async throws -> Int {
        let listed = try await client.call(SchedulerMethods.listApps, .init()).apps
        return listed.filter { $0.spec.name.hasPrefix("hollow-") }.reduce(0) { $0 + Int($1.ready) }
    }

    func placements(_ apps: Int) async throws -> [String: (node: String, ip: String)] {
        var placed: [String: (node: String, ip: String)] = [:]
        for app in 0..<apps {
            var list = Sigma_V1_ListInstancesRequest()
            list.app = "hollow-\(app)"
            for instance in try await client.call(SchedulerMethods.listInstances, list).instances { placed[instance.id] = (instance.node, instance.ip) }
        }
        return placed
    }

    /// Silences `percent` of the nodes; times until each of their instances is Running elsewhere with the same
    /// IP, and counts the healthy nodes that flapped meanwhile.
    func silenceSome(percent: Int, placed: [String: (node: String, ip: String)], report: inout Report) async throws -> [Figure] {
        let silenced = nodes.filter { $0.index % (100 / percent) == 0 }
        let names = Set(silenced.map(\.name))
        let moving = placed.filter { names.contains($0.value.node) }
        let since = unixMillis()
        let started = ContinuousClock.now
        silenced.forEach { $0.silence() }
        let apps = (placed.count + 999) / 1000
        try await until("\(moving.count) instances Running elsewhere", within: .seconds(300)) {
            let now = try await self.placements(apps)
            let moved = moving.allSatisfy { id, was in now[id].map { !names.contains($0.node) && $0.ip == was.ip } ?? false }
            guard moved else { return false }
            return try await self.ready() == placed.count
        }
        let moved = ContinuousClock.now - started
        let flaps = try await flapped(since: since, except: names)
        report.notes.append("\(silenced.count) nodes silenced (they stop heartbeating), holding \(moving.count) instances; failover is the default (safe: the lease lapses first)")
        return [
            Figure(name: "\(percent)% silenced → their instances Running elsewhere, same IPs", value: milliseconds(moved) / 1000, unit: "s", baseline: 0, target: .maxValue(10)),
            Figure(name: "healthy nodes that flapped meanwhile", value: Double(flaps.count), unit: "nodes", baseline: 0, target: .maxValue(0)),
        ]
    }

    /// Deletes the apps; times until every node that still beats runs nothing.
    func teardown() async throws -> [Figure] {
        let started = ContinuousClock.now
        for app in try await client.call(SchedulerMethods.listApps, .init()).apps where app.spec.name.hasPrefix("hollow-") {
            var delete = Sigma_V1_AppRequest()
            delete.name = app.spec.name
            _ = try await client.call(SchedulerMethods.deleteApp, delete)
        }
        let live = nodes.filter { !$0.state.withLock { $0.silenced } }
        try await until("every node empty", within: .seconds(300)) { live.allSatisfy { $0.runningCount == 0 } }
        return [Figure(name: "delete → every node empty", value: milliseconds(ContinuousClock.now - started) / 1000, unit: "s", baseline: 0, target: .none)]
    }

    func until(_ what: String, within limit: Duration, _ done: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + limit
        while try await !done() {
            guard ContinuousClock.now < deadline else { throw ValidationError("not reached within \(limit): \(what)") }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    func unixMillis() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

/// CPU used by processes over a phase, as percent of one core: the watched ones by pid, every process named
/// postgres together, and this one.
struct CPUWatch {
    let watched: [String: pid_t]
    let start: [String: Double]
    let began = ContinuousClock.now

    init(_ watched: [String: pid_t]) {
        self.watched = watched
        start = Self.sample(watched)
    }

    static func sample(_ watched: [String: pid_t]) -> [String: Double] {
        var used = watched.mapValues { cpuSeconds("/proc/\($0)/stat") }
        used["simulator"] = cpuSeconds("/proc/self/stat")
        let processes = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        used["postgres"] = processes.filter { $0.allSatisfy(\.isNumber) }.reduce(0) { sum, pid in
            let comm = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            return comm == "postgres" ? sum + cpuSeconds("/proc/\(pid)/stat") : sum
        }
        return used
    }

    /// utime + stime of a /proc/PID/stat, in seconds (fields 14 and 15, after the parenthesised command).
    static func cpuSeconds(_ path: String) -> Double {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let close = text.lastIndex(of: ")") else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    func percent() -> [String: Double] {
        let now = Self.sample(watched)
        let elapsed = milliseconds(ContinuousClock.now - began) / 1000
        return Dictionary(uniqueKeysWithValues: now.map { ($0.key, max(0, $0.value - (start[$0.key] ?? 0)) / elapsed * 100) })
    }
}
