import Foundation
import Protocol
import Testing
import TestSupport

/// sigmactl's output, verb by verb, against golden files in Tests/Golden/sigmactl (ids, endpoints and times
/// masked). `SIGMA_UPDATE_GOLDEN=1 make test` writes them anew; review the diff before committing it.
@Suite(.serialized) struct SigmactlGoldenTests {
    static let folder = packageRoot.path + "/Tests/Golden/sigmactl"
    static let update = ProcessInfo.processInfo.environment["SIGMA_UPDATE_GOLDEN"] == "1"

    /// What varies from run to run, masked with the width it had (so that the columns stay as printed).
    static func masked(_ text: String) -> String {
        var text = text
        let rules: [(String, String)] = [
            ("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"),
            ("tcp://127\\.0\\.0\\.1:[0-9]+", "tcp://127.0.0.1:<port>"),
            ("[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}", "YYYY-MM-DD hh:mm:ss"),
            ("(_unix_ms\"?[:=]? *\"?)[0-9]{13}", "$1<unix-ms>"),
            ("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z", "YYYY-MM-DDThh:mm:ss.sssZ"),
            ("/tmp/sigma-golden-[0-9a-f]{8}", "<dir>"),
            ("public key: .*", "public key: <key>"),
            ("app/web index [0-9]+", "app/web index <n>"),
            ("(RolloutSucceeded +revision [0-9]+ → [0-9]+ in )[0-9]+ s", "$1<n> s"),
        ]
        for (pattern, replacement) in rules {
            text = text.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression)
        }
        // A table's DURATION cell with the spaces after it: the same width every run whatever the value.
        let durations = try! NSRegularExpression(pattern: "(?<=   )[0-9]+(ms|s|m[0-9]{2}s|h[0-9]{2}m) {3,}")
        for match in durations.matches(in: text, range: NSRange(text.startIndex..., in: text)).reversed() {
            let range = Range(match.range, in: text)!
            text.replaceSubrange(range, with: "<duration>".padding(toLength: max(11, match.range.length), withPad: " ", startingAt: 0))
        }
        return text
    }

    /// The rows of the table under the last "Events" heading sorted: events of several instances, reported by
    /// different agents, interleave in any order (their times are masked alike).
    static func eventsSorted(_ text: String) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let heading = lines.lastIndex(where: { $0.hasPrefix("Events") }), heading + 2 < lines.count else { return text }
        let rows = lines[(heading + 2)...].filter { !$0.isEmpty }.sorted()
        lines.replaceSubrange((heading + 2)..., with: rows + [""])
        return lines.joined(separator: "\n")
    }

    /// Runs sigmactl ARGS and compares `$ sigmactl ARGS`, its output and its exit status with the golden file NAME.
    /// `environment` (NAME=VALUE) is added to the test's own.
    static func golden(_ name: String, _ arguments: [String], flags: [String], environment: [String] = [],
                       eventsInAnyOrder: Bool = false) async throws {
        let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
        let result = environment.isEmpty
            ? try await runProgramStatus(sigmactl, arguments + flags)
            : try await runProgramStatus("/usr/bin/env", environment + [sigmactl] + arguments + flags)
        var shown = masked("$ sigmactl \(arguments.joined(separator: " "))\n\(result.output)" + (result.status == 0 ? "" : "[exit \(result.status)]\n"))
        if eventsInAnyOrder { shown = eventsSorted(shown) }
        let path = "\(folder)/\(name).txt"
        if update {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try shown.write(toFile: path, atomically: true, encoding: .utf8)
            return
        }
        let expected = try String(contentsOfFile: path, encoding: .utf8)
        #expect(shown == expected, "sigmactl \(arguments.joined(separator: " ")) differs from \(name).txt:\n\(shown)")
    }

    @Test func everyVerbPrintsWhatItsGoldenFileSays() async throws {
        // Nodes turn Suspect only after 20 s without a heartbeat: a loaded machine must not add events to the output.
        try await SchedulerCluster.with(discoveries: 1, configs: 1, brokenAfter: 60) { cluster in
            let n1 = SimulatedAgent("n1", client: cluster.client), n2 = SimulatedAgent("n2", client: cluster.client)
            try await n1.register(idc: "idc-a", cpu: 4000, memory: 8 << 30, labels: ["disk": "ssd"], hostIP: "198.18.0.1")
            try await n2.register(idc: "idc-b", cpu: 8000, memory: 16 << 30, hostIP: "198.18.0.2")
            n1.start()
            n2.start()
            defer { n1.stop(); n2.stop() }
            let flags = ["--scheduler", cluster.endpoints.joined(separator: ","), "--allocator", cluster.allocatorEndpoint,
                         "--discovery", cluster.discoveryEndpoints.joined(separator: ","), "--config", cluster.configEndpoints.joined(separator: ","),
                         "--timeout", "20"]
            let scratch = "/tmp/sigma-golden-" + String(UUID().uuidString.prefix(8)).lowercased()
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            try """
                name: web
                team: shop
                image: oci:/images/web:1
                replicas: 2
                resources:
                  request: {cpu: 500m, memory: 512Mi}
                  limit: {cpu: 2, memory: 1Gi}
                ports: [{name: http, containerPort: 8080}]
                """.write(toFile: scratch + "/web.yaml", atomically: true, encoding: .utf8)
            try "listen={{instance.ip}}:8080\n".write(toFile: scratch + "/web.conf", atomically: true, encoding: .utf8)
            try "name: web\nimage: x\nreplicas: many\n".write(toFile: scratch + "/bad.yaml", atomically: true, encoding: .utf8)

            try await Self.golden("apply", ["apply", "-f", scratch + "/web.yaml", "--no-wait"], flags: flags)
            try await cluster.eventually("web running") { try await cluster.allRunning("web", 2) }
            try await cluster.eventually("the pool counts both") {
                let pool = try await cluster.client.call(SchedulerMethods.getPool, .init())
                return pool.total.instances == 2 && pool.total.readyNodes == 2
            }
            try await Self.golden("get-nodes", ["get", "nodes"], flags: flags)
            try await Self.golden("get-nodes-json", ["get", "nodes", "-o", "json"], flags: flags)
            try await Self.golden("get-apps", ["get", "apps", "-o", "wide"], flags: flags)
            try await Self.golden("get-apps-yaml", ["get", "apps", "web", "-o", "yaml"], flags: flags)
            try await Self.golden("get-instances", ["get", "instances", "-o", "wide"], flags: flags)
            try await Self.golden("get-pool", ["get", "pool", "--group-by", "idc"], flags: flags)
            try await Self.golden("get-pool-yaml", ["get", "pool", "--group-by", "idc", "-o", "yaml"], flags: flags)
            try await cluster.eventually("the new app's rollout done") { try await RolloutTests.rollouts(cluster, "web").first?.state == "Succeeded" }
            try await Self.golden("describe-app", ["describe", "app", "web"], flags: flags, eventsInAnyOrder: true)
            try await Self.golden("describe-node", ["describe", "node", "n1"], flags: flags)
            // Watching a listing that stays as it is: the table once.
            try await Self.golden("get-instances-watch", ["get", "instances", "-w", "--watch-interval", "0.2", "--watch-timeout", "1"], flags: flags)
            try await Self.golden("discover", ["discover", "web"], flags: flags)
            try await Self.golden("alloc-pools", ["alloc", "pools"], flags: flags)
            try await Self.golden("alloc-ips", ["alloc", "ips"], flags: flags)
            try await Self.golden("config-publish", ["config", "publish", "web", "--file", "/etc/web.conf=\(scratch)/web.conf", "-m", "first"], flags: flags)
            try await Self.golden("config-get", ["config", "get", "web"], flags: flags)
            try await Self.golden("config-history", ["config", "history", "web"], flags: flags)
            try await Self.golden("describe-instance", ["describe", "instance", "web-0"], flags: flags)
            n1.setUsage("web", cpuMillis: 250, memoryBytes: 300 << 20)
            n2.setUsage("web", cpuMillis: 250, memoryBytes: 300 << 20)
            try await cluster.eventually("web's usage reported") {
                try await cluster.instances("web").allSatisfy { $0.usage.cpuMillis == 250 && $0.usage.memoryBytes == 300 << 20 }
            }
            try await Self.golden("top-instances", ["top", "instances", "--app", "web"], flags: flags)
            try await Self.golden("top-nodes", ["top", "nodes"], flags: flags)
            let generation = try #require(try await cluster.instance("web", ordinal: 1)).generation
            try await Self.golden("restart", ["restart", "web-1"], flags: flags)
            try await cluster.eventually("web-1 running again") {
                let now = try await cluster.instance("web", ordinal: 1)
                return now?.state == "Running" && now?.generation == generation + 1
            }
            try await Self.golden("set-resources", ["set", "resources", "web", "--limit-cpu", "3"], flags: flags)
            try await Self.golden("scale", ["scale", "web", "--replicas", "3"], flags: flags)
            try await cluster.eventually("3 running") { try await cluster.allRunning("web", 3) }
            try await Self.golden("rollout-history", ["rollout", "history", "web"], flags: flags)
            try await Self.golden("rollout-undo", ["rollout", "undo", "web", "--to-revision", "2"], flags: flags)
            try await cluster.eventually("back to 2") { try await cluster.instances("web").count == 2 }
            // A changed template rolls; one whose instances crash-loop fails, and `rollout status` says so (exit 4).
            for version in [2, 3] {
                try String(contentsOfFile: scratch + "/web.yaml", encoding: .utf8).replacingOccurrences(of: "web:1", with: "web:\(version)")
                    .write(toFile: scratch + "/web\(version).yaml", atomically: true, encoding: .utf8)
            }
            _ = try await runProgram(ServiceProcess.binDirectory + "/sigmactl", ["apply", "-f", scratch + "/web2.yaml", "--no-wait"] + flags)
            try await cluster.eventually("the rollout to web:2 done") { try await RolloutTests.rollouts(cluster, "web").first?.state == "Succeeded" }
            try await Self.golden("rollout-status", ["rollout", "status", "web"], flags: flags)
            n1.setCrashing("oci:/images/web:3")
            n2.setCrashing("oci:/images/web:3")
            _ = try await runProgram(ServiceProcess.binDirectory + "/sigmactl", ["apply", "-f", scratch + "/web3.yaml", "--no-wait"] + flags)
            try await cluster.eventually("the rollout to web:3 failed") { try await RolloutTests.rollouts(cluster, "web").first?.state == "Failed" }
            try await Self.golden("rollout-status-failed", ["rollout", "status", "web"], flags: flags)
            try await Self.golden("rollout-list", ["rollout", "list", "web"], flags: flags)
            // What an apply would do, changing nothing: a changed template rolls, a replica count applies live.
            try String(contentsOfFile: scratch + "/web3.yaml", encoding: .utf8).replacingOccurrences(of: "replicas: 2", with: "replicas: 3")
                .write(toFile: scratch + "/web3-scaled.yaml", atomically: true, encoding: .utf8)
            try await Self.golden("apply-dry-run", ["apply", "-f", scratch + "/web2.yaml", "--dry-run"], flags: flags)
            try await Self.golden("apply-dry-run-live", ["apply", "-f", scratch + "/web3-scaled.yaml", "--dry-run"], flags: flags)
            try await Self.golden("diff", ["diff", "-f", scratch + "/web2.yaml"], flags: flags)
            try await Self.golden("diff-unchanged", ["diff", "-f", scratch + "/web3.yaml"], flags: flags)
            try await Self.golden("rollout-history-revision", ["rollout", "history", "web", "--revision", "5"], flags: flags)
            try await Self.golden("quota", ["quota", "shop", "--cpu", "4", "--memory", "8Gi"], flags: flags)
            try await Self.golden("get-quotas", ["get", "quotas"], flags: flags)
            try await Self.golden("cordon", ["cordon", "n2"], flags: flags)
            try await Self.golden("uncordon", ["uncordon", "n2"], flags: flags)
            try await Self.golden("keys-generate", ["keys", "generate", "ops", "--out", scratch + "/keys"], flags: [])
            try await Self.golden("apply-bad", ["apply", "-f", scratch + "/bad.yaml"], flags: flags)
            try await Self.golden("describe-missing", ["describe", "app", "nothing"], flags: flags)
            // Contexts, in a home of the test's own: the cluster's endpoints written once, then only a name.
            let home = ["HOME=\(scratch)"]
            try await Self.golden("config-set-context", ["config", "set-context", "lab", "--scheduler", cluster.endpoints.joined(separator: ","),
                                                         "--config", cluster.configEndpoints.joined(separator: ","), "--use"],
                                  flags: [], environment: home)
            try await Self.golden("config-set-context-other", ["config", "set-context", "prod", "--scheduler", "10.0.0.1:7101"],
                                  flags: [], environment: home)
            try await Self.golden("config-get-contexts", ["config", "get-contexts"], flags: [], environment: home)
            try await Self.golden("config-current-context", ["config", "current-context"], flags: [], environment: home)
            try await Self.golden("get-nodes-context", ["--context", "lab", "get", "nodes"], flags: [], environment: home)
            try await Self.golden("config-use-context-missing", ["config", "use-context", "staging"], flags: [], environment: home)
            try await Self.golden("delete", ["delete", "app", "web"], flags: flags)
            try await Self.golden("config-delete", ["config", "delete", "web"], flags: flags)
        }
    }
}
