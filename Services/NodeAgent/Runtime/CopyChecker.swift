import Foundation
import Synchronization

/// Two ways to see whether two copies of one instance ever ran at once on different nodes of one machine's
/// test hosts (they share CLOCK_BOOTTIME): the monitors' journals (`InstanceRuntime.journal`, each copy's start
/// and reaping) and a sampler of each node's runc state.
public enum CopyChecker {
    /// One copy's life on one node, in CLOCK_BOOTTIME milliseconds.
    public struct Life: Sendable, Equatable {
        public let node: Int
        public let start: Int64
        public let stop: Int64
    }

    /// The copies of `instance` in one node's journal text: a copy with no stop line lasts until `openUntil`.
    public static func lives(node: Int, journal text: String, instance: String, openUntil: Int64) -> [Life] {
        var lives: [Life] = []
        var started: Int64?
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ").map(String.init)
            guard words.count >= 3, words[2] == instance, let at = Int64(words[0]) else { continue }
            if words[1] == "start" { started = at }
            if words[1] == "stop", let start = started {
                lives.append(Life(node: node, start: start, stop: at))
                started = nil
            }
        }
        if let start = started { lives.append(Life(node: node, start: start, stop: max(start, openUntil))) }
        return lives
    }

    /// The longest time two copies on different nodes both lived (0: never).
    public static func longestOverlap(_ lives: [Life]) -> Int64 {
        var overlap: Int64 = 0
        for a in lives {
            for b in lives where b.node > a.node {
                overlap = max(overlap, min(a.stop, b.stop) - max(a.start, b.start))
            }
        }
        return overlap
    }

    /// Samples, every `interval`, on which nodes (their runc roots, 1-based) `instance`'s container is running.
    public final class Sampler: Sendable {
        let roots: [String]
        let instance: String
        let runtime: String
        let interval: Duration
        /// Each sample: the nodes where the container was running.
        public let samples = Mutex<[Set<Int>]>([])

        public init(runcRoots: [String], instance: String, runtime: String? = nil, interval: Duration = .milliseconds(100)) {
            roots = runcRoots
            self.instance = instance
            self.runtime = runtime ?? Subprocess.find("runc") ?? "/usr/sbin/runc"
            self.interval = interval
        }

        /// Samples until the task is cancelled.
        public func run() async {
            while !Task.isCancelled {
                var running = Set<Int>()
                for (index, root) in roots.enumerated() where FileManager.default.fileExists(atPath: root) {
                    guard let result = try? await Subprocess.run(runtime, ["--root", root, "list", "--format", "json"]),
                          let list = try? JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]] else { continue }
                    if list.contains(where: { $0["id"] as? String == instance && $0["status"] as? String == "running" }) {
                        running.insert(index + 1)
                    }
                }
                samples.withLock { $0.append(running) }
                try? await Task.sleep(for: interval)
            }
        }

        /// Samples that saw the container running on more than one node.
        public var overlaps: Int { samples.withLock { $0.filter { $0.count > 1 }.count } }
    }
}
