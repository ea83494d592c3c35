import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// sigmactl's daily habits against a real scheduler: endpoints without `tcp://`, failing fast when nothing
/// listens, misuse exiting 2 with the verb's usage, kind aliases, several manifests at once (files, a folder,
/// standard input), YAML mistakes with their line and column, `version`, and `health` finding the agents.
@Suite struct SigmactlDailyTests {
    static let sigmactl = ServiceProcess.binDirectory + "/sigmactl"

    /// A loopback port nothing listens on: bound, read and closed again.
    static func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw TestSetupError("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func shell(_ command: String) async throws -> (status: Int32, output: String) {
        try await runProgramStatus("/bin/sh", ["-c", command])
    }

    @Test func dailyHabits() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.start()
            defer { agent.stop() }
            let endpoint = cluster.endpoints[0]
            let bare = String(endpoint.dropFirst("tcp://".count))
            let flags = ["--scheduler", bare, "--timeout", "20"]

            // An endpoint without tcp:// is taken; another transport or no port is refused naming the forms.
            let (listed, nodes) = try await runProgramStatus(Self.sigmactl, ["get", "nodes"] + flags)
            #expect(listed == 0 && nodes.contains("n1"), "\(nodes)")
            for wrong in ["udp://127.0.0.1:7101", "127.0.0.1", "127.0.0.1:99999"] {
                let (status, output) = try await runProgramStatus(Self.sigmactl, ["get", "nodes", "--scheduler", wrong])
                #expect(status == 2 && (output.contains("expected tcp://HOST:PORT or HOST:PORT") || output.contains("only tcp:// is supported")),
                        "\(wrong): \(status) \(output)")
            }

            // Nothing listening: it fails at once (UNAVAILABLE, exit 1) instead of waiting out --timeout 20.
            let port = try Self.closedPort()
            let started = ContinuousClock.now
            let (refused, why) = try await runProgramStatus(Self.sigmactl, ["get", "nodes", "--scheduler", "127.0.0.1:\(port)", "--timeout", "20"])
            let took = ContinuousClock.now - started
            #expect(refused == 1 && why.contains("nothing listens at tcp://127.0.0.1:\(port)") && why.contains("is the scheduler running?"), "\(why)")
            #expect(took < .seconds(5), "it waited \(took)")

            // Misuse exits 2 with the verb's usage.
            let (misuse, usage) = try await runProgramStatus(Self.sigmactl, ["get", "nodes", "--no-such-flag"] + flags)
            #expect(misuse == 2 && usage.contains("Usage: sigmactl get"), "\(misuse) \(usage)")
            let (badKind, kinds) = try await runProgramStatus(Self.sigmactl, ["get", "gadgets"] + flags)
            #expect(badKind == 2 && kinds.contains("gadgets"), "\(kinds)")

            // Kinds singular, plural or short, for get and describe alike.
            for kind in ["node", "nodes", "no"] {
                #expect(try await runProgram(Self.sigmactl, ["get", kind] + flags).contains("n1"), "get \(kind)")
            }
            #expect(try await runProgram(Self.sigmactl, ["describe", "nodes", "n1"] + flags).contains("name: n1"))

            // Several manifests: two files, a folder, standard input; an app given twice is refused, nothing applied.
            let folder = NSTemporaryDirectory() + "sigma-daily-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: folder + "/more", withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: folder) }
            func app(_ name: String) -> String { "name: \(name)\nimage: oci:/images/\(name):1\nreplicas: 1\nresources: {request: {cpu: 100m}}\n" }
            try app("a").write(toFile: folder + "/a.yaml", atomically: true, encoding: .utf8)
            try app("b").write(toFile: folder + "/b.yaml", atomically: true, encoding: .utf8)
            try app("c").write(toFile: folder + "/more/c.yml", atomically: true, encoding: .utf8)
            try app("d").write(toFile: folder + "/more/d.yaml", atomically: true, encoding: .utf8)
            try "not an app".write(toFile: folder + "/more/notes.txt", atomically: true, encoding: .utf8)
            let (twice, duplicate) = try await runProgramStatus(
                Self.sigmactl, ["apply", "-f", folder + "/a.yaml", "-f", folder + "/a.yaml", "--no-wait"] + flags)
            #expect(twice == 2 && duplicate.contains("app a is given more than once"), "\(duplicate)")
            #expect(try await cluster.client.call(SchedulerMethods.listApps, .init()).apps.isEmpty)
            let files = try await runProgram(Self.sigmactl, ["apply", "-f", folder + "/a.yaml", "-f", folder + "/b.yaml", "--no-wait"] + flags)
            #expect(files.contains("app/a applied (revision 1)") && files.contains("app/b applied (revision 1)"), "\(files)")
            let inFolder = try await runProgram(Self.sigmactl, ["apply", "-f", folder + "/more", "--no-wait"] + flags)
            #expect(inFolder.contains("app/c applied") && inFolder.contains("app/d applied") && !inFolder.contains("notes"), "\(inFolder)")
            let piped = try await Self.shell("\(Self.sigmactl) get apps a -o yaml \(flags.joined(separator: " ")) | \(Self.sigmactl) apply -f - --no-wait \(flags.joined(separator: " "))")
            #expect(piped.status == 0 && piped.output.contains("app/a unchanged"), "\(piped.output)")
            let apps = try await cluster.client.call(SchedulerMethods.listApps, .init()).apps.map(\.spec.name).sorted()
            #expect(apps == ["a", "b", "c", "d"])

            // Events: an app's with its instances', instances by name; --since, --limit with a notice when cut.
            try await cluster.eventually("a-0 placed") { try await cluster.instance("a")?.node == "n1" }
            let events = try await runProgram(Self.sigmactl, ["get", "events", "--app", "a", "--since", "1h"] + flags)
            #expect(events.contains("app/a ") && events.contains("instance/a-0 ") && !events.contains("instance/b-0"), "\(events)")
            let (cut, notice) = try await runProgramStatus(Self.sigmactl, ["get", "events", "--app", "a", "--limit", "1"] + flags)
            #expect(cut == 0 && notice.contains("(the newest 1 events shown; more matched"), "\(notice)")
            let (later, none) = try await runProgramStatus(Self.sigmactl, ["get", "events", "--since", "0s", "-o", "json"] + flags)
            #expect(later == 0 && none.hasPrefix("["), "\(none)")
            let (badSince, _) = try await runProgramStatus(Self.sigmactl, ["get", "events", "--since", "soon"] + flags)
            #expect(badSince == 2)

            // Labels on apps and -l selectors: apps by theirs, instances by their app's, nodes by theirs and the IDC.
            let labelled = "name: tagged\nimage: oci:/images/tagged:1\nreplicas: 1\nlabels: {tier: web, env: prod}\nresources: {request: {cpu: 100m}}\n"
            try labelled.write(toFile: folder + "/tagged.yaml", atomically: true, encoding: .utf8)
            #expect(try await runProgram(Self.sigmactl, ["apply", "-f", folder + "/tagged.yaml", "--no-wait"] + flags).contains("app/tagged applied"))
            try await cluster.eventually("tagged-0 placed") { try await cluster.instance("tagged")?.node == "n1" }
            func names(_ arguments: [String]) async throws -> [String] {
                try await runProgram(Self.sigmactl, arguments + flags).split(separator: "\n").dropFirst().map { String($0.split(separator: " ")[0]) }
            }
            #expect(try await names(["get", "apps", "-l", "tier=web"]) == ["tagged"])
            #expect(try await names(["get", "apps", "-l", "tier!=web"]) == ["a", "b", "c", "d"])
            #expect(try await names(["get", "apps", "--selector", "env in (prod,stage),tier"]) == ["tagged"])
            #expect(try await names(["get", "instances", "-l", "tier=web"]) == ["tagged-0"])
            #expect(try await names(["get", "nodes", "-l", "idc=idc-a"]) == ["n1"])
            #expect(try await names(["get", "nodes", "-l", "idc=idc-z"]).isEmpty)
            let (badSelector, selectorWhy) = try await runProgramStatus(Self.sigmactl, ["get", "apps", "-l", "tier in (web"] + flags)
            #expect(badSelector == 2 && selectorWhy.contains("-l tier in (web"), "\(selectorWhy)")
            let (badLabel, labelWhy) = try await Self.shell(
                "printf 'name: tagged\\nimage: oci:/images/tagged:1\\nlabels: {\"bad key\": x}\\n' | \(Self.sigmactl) apply -f - \(flags.joined(separator: " "))")
            #expect(badLabel == 2 && labelWhy.contains("labels.bad key: not a label key"), "\(labelWhy)")
            // A change of labels alone restarts nothing.
            let generation = try #require(try await cluster.instance("tagged")).generation
            try labelled.replacingOccurrences(of: "env: prod", with: "env: stage").write(toFile: folder + "/tagged.yaml", atomically: true, encoding: .utf8)
            #expect(try await runProgram(Self.sigmactl, ["apply", "-f", folder + "/tagged.yaml", "--dry-run"] + flags).contains("would apply live"))
            #expect(try await runProgram(Self.sigmactl, ["apply", "-f", folder + "/tagged.yaml", "--no-wait"] + flags).contains("applied (revision 2)"))
            #expect(try await names(["get", "apps", "-l", "env=stage"]) == ["tagged"])
            #expect(try await cluster.instance("tagged")?.generation == generation)

            // --watch: the listing once, then only what changed: a new instance, then the same one gone.
            let watched = folder + "/watch.txt"
            _ = try await Self.shell("\(Self.sigmactl) get instances --app a -w --watch-interval 0.2 --watch-timeout 60 "
                                     + "\(flags.joined(separator: " ")) > \(watched) 2>&1 & echo $! > \(watched).pid")
            let watcher = try #require(pid_t(try String(contentsOfFile: watched + ".pid", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)), "the watch's pid")
            defer { _ = kill(watcher, SIGTERM) }
            func watchedText() -> String { (try? String(contentsOfFile: watched, encoding: .utf8)) ?? "" }
            try await cluster.eventually("the watch lists a-0") { watchedText().contains("a-0 ") }
            var scale = Sigma_V1_ScaleAppRequest()
            scale.name = "a"
            scale.replicas = 2
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            try await cluster.eventually("the watch shows a-1 running", within: .seconds(25)) {
                watchedText().split(separator: "\n").contains { $0.hasPrefix("a-1 ") && $0.contains("Running") }
            }
            scale.replicas = 1
            _ = try await cluster.client.call(SchedulerMethods.scaleApp, scale)
            try await cluster.eventually("the watch shows a-1 gone", within: .seconds(25)) {
                watchedText().split(separator: "\n").contains { $0.hasPrefix("a-1 ") && $0.hasSuffix("(gone)") }
            }
            let lines = watchedText().split(separator: "\n")
            #expect(lines.filter { $0.hasPrefix("NAME ") }.count == 1, "one header: \(lines)")
            #expect(lines.filter { $0.hasPrefix("a-0 ") }.count < 5, "a-0 shown only when it changed: \(lines)")
            let (watchJSON, _) = try await runProgramStatus(Self.sigmactl, ["get", "apps", "-w", "-o", "json"] + flags)
            #expect(watchJSON == 2)

            // Completion of names, as the generated shell scripts ask for it: apps, instances, a kind's names.
            let complete = "SIGMA_SCHEDULER=\(bare) \(Self.sigmactl) ---completion"
            let completed = try await Self.shell("\(complete) restart -- positional@0 1 1 sigmactl restart a")
            #expect(completed.output.split(separator: "\n") == ["a-0"], "\(completed.output)")
            let appNames = try await Self.shell("\(complete) get -- positional@1 3 0 sigmactl get apps ''")
            #expect(appNames.output.split(separator: "\n") == ["a", "b", "c", "d", "tagged"], "\(appNames.output)")
            let ofNodes = try await Self.shell("\(complete) describe -- positional@1 3 1 sigmactl describe node n")
            #expect(ofNodes.output.split(separator: "\n") == ["n1"], "\(ofNodes.output)")
            #expect(try await Self.shell("\(complete) scale -- positional@0 1 1 sigmactl scale t").output.split(separator: "\n") == ["tagged"])

            // top: what instances use beside their requests and limits, and the nodes' sums.
            agent.setUsage("a", cpuMillis: 50, memoryBytes: 64 << 20)
            try await cluster.eventually("a-0's usage reported") { try await cluster.instance("a")?.usage.cpuMillis == 50 }
            let top = try await runProgram(Self.sigmactl, ["top", "instances", "--app", "a"] + flags)
            #expect(top.contains("NAME") && top.contains("MEM% OF LIMIT"), "\(top)")
            let row = top.split(separator: "\n").first { $0.hasPrefix("a-0 ") }.map { $0.split(separator: " ").map(String.init) }
            #expect(row == ["a-0", "n1", "50m", "100m", "none", "64Mi", "0", "none", "-"], "\(top)")
            let topNodes = try await runProgram(Self.sigmactl, ["top", "nodes", "--sort-by", "cpu"] + flags)
            #expect(topNodes.split(separator: "\n").contains { $0.hasPrefix("n1 ") }, "\(topNodes)")
            let (badTop, _) = try await runProgramStatus(Self.sigmactl, ["top", "apps"] + flags)
            #expect(badTop == 2)

            // A YAML mistake: exit 2, the file, the line and column.
            try "name: e\nimage: host\n  replicas: 3\n".write(toFile: folder + "/e.yaml", atomically: true, encoding: .utf8)
            let (mistake, located) = try await runProgramStatus(Self.sigmactl, ["apply", "-f", folder + "/e.yaml"] + flags)
            #expect(mistake == 2 && located.contains("\(folder)/e.yaml:") && located.contains("(yaml): line 3, column 11: "), "\(located)")

            // Contexts: one per cluster in ~/.sigma/config; use-context picks one, --context or SIGMA_CONTEXT one call's.
            let home = folder + "/home"
            let ctl = "HOME='\(home)' \(Self.sigmactl)"
            for (name, at) in [("good", bare), ("gone", "127.0.0.1:\(port)")] {
                let (written, said) = try await Self.shell("\(ctl) config set-context \(name) --scheduler \(at)")
                #expect(written == 0 && said.contains("context \(name) written"), "\(said)")
            }
            let (used, _) = try await Self.shell("\(ctl) config use-context gone")
            #expect(used == 0)
            let (toGone, goneWhy) = try await Self.shell("\(ctl) get nodes --timeout 20")
            #expect(toGone == 1 && goneWhy.contains("nothing listens at tcp://127.0.0.1:\(port)"), "\(goneWhy)")
            #expect(try await Self.shell("\(ctl) --context good get nodes").output.contains("n1"))
            #expect(try await Self.shell("\(ctl) get nodes --context good").output.contains("n1"))
            #expect(try await Self.shell("SIGMA_CONTEXT=good \(ctl) get nodes").output.contains("n1"))
            _ = try await Self.shell("\(ctl) config use-context good")
            #expect(try await Self.shell("\(ctl) get nodes").output.contains("n1"))
            let contexts = try await Self.shell("\(ctl) config get-contexts").output
            #expect(contexts.split(separator: "\n").contains { $0.hasPrefix("*") && $0.contains("good") && $0.contains(bare) }, "\(contexts)")
            #expect(try await Self.shell("\(ctl) config current-context").output == "good\n")
            let (unknown, unknownWhy) = try await Self.shell("\(ctl) get nodes --context nope")
            #expect(unknown == 2 && unknownWhy.contains("no context \"nope\"") && unknownWhy.contains("contexts: good, gone"), "\(unknownWhy)")
            let (badUse, _) = try await Self.shell("\(ctl) config use-context nope")
            #expect(badUse == 2)

            // version: the client's and each service's.
            let version = try await runProgram(Self.sigmactl, ["version", "--client"])
            #expect(version.hasPrefix("sigmactl 0."), "\(version)")

            // health: the agents come from the registered nodes (one here, listening nowhere).
            var register = Sigma_V1_RegisterNodeRequest()
            register.name = "n9"
            register.hostIp = "198.18.0.9"
            register.capacity.cpuMillis = 1000
            register.capacity.memoryBytes = 1 << 30
            register.agentEndpoint = "tcp://127.0.0.1:\(port)"
            _ = try await cluster.client.call(SchedulerMethods.registerNode, register)
            let (unhealthy, table) = try await runProgramStatus(Self.sigmactl, ["health"] + flags)
            #expect(unhealthy == 1 && table.contains("agent n9") && table.contains("tcp://127.0.0.1:\(port)"), "\(table)")
            #expect(!table.contains("127.0.0.1:7103"), "not the default agent endpoint: \(table)")
        }
    }
}
