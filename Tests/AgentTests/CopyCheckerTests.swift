import Foundation
import NodeRuntime
import Testing

/// The at-most-one checkers themselves, on a scripted runtime: the sampler counts two copies only when both
/// ran at one instant, and the journals' overlap is measured between nodes.
struct CopyCheckerTests {
    /// A stand-in for `runc --root R list --format json`: each call answers the next line of R/answers
    /// ("running" or "stopped"; the last line repeats) and counts itself in R/calls.
    static func scriptedRoots(_ answers: [[String]]) throws -> (runtime: String, roots: [String], folder: String) {
        let folder = NSTemporaryDirectory() + "sigma-copychecker-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let runtime = folder + "/runc"
        let script = """
            #!/bin/sh
            root=$2
            n=$(cat "$root/calls" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$root/calls"
            state=$(sed -n "${n}p" "$root/answers"); [ -n "$state" ] || state=$(tail -n 1 "$root/answers")
            echo "[{\\"id\\":\\"other\\",\\"status\\":\\"running\\"},{\\"id\\":\\"one-0\\",\\"status\\":\\"$state\\"}]"

            """
        // Written through a close-on-exec descriptor: a program another test forks meanwhile must not hold it
        // open for writing, or running the script fails with ETXTBSY.
        let fd = open(runtime, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
        #expect(fd >= 0)
        _ = script.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
        close(fd)
        var roots: [String] = []
        for (index, lines) in answers.enumerated() {
            let root = folder + "/h\(index + 1)"
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try (lines.joined(separator: "\n") + "\n").write(toFile: root + "/answers", atomically: true, encoding: .utf8)
            roots.append(root)
        }
        return (runtime, roots, folder)
    }

    static func calls(_ root: String) -> Int {
        Int(((try? String(contentsOfFile: root + "/calls", encoding: .utf8)) ?? "0").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    @Test func aHandOverDuringOneSweepIsNotTwoCopies() async throws {
        // Node 1 is read running, stops, then node 2 starts and is read running: one sweep saw both, never at once.
        let (runtime, roots, folder) = try Self.scriptedRoots([["running", "stopped"], ["running"], ["stopped"]])
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let sampler = CopyChecker.Sampler(runcRoots: roots, instance: "one-0", runtime: runtime)
        #expect(await sampler.sampleOnce() == [2])
        #expect(roots.map(Self.calls) == [2, 2, 2], "a sweep that saw two nodes is read again")
    }

    @Test func twoCopiesRunningTogetherAreCounted() async throws {
        let (runtime, roots, folder) = try Self.scriptedRoots([["running"], ["stopped"], ["running"]])
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let sampler = CopyChecker.Sampler(runcRoots: roots, instance: "one-0", runtime: runtime)
        #expect(await sampler.sampleOnce() == [1, 3])
        #expect(await sampler.sampleOnce() == [1, 3])
    }

    @Test func oneCopyIsReadOnce() async throws {
        let (runtime, roots, folder) = try Self.scriptedRoots([["stopped"], ["running"], ["stopped"]])
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let sampler = CopyChecker.Sampler(runcRoots: roots, instance: "one-0", runtime: runtime)
        #expect(await sampler.sampleOnce() == [2])
        #expect(roots.map(Self.calls) == [1, 1, 1])
        // Another container's state never counts.
        let other = CopyChecker.Sampler(runcRoots: roots, instance: "one-1", runtime: runtime)
        #expect(await other.sampleOnce() == [])
    }

    @Test func sampledOverlapsCountOnlySamplesWithTwoNodes() async throws {
        let (runtime, roots, folder) = try Self.scriptedRoots([["running", "running", "stopped"], ["running"]])
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let sampler = CopyChecker.Sampler(runcRoots: roots, instance: "one-0", runtime: runtime, interval: .milliseconds(1))
        // Sweeps: [1,2] then again [1,2] → {1,2}; then [2] (node 1's third answer) → {2}, and so on.
        let task = Task { await sampler.run() }
        while sampler.samples.withLock({ $0.count }) < 3 { try await Task.sleep(for: .milliseconds(5)) }
        task.cancel()
        _ = await task.value
        let samples = sampler.samples.withLock { $0 }
        #expect(samples.first == [1, 2])
        #expect(samples.dropFirst().allSatisfy { $0 == [2] })
        #expect(sampler.overlaps == 1)
    }

    @Test func journalsOverlapOnlyAcrossNodes() {
        let h1 = "100 start one-0 \n900 stop one-0 fenced the node's lease lapsed\n950 start one-1 \n"
        let h2 = "700 start one-0 \n"
        let lives = CopyChecker.lives(node: 1, journal: h1, instance: "one-0", openUntil: 2000)
            + CopyChecker.lives(node: 2, journal: h2, instance: "one-0", openUntil: 2000)
        #expect(lives == [.init(node: 1, start: 100, stop: 900), .init(node: 2, start: 700, stop: 2000)])
        #expect(CopyChecker.longestOverlap(lives) == 200)
        let handedOver = CopyChecker.lives(node: 1, journal: h1, instance: "one-0", openUntil: 2000)
            + CopyChecker.lives(node: 2, journal: "901 start one-0 \n", instance: "one-0", openUntil: 2000)
        #expect(CopyChecker.longestOverlap(handedOver) == 0)
    }
}
