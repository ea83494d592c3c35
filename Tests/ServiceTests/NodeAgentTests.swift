import Foundation
import NodeRuntime
import Protocol
import RPC
import Testing
import TestSupport

/// sigma-agent against a real scheduler and allocator: real runc, cgroups, namespaces and a bridge.
@Suite(.serialized) struct NodeAgentTests {
    /// A spec that runs on the host's binaries and stays up until SIGTERM.
    static func service(_ spec: inout Sigma_V1_AppSpec, script: String) {
        spec.image = "host"
        spec.command = ["/bin/sh", "-c", script]
    }

    /// A second node (a simulated agent) that registers and, once the first is Broken, runs `original` there
    /// with the same IP. The caller stops it.
    static func standbyTakesOver(_ cluster: SchedulerCluster, _ original: Sigma_V1_Instance) async throws -> SimulatedAgent {
        let standby = SimulatedAgent("standby-\(UUID().uuidString.prefix(4).lowercased())", client: cluster.client)
        try await standby.register(cpu: 4000)
        standby.start()
        do {
            try await cluster.eventually("moved to the standby", within: .seconds(30)) {
                let now = try await cluster.instance(original.app)
                return now?.node == standby.name && now?.state == "Running" && now?.ip == original.ip
            }
        } catch {
            standby.stop()
            throw error
        }
        return standby
    }

    static let stayUp = "trap 'exit 0' TERM; while :; do sleep 0.05; done"

