import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// sigmactl against a real scheduler: apply a YAML file and wait, get, describe, scale, rollout, set resources,
/// cordon/drain, quota, delete, and the exit codes of bad input.
@Suite(.serialized) struct SigmactlSchedulerTests {
    @Test func operatorsWorkflow() async throws {
        try await SchedulerCluster.with { cluster in
            let agents = ["n1", "n2"].map { SimulatedAgent($0, client: cluster.client) }
            for agent in agents { try await agent.register(idc: "idc-\(agent.name)", cpu: 4000, memory: 8 << 30) }
            agents.forEach { $0.start() }
            defer { agents.forEach { $0.stop() } }
            try await cluster.waitReady(agents.map(\.name))
            let endpoint = try await cluster.processes[0].endpoint()
            let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
            let flags = ["--scheduler", endpoint, "--timeout", "30"]
            let file = NSTemporaryDirectory() + "sigma-app-\(UUID().uuidString.prefix(8)).yaml"
            defer { try? FileManager.default.removeItem(atPath: file) }
            try """
                name: web
                team: shop
                image: oci:/images/web:1
                replicas: 2
                resources:
                  request: {cpu: 500m, memory: 512Mi}
                  limit: {cpu: 2, memory: 1Gi}
                """.write(toFile: file, atomically: true, encoding: .utf8)

            let applied = try await runProgram(sigmactl, ["apply", "-f", file, "--wait-timeout", "60"] + flags)
            #expect(applied.contains("app/web applied (revision 1)"))
            #expect(applied.contains("app/web: 2/2 running"))

            let json = try await runProgram(sigmactl, ["get", "instances", "--app", "web", "-o", "json"] + flags)
            let instances = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [[String: Any]]
            #expect(instances.count == 2 && instances.allSatisfy { $0["state"] as? String == "Running" })
            let table = try await runProgram(sigmactl, ["get", "nodes"] + flags)
            #expect(table.contains("CPU REQ/CAP") && table.contains("500m/4"), "\(table)")
            let pool = try await runProgram(sigmactl, ["get", "pool", "-o", "json"] + flags)
            let total = (try JSONSerialization.jsonObject(with: Data(pool.utf8)) as! [String: Any])["total"] as! [String: Any]
            #expect((total["requested"] as! [String: Any])["cpu_millis"] as? Int == 1000, "snake_case, a number: \(total)")

            let described = try await runProgram(sigmactl, ["describe", "instance", "web-0"] + flags)
            #expect(described.contains("app: web") && described.contains("Scheduled") && described.contains("resources.limit.cpu_millis: 2000"))

            _ = try await runProgram(sigmactl, ["set", "resources", "web", "--limit-cpu", "3"] + flags)
            _ = try await runProgram(sigmactl, ["scale", "web", "--replicas", "3"] + flags)
            let history = try await runProgram(sigmactl, ["rollout", "history", "web"] + flags)
            #expect(history.contains("set resources") && history.contains("scale to 3"))
            try await cluster.eventually("3 running") { try await cluster.allRunning("web", 3) }
            #expect(try await cluster.instances("web").allSatisfy { $0.resources.limit.cpuMillis == 3000 })

            let quota = try await runProgram(sigmactl, ["quota", "shop", "--cpu", "2", "--memory", "4Gi"] + flags)
            #expect(quota.contains("in use cpu 1.5"))
            _ = try await runProgram(sigmactl, ["cordon", "n1"] + flags)
            #expect(try await cluster.node("n1").cordoned)
            _ = try await runProgram(sigmactl, ["delete", "app", "web"] + flags)
            try await cluster.eventually("web gone") { try await cluster.instances("web").isEmpty }

            // Bad input: exit code 2 and the field named; unknown app: a typed error.
            try "name: web\nimage: x\nreplicas: many\n".write(toFile: file, atomically: true, encoding: .utf8)
            await #expect(throws: TestSetupError.self) { try await runProgram(sigmactl, ["apply", "-f", file] + flags) }
            let result = try await runProgramStatus(sigmactl, ["apply", "-f", file] + flags)
            #expect(result.status == 2)
            #expect(result.output.contains("replicas: expected a whole number"))
            let missing = try await runProgramStatus(sigmactl, ["describe", "app", "nothing"] + flags)
            #expect(missing.status != 0 && missing.output.contains("NOT_FOUND"))
        }
    }

    /// `get apps NAME -o yaml` prints the manifest format: applied back, nothing changes (same revision), and
    /// printed again it is the same text. Every field a manifest can set goes through the scheduler and back.
    @Test func getYamlAppliesBackUnchanged() async throws {
        try await SchedulerCluster.with { cluster in
            let endpoint = try await cluster.processes[0].endpoint()
            let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
            let flags = ["--scheduler", endpoint, "--timeout", "30"]
            let base = NSTemporaryDirectory() + "sigma-roundtrip-\(UUID().uuidString.prefix(8))"
            defer { for suffix in [".yaml", ".got.yaml"] { try? FileManager.default.removeItem(atPath: base + suffix) } }
            try """
                name: db
                team: dba
                image: oci:/images/db:1
                command: [/usr/sbin/db, "--flag=true"]
                args: ["yes", "1"]
                env: {MODE: "on", EMPTY: ""}
                replicas: 3
                resources:
                  request: {cpu: 500m, memory: 1Gi}
                  limit: {cpu: 1.5, memory: 2Gi}
                nodeSelector: "disk=ssd,idc in (hz-a,hz-b)"
                spread: {keys: [idc], maxSkew: 2, required: true}
                idcAffinity: {preferred: [hz-a]}
                network: host
                ports: [{name: db, containerPort: 3306}, {name: gossip, containerPort: 7946, protocol: udp}]
                ssd: {count: 1, minBytes: 100Gi, mountPath: /var/lib/db}
                startup: ordered
                restartPolicy: OnFailure
                config: {app: db, version: 2}
                lifecycle:
                  stopGracePeriodSeconds: 30
                  livenessProbe: {exec: [/bin/check], periodSeconds: 5}
                  readinessProbe: {tcpPort: 3306, initialDelaySeconds: 5}
                  selfFencing: true
                  reload: {signal: SIGHUP}
                security: {user: "1000:1000", runAsNonRoot: true}
                """.write(toFile: base + ".yaml", atomically: true, encoding: .utf8)
            let applied = try await runProgram(sigmactl, ["apply", "-f", base + ".yaml", "--no-wait"] + flags)
            #expect(applied.contains("app/db applied (revision 1)"), "\(applied)")

            let printed = try await runProgram(sigmactl, ["get", "apps", "db", "-o", "yaml"] + flags)
            #expect(printed.hasPrefix("# revision 1, ") && printed.contains("restartPolicy: OnFailure"), "\(printed)")
            try printed.write(toFile: base + ".got.yaml", atomically: true, encoding: .utf8)
            let again = try await runProgram(sigmactl, ["apply", "-f", base + ".got.yaml", "--no-wait"] + flags)
            #expect(again.contains("app/db unchanged"), "applying `get -o yaml` changed the app:\n\(again)\n\(printed)")
            #expect(try await runProgram(sigmactl, ["get", "apps", "db", "-o", "yaml"] + flags) == printed)

            let missing = try await runProgramStatus(sigmactl, ["get", "apps", "nothing", "-o", "yaml"] + flags)
            #expect(missing.status != 0 && missing.output.contains("no app nothing"))
        }
    }
}
