import ArgumentParser
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC

/// `sigma-bench net`: on a three-host testbed (`scripts/testbed`), TCP round trip and throughput instance →
/// instance across hosts over the overlay and over a host port, next to host → host on the underlay in the same
/// run; how long after a migrated instance answers on its new host the other hosts reach it there; and the
/// time from killing a host to its migrated instance answering on its old IP.
struct NetBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "net", abstract: "Overlay and host-port round trip/throughput vs the underlay; kill-to-answering time.")

    @Option(help: "PostgreSQL to use (a scratch database is made and dropped). [SIGMA_DATABASE_URL]") var databaseURL: String?
    @Option(help: "Round trips per path.") var roundTrips = 2000
    @Option(help: "MiB sent per throughput run.") var mebibytes = 64
    @Option(help: "The testbed script.") var testbed = "scripts/testbed"
    @OptionGroup var output: OutputOptions

    func run() async throws { try output.emit(try await measure()) }

    /// A small TCP echo server and client (python3 from the host, which `host` images see).
    static let server = """
        import os, socket, sys, threading
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
        def serve(c):
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                d = c.recv(65536)
                if not d: break
                if d[:1] == b'R': c.sendall(d)
                if d[:1] == b'N': c.sendall(os.environ.get('SIGMA_NODE', '?').encode())
            c.close()
        while True:
            c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
        """
    static let client = """
        import socket, sys, time
        host, port, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        c = socket.create_connection((host, port), timeout=5); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        m = b'R' * 64; t = []
        for _ in range(n):
            a = time.perf_counter(); c.sendall(m); got = 0
            while got < 64: got += len(c.recv(64 - got))
            t.append(time.perf_counter() - a)
        t.sort(); block = b'T' * 65536; a = time.perf_counter()
        for _ in range(mib * 16): c.sendall(block)
        c.shutdown(socket.SHUT_WR); c.recv(1); d = time.perf_counter() - a
        print(t[len(t) // 2] * 1e6, mib / d)
        """
    /// Asks HOST:PORT every 2 ms which node answers; prints CLOCK_MONOTONIC (shared by every process here) when
    /// it is NODE.
    static let poller = """
        import socket, sys, time
        host, port, want, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), time.monotonic() + float(sys.argv[4])
        while time.monotonic() < limit:
            try:
                c = socket.create_connection((host, port), timeout=0.05); c.settimeout(0.05); c.sendall(b'N')
                if c.recv(64) == want: print(time.monotonic()); sys.exit(0)
                c.close()
            except OSError: pass
            time.sleep(0.002)
        sys.exit(1)
        """

    func measure() async throws -> Report {
        guard getuid() == 0 else { throw ValidationError("sigma-bench net needs root (namespaces, nftables)") }
        return try await BenchTestbed.with(prefix: "bn", script: testbed, databaseURL: databaseURL) { bed in
            let name = bed.name, client = bed.client, hosts = bed.hosts, common = bed.common
            let hostIPs = [hosts["host1"] ?? "", hosts["host2"] ?? ""]

            // One echo instance per host, with an overlay IP and a host port.
            let nodes = (1...3).map { "\(name)-h\($0)" }
            var apply = Sigma_V1_ApplyAppRequest()
            apply.spec.name = "echo"
            apply.spec.image = "host"
            apply.spec.command = ["/usr/bin/python3", "-c", Self.server, "0.0.0.0", "7000"]
            apply.spec.replicas = 3
            apply.spec.network = "host"
            var port = Sigma_V1_ContainerPort()
            port.name = "echo"
            port.containerPort = 7000
            apply.spec.ports = [port]
            apply.spec.resources.request.cpuMillis = 10
            apply.spec.resources.request.memoryBytes = 16 << 20
            _ = try await client.call(SchedulerMethods.applyApp, apply)
            var instances: [Sigma_V1_Instance] = []
            for _ in 0..<600 {
                var list = Sigma_V1_ListInstancesRequest()
                list.app = "echo"
                instances = try await client.call(SchedulerMethods.listInstances, list).instances.sorted { $0.node < $1.node }
                if instances.count == 3 && instances.allSatisfy({ $0.state == "Running" }) && Set(instances.map(\.node)).count == 3 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            guard instances.count == 3, Set(instances.map(\.node)) == Set(nodes) else { throw ValidationError("the echo instances did not come up on all three hosts") }
            let local = try NodeNetwork(bridge: "sigma0", node: "\(name)-h1").namespacePath(for: instances[0].id)
            let remote = instances[1]

            // Baseline: host 1 → host 2 on the underlay, the same server program in host 2's namespace.
            let baselineServer = try BenchProcess.detached(
                "/usr/bin/nsenter", ["--net=/run/netns/\(name)-h2", "/usr/bin/python3", "-c", Self.server, hostIPs[1], "7100"])
            defer { baselineServer.terminateNow() }
            // Ready when it answers (outside an instance it names no node: "?").
            let listening = try await poll(from: "/run/netns/\(name)-h1", hostIPs[1], 7100, answering: "?", within: 30)
            guard listening.succeeded else { throw ValidationError("the baseline server on host 2 did not start") }
            let underlay = try await path(namespace: "/run/netns/\(name)-h1", host: hostIPs[1], port: 7100)
            let overlay = try await path(namespace: local, host: remote.ip, port: 7000)
            let hostPort = try await path(namespace: local, host: hostIPs[1], port: Int(remote.hostPorts["echo"] ?? 0))

            // Host 3's instance migrates to host 2: from the moment it answers there (asked on host 2 itself), how long
            // until host 1 reaches it at host 2 too (asked from host 1's instance, over the overlay).
            let moving = instances[2]
            // Host 1's instance talks to it first, as a peer of a running instance does.
            let warm = try await poll(from: local, moving.ip, 7000, answering: nodes[2], within: 30)
            guard warm.succeeded else { throw ValidationError("host 3's instance does not answer from host 1") }
            async let onNewHost = poll(from: "/run/netns/\(name)-h2", moving.ip, 7000, answering: nodes[1], within: 60)
            async let fromOtherHost = poll(from: local, moving.ip, 7000, answering: nodes[1], within: 60)
            var migrate = Sigma_V1_MigrateInstanceRequest()
            migrate.instanceID = moving.id
            migrate.toNode = nodes[1]
            _ = try await client.call(SchedulerMethods.migrateInstance, migrate)
            let (there, here) = try await (onNewHost, fromOtherHost)
            guard there.succeeded, here.succeeded, let runningAt = Double(there.output.trimmingCharacters(in: .whitespacesAndNewlines)),
                  let reachedAt = Double(here.output.trimmingCharacters(in: .whitespacesAndNewlines))
            else { throw ValidationError("the migrated instance did not answer on host 2: \(there.errors.suffix(200)) \(here.errors.suffix(200))") }
            let routeLag = (reachedAt - runningAt) * 1000

            // Kill host 2; time until its instance answers on the same IP from host 1.
            let killed = ContinuousClock.now
            _ = try await Subprocess.check(testbed, ["kill", "2"] + common)
            var recovered: Double?
            while ContinuousClock.now - killed < .seconds(60) {
                if let _ = try? await path(namespace: local, host: remote.ip, port: 7000, trips: 1, mebibytes: 0, timeout: .seconds(2)) {
                    recovered = milliseconds(ContinuousClock.now - killed) / 1000
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }

            var report = Report(title: "sigma-bench net (2 test hosts, \(roundTrips) round trips of 64 bytes, \(mebibytes) MiB per throughput run)")
            report.figures = [
                Figure(name: "overlay round trip p50", value: overlay.p50, unit: "µs", baseline: underlay.p50, target: .none),
                Figure(name: "host-port round trip p50", value: hostPort.p50, unit: "µs", baseline: underlay.p50, target: .none),
                Figure(name: "overlay throughput", value: overlay.rate, unit: "MiB/s", baseline: underlay.rate, target: .none),
                Figure(name: "host-port throughput", value: hostPort.rate, unit: "MiB/s", baseline: underlay.rate, target: .none),
                Figure(name: "migrated: answering on its new host → reached there from another host", value: routeLag, unit: "ms",
                       baseline: 0, target: .maxValue(1000)),
                Figure(name: "host killed → instance answering on its IP", value: recovered ?? 60, unit: "s", baseline: 0,
                       target: .maxValue(10)),
            ]
            report.notes = [
                "baseline: host 1 → host 2 on the underlay (veth and bridge), the same Python echo program, same run",
                "overlay: instance on host 1 → instance on host 2 by IP (VXLAN); host port: → host 2's IP and the instance's port (DNAT)",
                "migrated: MigrateInstance moves host 3's instance to host 2; pollers on host 2 and in host 1's instance ask every 2 ms which node answers at its IP (negative: host 1 had the route before the instance ran)",
                "kill: host 2's agent and namespace go; default heartbeat settings (1 s, Broken after 5 s)",
            ]
            return report
        }
    }

    /// `poller` run from `namespace`: succeeds, printing the moment, once HOST:PORT answers as `node`.
    func poll(from namespace: String, _ host: String, _ port: Int, answering node: String, within seconds: Int) async throws -> ProgramResult {
        try await Subprocess.run("/usr/bin/nsenter", ["--net=\(namespace)", "/usr/bin/python3", "-c", Self.poller, host, "\(port)", node, "\(seconds)"])
    }

    /// One client run from `namespace`: median round trip (µs) and throughput (MiB/s).
    func path(namespace: String, host: String, port: Int, trips: Int? = nil, mebibytes: Int? = nil,
              timeout: Duration = .seconds(120)) async throws -> (p50: Double, rate: Double) {
        let result = try await Subprocess.run("/usr/bin/nsenter", [
            "--net=\(namespace)", "/usr/bin/python3", "-c", Self.client, host, "\(port)", "\(trips ?? roundTrips)",
            "\(mebibytes ?? self.mebibytes)",
        ], timeout: timeout)
        let values = result.output.split(separator: " ").compactMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        guard result.succeeded, values.count == 2 else {
            throw ValidationError("\(host):\(port) from \(namespace): \(result.errors.suffix(300))")
        }
        return (values[0], values[1])
    }
}