    @Test func runsInstancesWithTheirEnvironmentLimitsAndNetwork() async throws {
        try await SchedulerCluster.forAgents { cluster in
            try await RealAgent.with(cluster) { agent in
                try await cluster.eventually("the node registered with its real capacity") {
                    guard let node = try? await cluster.node(agent.name) else { return false }
                    return node.capacity.cpuMillis == Int64(ProcessInfo.processInfo.activeProcessorCount) * 1000
                        && node.capacity.memoryBytes > 1 << 30 && node.diskBytes > 0 && node.agentEndpoint == agent.endpoint
                }
                try await cluster.apply("web", replicas: 2, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "env | grep ^SIGMA_ | sort; ip -4 addr show eth0; \(Self.stayUp)")
                    spec.resources.limit.cpuMillis = 500
                    spec.resources.limit.memoryBytes = 128 << 20
                    spec.network = "host"
                    var port = Sigma_V1_ContainerPort()
                    port.name = "http"
                    port.containerPort = 8080
                    spec.ports = [port]
                }
                try await cluster.eventually("both instances Running") { try await cluster.allRunning("web", 2) }
                let instance = try #require(try await cluster.instance("web", ordinal: 1))
                // The script prints its environment, then its addresses: wait for the last of it.
                try await cluster.eventually("the environment and the addresses in the log") {
                    let log = agent.log(of: instance.id)
                    return log.contains("SIGMA_APP=web") && log.contains("inet \(instance.ip)/24")
                }
                let log = agent.log(of: instance.id)
                #expect(log.contains("SIGMA_INSTANCE=\(instance.id)"))
                #expect(log.contains("SIGMA_ORDINAL=1"))
                #expect(log.contains("SIGMA_INSTANCE_IP=\(instance.ip)"))
                #expect(log.contains("SIGMA_HOST_IP=127.0.0.1"))
                let hostPort = try #require(instance.hostPorts["http"])
                #expect(log.contains("SIGMA_HOST_PORT=\(hostPort)"))
                #expect(log.contains("SIGMA_HOST_PORT_HTTP=\(hostPort)"))
                #expect(log.contains("SIGMA_DISCOVERY="))
                #expect(log.contains("inet \(instance.ip)/24"))
                #expect(agent.cgroupFile(instance.id, "cpu", "cpu.cfs_quota_us") == "50000")
                #expect(agent.cgroupFile(instance.id, "memory", "memory.limit_in_bytes") == "\(128 << 20)")
                #expect(agent.cgroupFile(instance.id, "memory", "memory.swappiness") == "0")
                // The applied limits come back through heartbeats.
                try await cluster.eventually("applied limits reported") {
                    try await cluster.instance("web", ordinal: 1)?.appliedLimit.cpuMillis == 500
                }

                // A live change: the same process, new cgroup values.
                let pid = try #require(try await agent.localInstances().first { $0.instanceID == instance.id }?.pid)
                var update = Sigma_V1_UpdateResourcesRequest()
                update.app = "web"
                update.resources.request.cpuMillis = 100
                update.resources.request.memoryBytes = 16 << 20
                update.resources.limit.cpuMillis = 1500
                update.resources.limit.memoryBytes = 256 << 20
                _ = try await cluster.client.call(SchedulerMethods.updateResources, update)
                // The agent writes the CPU quota first and the memory limit after it: wait for both.
                try await cluster.eventually("the new quota and memory limit in the cgroup") {
                    agent.cgroupFile(instance.id, "cpu", "cpu.cfs_quota_us") == "150000"
                        && agent.cgroupFile(instance.id, "memory", "memory.limit_in_bytes") == "\(256 << 20)"
                }
                #expect(try await agent.localInstances().first { $0.instanceID == instance.id }?.pid == pid)
                try await cluster.eventually("the new applied limit reported") {
                    try await cluster.instance("web", ordinal: 1)?.appliedLimit.cpuMillis == 1500
                }

                // Delete: the instances stop, and their cgroups and namespaces go.
                var delete = Sigma_V1_AppRequest()
                delete.name = "web"
                _ = try await cluster.client.call(SchedulerMethods.deleteApp, delete)
                try await cluster.eventually("the instances gone") { try await cluster.instances("web").isEmpty }
                try await cluster.eventually("nothing left on the node") { try await agent.localInstances().isEmpty }
                #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/\(agent.cgroupParent)/\(instance.id)"))
            }
        }
    }

    @Test func endingsArePreciseAndRestartPoliciesHold() async throws {
        try await SchedulerCluster.forAgents { cluster in
            try await RealAgent.with(cluster) { agent in
                try await cluster.apply("job", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "echo starting; echo working; exit 3")
                    spec.restartPolicy = "Never"
                }
                try await cluster.apply("hog", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    spec.image = "host"
                    spec.command = ["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"]
                    spec.resources.limit.memoryBytes = 32 << 20
                    spec.restartPolicy = "Never"
                }
                try await cluster.apply("flaky", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "echo run; sleep 0.2; exit 1")
                    spec.restartPolicy = "Always"
                }
                try await cluster.eventually("the job Failed with its exit code") {
                    let job = try await cluster.instance("job")
                    return job?.state == "Failed" && job?.exitCode == 3 && job?.reason == "exit 3"
                }
                try await cluster.eventually("the hog OOMKilled") {
                    let hog = try await cluster.instance("hog")
                    return hog?.state == "OOMKilled" && hog?.reason == "OOMKilled" && hog?.exitCode == 137
                }
                try await cluster.eventually("the flaky one restarted: Running again or waiting to (BackOff)") {
                    let flaky = try await cluster.instance("flaky")
                    return ["Running", "BackOff"].contains(flaky?.state) && (flaky?.reason.contains("exit 1") ?? false)
                        && (flaky?.restarts ?? 0) >= 1
                }
                // sigmactl logs finds the node's agent through the scheduler; -f ends when the instance has ended.
                let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
                let scheduler = ["--scheduler", cluster.endpoints.joined(separator: ",")]
                #expect(try await runProgram(sigmactl, ["logs", "job-0"] + scheduler) == "starting\nworking")
                #expect(try await runProgram(sigmactl, ["logs", "-f", "job-0"] + scheduler) == "starting\nworking")
                #expect(try await runProgram(sigmactl, ["logs", "--tail", "1", "job-0"] + scheduler) == "working", "lines, not bytes")
                #expect(try await runProgram(sigmactl, ["logs", "--tail", "5", "job-0"] + scheduler) == "starting\nworking")
                #expect(try await runProgram(sigmactl, ["logs", "--tail", "1", "-f", "job-0"] + scheduler) == "working")
                #expect(try await runProgram(sigmactl, ["logs", "--limit-bytes", "4", "job-0"] + scheduler) == "ing")
                // --since: a duration back, or an RFC 3339 time (nothing was written an hour from now).
                #expect(try await runProgram(sigmactl, ["logs", "--since", "1h", "job-0"] + scheduler) == "starting\nworking")
                let later = ISO8601DateFormatter().string(from: Date().addingTimeInterval(3600))
                #expect(try await runProgram(sigmactl, ["logs", "--since", later, "job-0"] + scheduler) == "")
                #expect(try await runProgram(sigmactl, ["logs", "--since", "1h", "--tail", "1", "job-0"] + scheduler) == "working")
                // -p: the run before the current one; a job that ran once has none.
                let once = try await runProgramStatus(sigmactl, ["logs", "-p", "job-0"] + scheduler)
                #expect(once.status != 0 && once.output.contains("has no earlier run's log"), "\(once)")
                try await cluster.eventually("the flaky one ran three times") { (try await cluster.instance("flaky")?.restarts ?? 0) >= 2 }
                #expect(try await runProgram(sigmactl, ["logs", "-p", "flaky-0"] + scheduler) == "run")
                let flaky = try #require(try await agent.localInstances().first { $0.app == "flaky" })
                #expect(flaky.restarts >= 1)
                // A missing image fails the start with the reason; with restart policy Never that is final, and
                // the agent carries on.
                try await cluster.apply("noimage", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    spec.image = "oci:/nonexistent/sigma-image:1"
                    spec.command = ["/bin/true"]
                    spec.restartPolicy = "Never"
                }
                try await cluster.eventually("the bad image's instance Failed") {
                    let instance = try await cluster.instance("noimage")
                    return instance?.state == "Failed" && (instance?.reason.contains("not found") ?? false)
                }
                #expect(try await agent.client().call(CommonMethods.health, .init()).service == "agent")
            }
        }
    }

    @Test func aRestartedAgentReAdoptsItsInstances() async throws {
        try await SchedulerCluster.forAgents { cluster in
            try await RealAgent.with(cluster) { agent in
                try await cluster.apply("steady", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "while :; do echo tick; sleep 0.05; done")
                }
                try await cluster.eventually("Running") { try await cluster.allRunning("steady", 1) }
                let before = try #require(try await agent.localInstances().first)
                // Its token: in the environment and in /.sigma/token (its own only); the database holds a hash.
                let tokenFile = Self.rootfs(agent, before.instanceID) + "/.sigma/token"
                let issued = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(issued.count == 64)
                var facts = stat()
                #expect(lstat(tokenFile, &facts) == 0 && facts.st_mode & 0o777 == 0o400)
                func valid(_ token: String) async throws -> Bool {
                    try await !cluster.store.query(
                        "SELECT 1 FROM instances WHERE token_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')", token).isEmpty
                }
                #expect(try await valid(issued))
                await agent.crash()
                try await agent.restart()
                try await cluster.eventually("the instance taken over") { try await !agent.localInstances().isEmpty }
                // A fresh token in the file, the one before revoked.
                try await cluster.eventually("a fresh token") {
                    let now = (try? String(contentsOfFile: tokenFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
                    return now.count == 64 && now != issued
                }
                let renewed = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(try await valid(renewed))
                #expect(try await !valid(issued))
                let after = try #require(try await agent.localInstances().first)
                #expect(after.instanceID == before.instanceID)
                #expect(after.pid == before.pid)
                #expect(after.state == "Running")
                // Its log kept being written while no agent ran.
                let length = agent.log(of: after.instanceID).count
                try await cluster.eventually("more log lines") { agent.log(of: after.instanceID).count > length }
                #expect(try await cluster.allRunning("steady", 1))
            }
        }
    }

    @Test func aNodeBackFromBrokenFencesFirst() async throws {
        try await SchedulerCluster.forAgents(brokenAfter: 3) { cluster in
            try await RealAgent.with(cluster, extra: ["--label", "role=first"]) { agent in
                try await cluster.apply("single", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: Self.stayUp)
                }
                try await cluster.eventually("Running on the agent's node") {
                    try await cluster.instance("single")?.state == "Running"
                }
                let original = try #require(try await cluster.instance("single"))
                #expect(original.node == agent.name)
                // The agent goes silent; a second node takes the instance over (same IP, new generation).
                await agent.crash()
                let standby = try await Self.standbyTakesOver(cluster, original)
                defer { standby.stop() }
                // Back: the agent must stop its stale copy before anything else.
                try await agent.restart()
                try await cluster.eventually("the stale copy stopped") { try await agent.localInstances().isEmpty }
                try await cluster.eventually("the node Ready again") { try await cluster.node(agent.name).health == "Ready" }
                #expect(try await cluster.instance("single")?.node == standby.name)
            }
        }
    }

    @Test func aPartitionedAgentFencesWhenItComesBack() async throws {
        try await SchedulerCluster.forAgents(brokenAfter: 1.5) { cluster in
            try await RealAgent.with(cluster) { agent in
                try await cluster.apply("single", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: Self.stayUp)
                }
                try await cluster.eventually("Running") { try await cluster.instance("single")?.state == "Running" }
                let original = try #require(try await cluster.instance("single"))
                let epochBefore = try await cluster.node(agent.name).epoch
                // The agent is frozen (a partition: it keeps its state and its instance keeps running).
                kill(agent.process.pid, SIGSTOP)
                var resumed = false
                defer { if !resumed { kill(agent.process.pid, SIGCONT) } }
                let standby = try await Self.standbyTakesOver(cluster, original)
                defer { standby.stop() }
                let epochAfter = try await cluster.node(agent.name).epoch
                #expect(epochAfter > epochBefore)
                kill(agent.process.pid, SIGCONT)
                resumed = true
                // Its next heartbeat carries the old epoch: it is told to fence, stops the copy, takes the new epoch.
                try await cluster.eventually("the stale copy stopped") { try await agent.localInstances().isEmpty }
                try await cluster.eventually("the node Ready again at the new epoch") {
                    try await cluster.node(agent.name).health == "Ready"
                }
                let stored = try String(contentsOfFile: agent.state + "/epoch", encoding: .utf8)
                #expect(stored.trimmingCharacters(in: .whitespacesAndNewlines) == "\(epochAfter)")
                // The instance stays on the standby, unless the standby itself turned Broken meanwhile (a loaded
                // machine stalled its 150 ms heartbeats past this test's 1.5 s): then moving on is right.
                let standbyBroke = try await cluster.events("node", standby.name).contains { $0.reason == "Broken" }
                #expect(try await cluster.instance("single")?.node == standby.name || standbyBroke)
            }
        }
    }

    @Test func anSSDIsMountedAtItsPath() async throws {
        let ssd = NSTemporaryDirectory() + "sigma-ssd-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: ssd, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: ssd) }
        try await SchedulerCluster.forAgents { cluster in
            try await RealAgent.with(cluster, extra: ["--ssd", "\(ssd):10Gi:test-nvme"]) { agent in
                try await cluster.apply("db", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "echo stored > /var/lib/db/marker; \(Self.stayUp)")
                    spec.ssd.count = 1
                    spec.ssd.minBytes = 1 << 30
                    spec.ssd.mountPath = "/var/lib/db"
                }
                try await cluster.eventually("the marker on the SSD") {
                    FileManager.default.fileExists(atPath: ssd + "/marker")
                }
                #expect(try await cluster.instance("db")?.ssdPaths == [ssd])
            }
        }
    }

    /// Isolation I, item 7: an SSD keeps its instance's data across that instance's restarts, and is wiped
    /// before another app's instance gets it (the probe: a "fresh" SSD showed the previous app's database files).
    @Test func anSSDIsWipedBeforeAnotherAppGetsIt() async throws {
        let ssd = NSTemporaryDirectory() + "sigma-ssd-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: ssd, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: ssd) }
        let script = "if [ -e /data/db/table ]; then echo FOUND $(cat /data/db/table); else echo EMPTY; fi; "
            + "mkdir -p /data/db && echo $SIGMA_APP > /data/db/table; ln -sf /etc/passwd /data/link; \(Self.stayUp)"
        try await SchedulerCluster.forAgents { cluster in
            try await RealAgent.with(cluster, extra: ["--ssd", "\(ssd):10Gi:test-nvme"]) { agent in
                func run(_ app: String) async throws -> String {
                    try await cluster.apply(app, replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                        Self.service(&spec, script: script)
                        spec.ssd.count = 1
                        spec.ssd.mountPath = "/data"
                    }
                    try await cluster.eventually("\(app) running") { try await cluster.instance(app)?.state == "Running" }
                    return try #require(try await cluster.instance(app)).id
                }
                let first = try await run("mariadb")
                try await cluster.eventually("its table written") { agent.log(of: first).contains("EMPTY") && FileManager.default.fileExists(atPath: ssd + "/db/table") }
                // Its own restart finds its data.
                let pid = try #require(try await agent.localInstances().first?.pid)
                kill(pid_t(pid), SIGKILL)
                try await cluster.eventually("restarted with its data") { agent.log(of: first).contains("FOUND mariadb") }
                var delete = Sigma_V1_AppRequest()
                delete.name = "mariadb"
                _ = try await cluster.client.call(SchedulerMethods.deleteApp, delete)
                try await cluster.eventually("mariadb gone") { try await agent.localInstances().isEmpty }
                // Another app's instance on the same SSD: nothing of the previous one, and the host's file
                // behind the previous tenant's link untouched.
                let second = try await run("other")
                try await cluster.eventually("other's first output") { agent.log(of: second).contains("EMPTY") || agent.log(of: second).contains("FOUND") }
                #expect(agent.log(of: second).contains("EMPTY"))
                #expect(!agent.log(of: second).contains("FOUND"))
                #expect(FileManager.default.fileExists(atPath: "/etc/passwd"))
            }
        }
    }

    /// The instance's own root folder (host mode: writable, empty but for what it made), seen from the node.
    static func rootfs(_ agent: RealAgent, _ instance: String) -> String { "\(agent.state)/instances/\(instance)/rootfs" }

    @Test func livenessRestartsReadinessGatesOrderedStartAndGraceIsTheApps() async throws {
        try await SchedulerCluster.forAgents { cluster in
            try await RealAgent.with(cluster) { agent in
                func lifecycle(_ spec: inout Sigma_V1_AppSpec, _ file: String, liveness: Bool) {
                    var probe = Sigma_V1_Probe()
                    probe.exec = ["/bin/test", "-f", file]
                    probe.periodSeconds = 1
                    probe.failureThreshold = 1
                    if liveness { spec.lifecycle.liveness = probe } else { spec.lifecycle.readiness = probe }
                    spec.lifecycle.stopGracePeriodSeconds = 1
                }
                // Ordered-ready, with a readiness probe on a file the test creates: ordinal 1 waits for ordinal 0 to be ready.
                try await cluster.apply("ordered", replicas: 2, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "sleep 1000")  // ignores SIGTERM (first process): the grace decides
                    spec.startup = "ordered-ready"
                    lifecycle(&spec, "/ready", liveness: false)
                }
                try await cluster.eventually("ordinal 0 Running, not ready, and saying why") {
                    let first = try await cluster.instance("ordered", ordinal: 0)
                    return first?.state == "Running" && first?.ready == false && first?.reason.hasPrefix("not ready: ") == true
                }
                let first = try #require(try await cluster.instance("ordered", ordinal: 0))
                #expect(try await agent.localInstances().filter { $0.app == "ordered" }.count == 1)
                #expect(try await cluster.instance("ordered", ordinal: 1)?.state == "Scheduled")
                FileManager.default.createFile(atPath: Self.rootfs(agent, first.id) + "/ready", contents: nil)
                try await cluster.eventually("ordinal 0 ready, then ordinal 1 started") {
                    let ready = try await cluster.instance("ordered", ordinal: 0)?.ready == true
                    let next = try await cluster.instance("ordered", ordinal: 1)?.state
                    return ready && next == "Running"
                }
                let second = try #require(try await cluster.instance("ordered", ordinal: 1))
                #expect(second.ready == false)
                // Ready now: the complaint is gone.
                #expect(try await cluster.instance("ordered", ordinal: 0)?.reason == "")

                // Liveness: removing the file fails the probe; the instance is stopped and started again.
                try await cluster.apply("live", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "touch /alive; \(Self.stayUp)")
                    lifecycle(&spec, "/alive", liveness: true)
                }
                try await cluster.eventually("live Running") { try await cluster.instance("live")?.state == "Running" }
                let live = try #require(try await cluster.instance("live"))
                let pid = try #require(try await agent.localInstances().first { $0.app == "live" }?.pid)
                try await cluster.eventually("the marker written") { FileManager.default.fileExists(atPath: Self.rootfs(agent, live.id) + "/alive") }
                try FileManager.default.removeItem(atPath: Self.rootfs(agent, live.id) + "/alive")
                try await cluster.eventually("restarted after the failed probe") {
                    guard let local = try await agent.localInstances().first(where: { $0.app == "live" }) else { return false }
                    return local.restarts >= 1 && local.pid != pid && local.pid != 0
                }
                try await cluster.eventually("the reason reported") {
                    try await cluster.instance("live")?.reason.contains("liveness probe failed") == true
                }

                // Grace: this app needs 1.5 s after SIGTERM, its grace is 1 s: it ends by SIGKILL (under the agent's
                // default of 2 s it would have exited 0).
                try await cluster.apply("slow", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "trap 'sleep 1.5; exit 0' TERM; while :; do sleep 0.05; done")
                    spec.lifecycle.stopGracePeriodSeconds = 1
                }
                try await cluster.eventually("slow Running") { try await cluster.instance("slow")?.state == "Running" }
                let slow = try #require(try await cluster.instance("slow"))
                var delete = Sigma_V1_AppRequest()
                delete.name = "slow"
                _ = try await cluster.client.call(SchedulerMethods.deleteApp, delete)
                try await cluster.eventually("its end reported") {
                    try await cluster.events("instance", slow.id).contains { $0.reason == "Terminated" }
                }
                let end = try #require(try await cluster.events("instance", slow.id).first { $0.reason == "Terminated" })
                #expect(end.message.contains("signal SIGKILL"), "\(end.message)")
            }
        }
    }

    @Test func selfFencingAppsStopWhenTheControlPlaneIsGone() async throws {
        try await SchedulerCluster.forAgents(brokenAfter: 1.5) { cluster in
            try await RealAgent.with(cluster) { agent in
                try await cluster.apply("fenced", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: Self.stayUp)
                    spec.lifecycle.selfFencing = true
                    spec.lifecycle.stopGracePeriodSeconds = 1
                }
                try await cluster.apply("plain", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: Self.stayUp)
                }
                try await cluster.eventually("both Running") {
                    let fenced = try await cluster.allRunning("fenced", 1)
                    let plain = try await cluster.allRunning("plain", 1)
                    return fenced && plain
                }
                let plain = try #require(try await agent.localInstances().first { $0.app == "plain" })
                // The control plane goes silent (frozen, not gone: nothing declares the node Broken meanwhile).
                let scheduler = cluster.processes[0].pid
                kill(scheduler, SIGSTOP)
                defer { kill(scheduler, SIGCONT) }
                try await cluster.eventually("the self-fencing instance stopped") {
                    try await agent.localInstances().first { $0.app == "fenced" }?.reason.hasPrefix("self-fenced") == true
                }
                let still = try #require(try await agent.localInstances().first { $0.app == "plain" })
                #expect(still.pid == plain.pid)
                #expect(still.state == "Running")
                kill(scheduler, SIGCONT)
                try await cluster.eventually("the control plane back: it runs again", within: .seconds(30)) {
                    let fenced = try await agent.localInstances().first { $0.app == "fenced" }
                    return fenced?.state == "Running" && fenced?.reason.hasPrefix("self-fenced") == false
                }
            }
        }
    }

    @Test func configIsRenderedWrittenAndPushedInPlace() async throws {
        try await SchedulerCluster.forAgents(configs: 1) { cluster in
            try await RealAgent.with(cluster, extra: ["--config", cluster.configEndpoints[0]]) { agent in
                let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
                func publish(_ content: String) async throws {
                    var request = Sigma_V1_PublishConfigRequest()
                    request.app = "cfg"
                    var file = Sigma_V1_ConfigFile()
                    file.path = "/app/app.conf"
                    file.content = Data(content.utf8)
                    request.files = [file]
                    request.script = "echo started by the script; echo CV=$SIGMA_CONFIG_VERSION; cat /app/app.conf; "
                        + "trap 'cat /app/app.conf' HUP; trap 'exit 0' TERM; while :; do sleep 0.05; done"
                    request.author = "test"
                    _ = try await config.call(ConfigMethods.publish, request)
                }
                try await publish("ordinal={{instance.ordinal}} version={{config.version}}\n")
                // No command: the ConfigCenter's startup script runs; a change comes with SIGHUP.
                try await cluster.apply("cfg", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    spec.image = "host"
                    spec.config.app = "cfg"
                    spec.lifecycle.reload.signal = "SIGHUP"
                    spec.lifecycle.stopGracePeriodSeconds = 1
                }
                try await cluster.eventually("Running") { try await cluster.instance("cfg")?.state == "Running" }
                let instance = try #require(try await cluster.instance("cfg"))
                try await cluster.eventually("the script's output") { agent.log(of: instance.id).contains("ordinal=0 version=1") }
                #expect(agent.log(of: instance.id).contains("started by the script"))
                #expect(agent.log(of: instance.id).contains("CV=1"))
                let pid = try #require(try await agent.localInstances().first?.pid)
                try await publish("ordinal={{instance.ordinal}} version={{config.version}} changed\n")
                try await cluster.eventually("the change written in place and announced by SIGHUP") {
                    agent.log(of: instance.id).contains("ordinal=0 version=2 changed")
                }
                let local = try #require(try await agent.localInstances().first)
                #expect(local.pid == pid)
                #expect(local.configVersion == 2)
                #expect(try String(contentsOfFile: Self.rootfs(agent, instance.id) + "/app/app.conf", encoding: .utf8)
                    == "ordinal=0 version=2 changed\n")
            }
        }
    }

    /// Isolation I, item 6: what an instance is given stays its own on the node. Its folder (bundle with
    /// SIGMA_TOKEN, config, log) is 0700, the bundle 0600, a secret config file 0400 and a plain one 0644; a
    /// local user other than root reads none of them.
    @Test func anInstancesSecretsOnDiskAreItsOwn() async throws {
        guard let setpriv = Subprocess.find("setpriv") else { throw TestSetupError("setpriv is not installed (util-linux)") }
        try await SchedulerCluster.forAgents(configs: 1) { cluster in
            try await RealAgent.with(cluster, extra: ["--config", cluster.configEndpoints[0]]) { agent in
                let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
                var request = Sigma_V1_PublishConfigRequest()
                request.app = "vault"
                request.files = [("/conf/password", true), ("/conf/app.conf", false)].map { path, secret in
                    var file = Sigma_V1_ConfigFile()
                    file.path = path
                    file.content = Data("s3cret\n".utf8)
                    file.secret = secret
                    return file
                }
                request.author = "test"
                _ = try await config.call(ConfigMethods.publish, request)
                try await cluster.apply("vault", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    spec.image = "host"
                    spec.command = ["/bin/sleep", "1000"]
                    spec.config.app = "vault"
                }
                try await cluster.eventually("Running") { try await cluster.instance("vault")?.state == "Running" }
                let instance = try #require(try await cluster.instance("vault"))
                let rootfs = Self.rootfs(agent, instance.id)
                let folder = (rootfs as NSString).deletingLastPathComponent
                func mode(_ path: String) throws -> Int {
                    var info = stat()
                    guard lstat(path, &info) == 0 else { throw TestSetupError("\(path): \(String(cString: strerror(errno)))") }
                    return Int(info.st_mode & 0o7777)
                }
                #expect(try mode(folder) == 0o700)
                #expect(try mode("\(agent.state)/instances") == 0o700)
                #expect(try mode(folder + "/config.json") == 0o600)
                #expect(try String(contentsOfFile: folder + "/config.json", encoding: .utf8).contains("SIGMA_TOKEN="))
                #expect(try mode(rootfs + "/conf/password") == 0o400)
                #expect(try mode(rootfs + "/conf/app.conf") == 0o644)
                for path in [folder + "/config.json", folder + "/console.log", rootfs + "/conf/password"] {
                    let read = try await Subprocess.run(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/cat", path])
                    #expect(!read.succeeded, "nobody read \(path)")
                    #expect(!read.output.contains("s3cret") && !read.output.contains("SIGMA_TOKEN"))
                }
            }
        }
    }

    /// Isolation I, item 3, through a real agent: `security.user` runs the instance as that user, its config
    /// files (a secret 0400 among them) are its own, and `runAsNonRoot` without a user refuses root, saying why.
    @Test func anAppRunsAsItsUserAndOwnsItsFiles() async throws {
        try await SchedulerCluster.forAgents(configs: 1) { cluster in
            try await RealAgent.with(cluster, extra: ["--config", cluster.configEndpoints[0]]) { agent in
                let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
                var request = Sigma_V1_PublishConfigRequest()
                request.app = "svc"
                var file = Sigma_V1_ConfigFile()
                file.path = "/conf/secret/password"
                file.content = Data("hunter2\n".utf8)
                file.secret = true
                request.files = [file]
                _ = try await config.call(ConfigMethods.publish, request)
                try await cluster.apply("svc", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "echo uid=$(id -u); cat /conf/secret/password; \(Self.stayUp)")
                    spec.config.app = "svc"
                    spec.security.user = "1000:1000"
                }
                try await cluster.eventually("Running") { try await cluster.instance("svc")?.state == "Running" }
                let instance = try #require(try await cluster.instance("svc"))
                try await cluster.eventually("its output") { agent.log(of: instance.id).contains("hunter2") }
                #expect(agent.log(of: instance.id).contains("uid=1000"))
                var facts = stat()
                #expect(lstat(Self.rootfs(agent, instance.id) + "/conf/secret/password", &facts) == 0)
                #expect(facts.st_uid == 1000 && facts.st_gid == 1000 && facts.st_mode & 0o777 == 0o400)

                try await cluster.apply("rooted", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: Self.stayUp)
                    spec.security.runAsNonRoot = true
                }
                try await cluster.eventually("refused, saying why") {
                    let refused = try await cluster.instance("rooted")
                    return refused?.state == "BackOff" && refused?.reason.contains("runAsNonRoot") == true
                }
            }
        }
    }

    /// Isolation I, item 2: every instance runs under the node's seccomp filter; `security.seccomp: Unconfined`
    /// is refused at apply unless an operator allows the team, and then runs without one.
    @Test func seccompIsTheDefaultAndUnconfinedNeedsTheTeamsLeave() async throws {
        try await SchedulerCluster.forAgents { cluster in
            try await RealAgent.with(cluster) { agent in
                let probe = "grep '^Seccomp:' /proc/self/status; \(Self.stayUp)"
                try await cluster.apply("filtered", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: probe)
                    spec.team = "dba"
                }
                func unconfined(_ spec: inout Sigma_V1_AppSpec) {
                    Self.service(&spec, script: probe)
                    spec.team = "dba"
                    spec.security.seccomp = "Unconfined"
                }
                do {
                    try await cluster.apply("raw", replicas: 1, cpu: 100, memory: 16 << 20, unconfined)
                    Issue.record("Unconfined was applied without the team's leave")
                } catch let error as RPCError {
                    #expect(error.code == .permissionDenied && error.message.contains("sigmactl policy dba --allow-seccomp-unconfined"), "\(error)")
                }
                var allow = Sigma_V1_SetTeamPolicyRequest()
                allow.policy.team = "dba"
                allow.policy.allowSeccompUnconfined = true
                _ = try await cluster.client.call(SchedulerMethods.setTeamPolicy, allow)
                try await cluster.apply("raw", replicas: 1, cpu: 100, memory: 16 << 20, unconfined)
                try await cluster.eventually("both Running") {
                    let first = try await cluster.instance("filtered")?.state, second = try await cluster.instance("raw")?.state
                    return first == "Running" && second == "Running"
                }
                let filtered = try #require(try await cluster.instance("filtered")), raw = try #require(try await cluster.instance("raw"))
                try await cluster.eventually("both printed their filter") {
                    agent.log(of: filtered.id).contains("Seccomp:") && agent.log(of: raw.id).contains("Seccomp:")
                }
                #expect(agent.log(of: filtered.id).contains("Seccomp:\t2"))
                #expect(agent.log(of: raw.id).contains("Seccomp:\t0"))
                #expect(try await cluster.client.call(SchedulerMethods.listTeamPolicies, .init()).policies.map(\.team) == ["dba"])
            }
        }
    }

    /// The root escape of config delivery: an instance that replaced its config folder with a link to a host
    /// folder, and one that replaced /.sigma (where its startup script goes) and exited. Neither the next config
    /// version nor the script at the restart lands on the host; the instance is told why.
    @Test func linksMadeInsideAnInstanceNeverCarryItsFilesOntoTheHost() async throws {
        let host = NSTemporaryDirectory() + "sigma-escape-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: host, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: host) }
        try await SchedulerCluster.forAgents(configs: 1) { cluster in
            try await RealAgent.with(cluster, extra: ["--config", cluster.configEndpoints[0]]) { agent in
                let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
                func publish(_ app: String, _ paths: [String], script: String = "") async throws {
                    var request = Sigma_V1_PublishConfigRequest()
                    request.app = app
                    request.files = paths.map { path in
                        var file = Sigma_V1_ConfigFile()
                        file.path = path
                        file.content = Data("pwned\n".utf8)
                        return file
                    }
                    request.script = script
                    _ = try await config.call(ConfigMethods.publish, request)
                }
                try await publish("linker", ["/conf/app.conf"])
                try await cluster.apply("linker", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "rm -rf /conf; ln -s \(host) /conf; echo linked; " + Self.stayUp)
                    spec.config.app = "linker"
                }
                try await cluster.eventually("Running") { try await cluster.instance("linker")?.state == "Running" }
                let linker = try #require(try await cluster.instance("linker"))
                try await cluster.eventually("the link made") { agent.log(of: linker.id).contains("linked") }
                try await publish("linker", ["/conf/app.conf", "/conf/new/other.conf"])
                try await cluster.eventually("the new version refused") {
                    agent.process.log.contains("config change not written") && agent.process.log.contains("symbolic link")
                }
                #expect(try await cluster.instance("linker")?.state == "Running")

                // No command: the script runs from /.sigma; the instance swaps that folder for a link and exits.
                try await publish("swapper", [], script: "rm -rf /.sigma; ln -s \(host) /.sigma; echo swapped; exit 1")
                try await cluster.apply("swapper", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    spec.image = "host"
                    spec.config.app = "swapper"
                }
                try await cluster.eventually("the restart refused, saying why, and retried by its policy") {
                    let instance = try await cluster.instance("swapper")
                    return instance?.state == "BackOff" && instance?.reason.contains("/.sigma is a symbolic link") == true
                }
                let swapper = try #require(try await cluster.instance("swapper"))
                #expect(agent.log(of: swapper.id).contains("swapped"))
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: host) == [])
    }

    /// Issue 17, case 5: a failed start follows the restart policy (BackOff, counted, retried), and a fixed
    /// config version retries it at once: same instance, same IP, no scaling 0 → 1.
    @Test func aFailedStartBacksOffAndANewConfigVersionRetriesItAtOnce() async throws {
        try await SchedulerCluster.forAgents(configs: 1) { cluster in
            // A first wait of 10 s: the retry that follows the new version can only be the one it caused.
            try await RealAgent.with(cluster, extra: ["--config", cluster.configEndpoints[0], "--restart-backoff", "10"]) { agent in
                let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
                func publish(_ path: String) async throws {
                    var request = Sigma_V1_PublishConfigRequest()
                    request.app = "etc"
                    var file = Sigma_V1_ConfigFile()
                    file.path = path
                    file.content = Data("x\n".utf8)
                    request.files = [file]
                    _ = try await config.call(ConfigMethods.publish, request)
                }
                try await publish("/etc/ssl/certs/etc-app.conf")
                try await cluster.apply("etc", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "cat /conf/etc-app.conf; " + Self.stayUp)
                    spec.config.app = "etc"
                }
                try await cluster.eventually("BackOff, saying why, retried") {
                    let instance = try await cluster.instance("etc")
                    return instance?.state == "BackOff" && instance?.reason.contains("read-only view in host mode") == true
                        && instance?.restarts == 1 && (instance?.nextRetryUnixMs ?? 0) > Int64(Date().timeIntervalSince1970 * 1000)
                }
                let failing = try #require(try await cluster.instance("etc"))
                #expect(failing.stateCode == .instanceStateBackOff && !failing.ready)
                #expect(try await cluster.client.call(SchedulerMethods.listApps, .init()).apps.first { $0.spec.name == "etc" }?.ready == 0)

                // Now that a host-mode app takes this config, a path it could never hold is refused at publish.
                do {
                    try await publish("/usr/share/etc-app.conf")
                    Issue.record("a config file under /usr was published for a host-mode app")
                } catch let error as RPCError {
                    #expect(error.code == .invalidArgument && error.message.contains("/usr/share/etc-app.conf is under /usr"), "\(error)")
                }
                try await publish("/conf/etc-app.conf")
                try await cluster.eventually("Running with the fixed version") { try await cluster.instance("etc")?.state == "Running" }
                let running = try #require(try await cluster.instance("etc"))
                #expect(running.id == failing.id && running.ip == failing.ip && running.generation == failing.generation)
                #expect(running.nextRetryUnixMs == 0)
                #expect(agent.process.log.contains("new config version: retrying now"))
                try await cluster.eventually("the fixed file read") { agent.log(of: running.id).contains("x") }
            }
        }
    }

    @Test func aDeviceSSDIsMountedForTheInstanceAndUnmountedAfter() async throws {
        // A 64 MiB ext4 filesystem on a loop device of the test's own, detached afterwards.
        let image = NSTemporaryDirectory() + "sigma-ssd-\(UUID().uuidString.prefix(8)).img"
        FileManager.default.createFile(atPath: image, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: image) }
        try FileHandle(forWritingAtPath: image)!.truncate(atOffset: 64 << 20)
        try await runProgram("/sbin/mkfs.ext4", ["-q", "-F", image])
        let device = try await runProgram("/sbin/losetup", ["--find", "--show", image])
        defer { _ = try? Subprocess.runBlocking("/sbin/losetup", ["--detach", device]) }
        try await SchedulerCluster.forAgents { cluster in
            try await RealAgent.with(cluster, extra: ["--ssd", "\(device):64Mi:loop"]) { agent in
                try await cluster.apply("disk", replicas: 1, cpu: 100, memory: 16 << 20) { spec in
                    Self.service(&spec, script: "echo kept > /data/marker; \(Self.stayUp)")
                    spec.ssd.count = 1
                    spec.ssd.mountPath = "/data"
                }
                let mountPoint = "\(agent.state)/ssd/\(String(stableHash(device), radix: 16))"
                try await cluster.eventually("the marker on the device") {
                    FileManager.default.fileExists(atPath: mountPoint + "/marker")
                }
                var delete = Sigma_V1_AppRequest()
                delete.name = "disk"
                _ = try await cluster.client.call(SchedulerMethods.deleteApp, delete)
                try await cluster.eventually("unmounted after the instance stopped") {
                    let mounts = try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)
                    return try await agent.localInstances().isEmpty && !mounts.contains("\(device) ")
                }
            }
        }
    }

    @Test func anAgentWithoutItsRuntimeRefusesToStart() async throws {
        let state = NSTemporaryDirectory() + "sigma-agent-noruntime-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: state) }
        let (status, output) = try await runProgramStatus(ServiceProcess.binDirectory + "/sigma-agent", [
            "--listen", "tcp://127.0.0.1:*", "--scheduler", "tcp://127.0.0.1:1", "--state-dir", state, "--name", "x",
            "--host-ip", "127.0.0.1", "--runtime", "/nonexistent/runc",
        ])
        #expect(status != 0)
        #expect(output.contains("the OCI runtime \"/nonexistent/runc\" was not found"))
    }
}
