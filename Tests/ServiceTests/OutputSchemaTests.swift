import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// sigmactl's `-o json` is one documented schema (docs/sigmactl-output.schema.json, written from the .proto
/// files): every listing validates against it (Debian's python3-jsonschema), every field is there, numbers are
/// numbers and times RFC 3339; and the schema and sigmactl's field table are what the .proto files make.
@Suite struct OutputSchemaTests {
    static let schema = packageRoot.path + "/docs/sigmactl-output.schema.json"

    /// Validates `json` as an array of `message` (or one, when `single`) against the schema; the problems.
    static func problems(_ json: String, _ message: String, single: Bool = false) async throws -> String {
        let file = NSTemporaryDirectory() + "sigma-output-\(UUID().uuidString.prefix(8)).json"
        try json.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let check = """
            import json, sys, jsonschema
            schema = json.load(open(sys.argv[1]))
            ref = {"$ref": "#/$defs/" + sys.argv[3]}
            schema = dict(schema, **(ref if sys.argv[4] == "1" else {"type": "array", "items": ref}))
            errors = list(jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).iter_errors(json.load(open(sys.argv[2]))))
            print("\\n".join("%s: %s" % ("/".join(map(str, e.absolute_path)), e.message) for e in errors[:5]))
            """
        return try await runProgram("/usr/bin/python3", ["-c", check, Self.schema, file, message, single ? "1" : "0"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func theGeneratedSchemaAndFieldTableAreCurrent() async throws {
        let (status, output) = try await runProgramStatus(packageRoot.path + "/scripts/proto-schema", ["--check"])
        #expect(status == 0, "\(output)")
    }

    @Test func everyListingValidatesWithEveryFieldNumbersAndTimes() async throws {
        try await SchedulerCluster.with { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register(cpu: 8000)
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("web", replicas: 2, cpu: 100)
            try await cluster.eventually("web running and its rollout done") {
                let done = try await RolloutTests.rollouts(cluster, "web").first?.state == "Succeeded"
                return try await cluster.allRunning("web", 2) && done
            }
            var quota = Sigma_V1_SetQuotaRequest()
            quota.quota.team = "shop"
            quota.quota.requests.cpuMillis = 4000
            _ = try await cluster.client.call(SchedulerMethods.setQuota, quota)
            let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
            let flags = ["--scheduler", cluster.endpoints[0], "--timeout", "20"]
            let listings: [([String], String)] = [
                (["get", "nodes"], "sigma.v1.Node"), (["get", "apps"], "sigma.v1.App"), (["get", "instances"], "sigma.v1.Instance"),
                (["get", "events"], "sigma.v1.Event"), (["get", "quotas"], "sigma.v1.Quota"), (["rollout", "list"], "sigma.v1.Rollout"),
            ]
            for (arguments, message) in listings {
                let json = try await runProgram(sigmactl, arguments + ["-o", "json"] + flags)
                let problems = try await Self.problems(json, message)
                #expect(problems.isEmpty, "sigmactl \(arguments.joined(separator: " ")) -o json: \(problems)")
            }
            let pool = try await runProgram(sigmactl, ["get", "pool", "-o", "json"] + flags)
            let poolProblems = try await Self.problems(pool, "sigma.v1.GetPoolResponse", single: true)
            #expect(poolProblems.isEmpty, "sigmactl get pool -o json: \(poolProblems)")

            // Every field, 0 and "" too; numbers as numbers; times as RFC 3339; an unset time null.
            let instances = try JSONSerialization.jsonObject(with: Data(try await runProgram(sigmactl, ["get", "instances", "-o", "json"] + flags).utf8)) as! [[String: Any]]
            let first = try #require(instances.first { ($0["ordinal"] as? Int) == 0 })
            #expect(first["ordinal"] as? Int == 0 && first["restarts"] as? Int == 0 && first["pending_reason"] as? String == "")
            #expect((first["resources"] as? [String: Any]).flatMap { ($0["request"] as? [String: Any])?["cpu_millis"] as? Int } == 100)
            let created = try #require(first["created_at"] as? String)
            #expect(created.range(of: #"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"#, options: .regularExpression) != nil, "\(created)")
            #expect(first["created_unix_ms"] == nil)
            let rollouts = try JSONSerialization.jsonObject(with: Data(try await runProgram(sigmactl, ["rollout", "list", "-o", "json"] + flags).utf8)) as! [[String: Any]]
            #expect(rollouts.first?["ended_at"] is String && rollouts.first?["id"] is Int, "\(rollouts)")
        }
    }
}
