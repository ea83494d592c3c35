import ArgumentParser
import Core
import Foundation

/// `sigma-bench schedule`: placement decisions per second on simulated clusters with labels and spread, next to
/// a scan of every node per decision (what the index saves), and 1,000,000 instances onto 5,000 nodes.
struct ScheduleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule", abstract: "Placement decisions/s at 1,000-10,000 nodes (labels + spread) vs a scan per decision.")

    @Option(help: "Cluster sizes for the decision rate.") var nodes: [Int] = [1_000, 5_000, 10_000]
    @Option(help: "Instances placed per cluster size.") var instances = 100_000
    @Option(help: "Instances for the big run onto 5,000 nodes (0 skips it).") var big = 1_000_000
    @Option(help: "Decisions timed for the scan baseline.") var scanDecisions = 2_000
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try output.emit(measure())
    }

    func measure() -> Report {
        var report = Report(title: "sigma-bench schedule (decisions, \(ProcessInfo.processInfo.activeProcessorCount) cores)")
        for size in nodes {
            let cluster = SimulatedCluster(nodes: size, seed: UInt64(size))
            let scan = cluster.scanRate(decisions: scanDecisions)
            let run = cluster.placeAll(instances: instances, perApp: 100)
            report.figures.append(Figure(
                name: "schedule_decisions_\(size)_nodes", value: run.rate, unit: "decisions/s", baseline: scan,
                target: size == 5_000 ? .minValue(20_000) : .none))
            report.notes.append(
                "\(size) nodes: \(run.placed) of \(instances) placed in \(String(format: "%.2f", run.seconds)) s; max skew \(run.idcSkew) between IDCs, \(run.nodeSkew) between nodes of an IDC")
        }
        if big > 0 {
            let cluster = SimulatedCluster(nodes: 5_000, seed: 5_000)
            let run = cluster.placeAll(instances: big, perApp: 1_000)
            report.figures.append(Figure(
                name: "schedule_decisions_\(big)_instances_5000_nodes", value: run.rate, unit: "decisions/s",
                baseline: cluster.scanRate(decisions: scanDecisions), target: .minValue(20_000)))
            report.notes.append(
                "\(big) instances onto 5000 nodes: \(run.placed) placed in \(String(format: "%.2f", run.seconds)) s (target < 50 s), max skew \(run.idcSkew) between IDCs, \(run.nodeSkew) between nodes of an IDC (where nodes fill up, capacity sets the skew)")
        }
        report.notes.append("baseline: one scan of every node per decision (same rules, no index), \(scanDecisions) decisions")
        report.notes.append("every app: request 50m-250m / 128-512 MiB, spread over IDC then node; a third select disk=ssd, a fifth require IDCs of one region")
        return report
    }
}

/// A made-up cluster: 3 regions × 4 IDCs, two ISPs, SSD and HDD nodes of mixed sizes, and apps to place on it.
struct SimulatedCluster {
    var nodes: [NodeCandidate] = []

    init(nodes count: Int, seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let gi: Int64 = 1 << 30
        for index in 0..<count {
            let region = index % 3
            let idc = "r\(region)-idc\(Int.random(in: 0..<4, using: &rng))"
            nodes.append(NodeCandidate(
                name: "node-\(index)", region: "r\(region)", idc: idc, isp: index % 2 == 0 ? "ct" : "cu",
                labels: ["disk": Int.random(in: 0..<3, using: &rng) == 0 ? "ssd" : "hdd", "tier": "general"],
                capacity: Resources(cpuMillis: Int64([32, 64, 96].randomElement(using: &rng)!) * 1000,
                                    memoryBytes: Int64([128, 256, 512].randomElement(using: &rng)!) * gi)))
        }
    }

    func demand(app: Int) -> PlacementDemand {
        var rng = SeededGenerator(seed: UInt64(app) &* 7919)
        var demand = PlacementDemand(
            app: "app-\(app)",
            request: Resources(cpuMillis: Int64.random(in: 1...5, using: &rng) * 50, memoryBytes: Int64.random(in: 1...4, using: &rng) * (1 << 27)))
        if app % 3 == 0 { demand.selector = LabelSelector(matchLabels: ["disk": "ssd"]) }
        if app % 5 == 0 { demand.requiredIDCs = Set((0..<4).map { "r\(app % 3)-idc\($0)" }) }
        return demand
    }

    struct Run {
        var placed = 0
        var seconds = 0.0
        var idcSkew = 0
        var nodeSkew = 0
        var rate: Double { Double(placed) / seconds }
    }

    /// Places `instances` in apps of `perApp`, one pass per app, as the scheduler does.
    func placeAll(instances: Int, perApp: Int) -> Run {
        var placer = Placer(nodes: nodes)
        var run = Run()
        var placements: [[String]] = []
        let started = ContinuousClock.now
        for app in 0..<(instances + perApp - 1) / perApp {
            let outcome = placer.place(demand(app: app), count: min(perApp, instances - app * perApp))
            run.placed += outcome.nodes.count
            placements.append(outcome.nodes)
        }
        let elapsed = ContinuousClock.now - started
        run.seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        for (app, placed) in placements.enumerated() {
            let demand = demand(app: app)
            let eligible = nodes.filter { PlacementFilters.reject($0, for: demand, filters: [SelectorMatches(), InRequiredIDC()]) == nil }
            var byNode: [String: Int] = [:]
            for name in placed { byNode[name, default: 0] += 1 }
            let byIDC = Dictionary(grouping: eligible, by: \.idc).mapValues { $0.reduce(0) { $0 + byNode[$1.name, default: 0] } }
            run.idcSkew = max(run.idcSkew, (byIDC.values.max() ?? 0) - (byIDC.values.min() ?? 0))
            for members in Dictionary(grouping: eligible, by: \.idc).values {
                let counts = members.map { byNode[$0.name, default: 0] }
                run.nodeSkew = max(run.nodeSkew, counts.max()! - counts.min()!)
            }
        }
        return run
    }

    /// Decisions per second when each decision scans every node: filters, then the lowest
    /// (IDC count, node count, fraction requested, name).
    func scanRate(decisions: Int) -> Double {
        var nodes = self.nodes
        let started = ContinuousClock.now
        var done = 0
        var app = 0
        while done < decisions {
            let demand = demand(app: app)
            var idcCounts: [String: Int] = [:]
            var nodeCounts: [Int: Int] = [:]
            for _ in 0..<100 where done < decisions {
                var best: (Int, Int, Double, String, Int)?
                for (index, node) in nodes.enumerated() where PlacementFilters.reject(node, for: demand) == nil {
                    let after = node.requested + demand.request
                    let fraction = (Double(after.cpuMillis) / Double(node.capacity.cpuMillis) + Double(after.memoryBytes) / Double(node.capacity.memoryBytes)) / 2
                    let key = (idcCounts[node.idc, default: 0], nodeCounts[index, default: 0], fraction, node.name, index)
                    if best == nil || (key.0, key.1, key.2, key.3) < (best!.0, best!.1, best!.2, best!.3) { best = key }
                }
                done += 1
                guard let best else { break }
                nodes[best.4].requested += demand.request
                idcCounts[nodes[best.4].idc, default: 0] += 1
                nodeCounts[best.4, default: 0] += 1
            }
            app += 1
        }
        let elapsed = ContinuousClock.now - started
        return Double(decisions) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
}
