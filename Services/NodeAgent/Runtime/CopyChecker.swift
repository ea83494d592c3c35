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

        public init(node: Int, start: Int64, stop: Int64) {
            self.node = node
            self.start = start
            self.stop = stop
        }
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

    /// Samples, every `interval`, on which nodes (their runc roots, 1-based) `instance`'s container is running
    /// at one instant. A sweep reads the roots one after another, and a slow `runc list` (a loaded machine)
    /// makes a sweep last long: a copy seen early and another seen late may never have run together. So when
    /// a sweep sees more than one node, a second sweep reads them again, and a sample holds the last node the
    /// first sweep saw running and every node seen before it that still ran in the second sweep: each of
    /// those ran before and after that last read, so at it (a copy is one container ID on one node; its
    /// stopping and starting again within two reads is not told apart).
    public final class Sampler: Sendable {
        let roots: [String]
        let instance: String
        let runtime: String
        let interval: Duration
        /// Each sample: the nodes where the container was running at one instant.
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
                let sample = await sampleOnce()
                samples.withLock { $0.append(sample) }
                try? await Task.sleep(for: interval)
            }
        }

        /// One sample (see the type's comment).
        public func sampleOnce() async -> Set<Int> {
            let first = await sweep()
            guard let last = first.last, first.count > 1 else { return Set(first) }
            let again = Set(await sweep())
            return Set(first.dropLast().filter(again.contains)).union([last])
        }

        /// The nodes seen running, in the order they were read.
        func sweep() async -> [Int] {
            var running: [Int] = []
            for (index, root) in roots.enumerated() where FileManager.default.fileExists(atPath: root) {
                guard let result = try? await Subprocess.run(runtime, ["--root", root, "list", "--format", "json"]),
                      let list = try? JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]] else { continue }
                if list.contains(where: { $0["id"] as? String == instance && $0["status"] as? String == "running" }) {
                    running.append(index + 1)
                }
            }
            return running
        }

        /// Samples that saw the container running on more than one node.
        public var overlaps: Int { samples.withLock { $0.filter { $0.count > 1 }.count } }
    }
}
