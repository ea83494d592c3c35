import Foundation
import Protocol
import RPC
import Testing
import TestSupport

/// sigma-config with real processes: versions, rollback, diff, secrets, rendering, gray release, long polls, push.
@Suite(.serialized) struct ConfigCenterTests {
    static func file(_ path: String, _ text: String, secret: Bool = false) -> Sigma_V1_ConfigFile {
        var file = Sigma_V1_ConfigFile()
        file.path = path
        file.content = Data(text.utf8)
        file.secret = secret
        return file
    }

    static func publish(_ client: RPCClient, _ app: String, _ files: [Sigma_V1_ConfigFile], script: String = "", gray: [Int32] = []) async throws -> Sigma_V1_PublishConfigResponse {
        var request = Sigma_V1_PublishConfigRequest()
        request.app = app
        request.files = files
        request.script = script
        request.author = "test"
        request.message = "v"
        request.grayOrdinals = gray
        return try await client.call(ConfigMethods.publish, request)
    }

    static func fetch(_ client: RPCClient, _ app: String, _ instance: String, known: Int64 = 0, waitMs: UInt32 = 0) async throws -> Sigma_V1_FetchConfigResponse {
        var request = Sigma_V1_FetchConfigRequest()
        request.app = app
        request.instanceID = instance
        request.knownVersion = known
        request.waitMs = waitMs
        return try await client.call(ConfigMethods.fetch, request, timeout: .seconds(30))
    }

    static let zooCfg = """
        tickTime=2000
        clientPort={{host.ports.client}}
        {{#peers}}server.{{ordinal}}={{ip}}:2888:3888
        {{/peers}}myid={{instance.ordinal}}
        """

    @Test func versionsRollbackDiffAndSecrets() async throws {
        try await SchedulerCluster.with(configs: 1) { cluster in
            let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
            let v1 = try await Self.publish(config, "zk", [Self.file("/conf/zoo.cfg", Self.zooCfg), Self.file("/conf/password", "hunter2", secret: true)],
                                            script: "exec zkServer.sh start-foreground")
            #expect(v1.version.version == 1 && v1.release.current == 1 && v1.version.checksum.count == 64)
            let v2 = try await Self.publish(config, "zk", [Self.file("/conf/zoo.cfg", Self.zooCfg.replacingOccurrences(of: "2000", with: "3000")),
                                                           Self.file("/conf/password", "hunter3", secret: true)],
                                            script: "exec zkServer.sh start-foreground")
            #expect(v2.release.current == 2)

            var get = Sigma_V1_GetConfigRequest()
            get.app = "zk"
            get.version = 1
            let shown = try await config.call(ConfigMethods.get, get).version
            #expect(String(decoding: shown.files[1].content, as: UTF8.self) == "<secret, 7 bytes>")
            #expect(String(decoding: shown.files[0].content, as: UTF8.self) == Self.zooCfg)

            var history = Sigma_V1_ConfigHistoryRequest()
            history.app = "zk"
            let versions = try await config.call(ConfigMethods.history, history).versions
            #expect(versions.map(\.version) == [1, 2] && versions.allSatisfy { $0.files.allSatisfy(\.content.isEmpty) })

            var diff = Sigma_V1_DiffConfigRequest()
            diff.app = "zk"
            diff.from = 1
            diff.to = 2
            let changes = try await config.call(ConfigMethods.diff, diff)
            #expect(changes.files.map(\.change) == ["secret", "changed"])
            #expect(changes.files[1].diff.contains("-tickTime=2000") && changes.files[1].diff.contains("+tickTime=3000"))
            #expect(!changes.files[0].diff.contains("hunter"))
            #expect(!changes.scriptChanged)

            var rollback = Sigma_V1_RollbackConfigRequest()
            rollback.app = "zk"
            rollback.to = 1
            let v3 = try await config.call(ConfigMethods.rollback, rollback)
            #expect(v3.version.version == 3 && v3.release.current == 3 && v3.version.checksum == v1.version.checksum)
        }
    }

    @Test func rendersPerInstanceWithGrayReleaseAndLongPoll() async throws {
        try await SchedulerCluster.with(configs: 1) { cluster in
            let agent = SimulatedAgent("n1", client: cluster.client)
            try await agent.register()
            agent.start()
            defer { agent.stop() }
            try await cluster.apply("zk", replicas: 3, cpu: 100) {
                $0.network = "host"
                var port = Sigma_V1_ContainerPort()
                port.name = "client"
                port.containerPort = 2181
                $0.ports = [port]
            }
            try await cluster.eventually("zk running") { try await cluster.allRunning("zk", 3) }
            let instances = try await cluster.instances("zk").sorted { $0.ordinal < $1.ordinal }
            let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
            _ = try await Self.publish(config, "zk", [Self.file("/conf/zoo.cfg", Self.zooCfg), Self.file("/conf/password", "hunter2", secret: true)],
                                       script: "echo {{instance.name}} on {{host.ip}}")

            let mine = try await Self.fetch(config, "zk", instances[1].id)
            let text = String(decoding: mine.files[0].content, as: UTF8.self)
            #expect(text.contains("clientPort=\(instances[1].hostPorts["client"]!)"))
            for instance in instances { #expect(text.contains("server.\(instance.ordinal)=\(instance.ip):2888:3888")) }
            #expect(text.hasSuffix("myid=1"))
            #expect(String(decoding: mine.files[1].content, as: UTF8.self) == "hunter2")  // secrets reach the instance
            #expect(mine.script == "echo zk-1 on \(instances[1].hostIp)")

            // Gray: version 2 for ordinal 1 only.
            let v2 = try await Self.publish(config, "zk", [Self.file("/conf/zoo.cfg", "tickTime=1\n")], gray: [1])
            #expect(v2.release.current == 1 && v2.release.grayVersion == 2)
            #expect(try await Self.fetch(config, "zk", instances[1].id).version == 2)
            #expect(try await Self.fetch(config, "zk", instances[1].id).gray)
            #expect(try await Self.fetch(config, "zk", instances[0].id).version == 1)

            // Instance 0 long-polls on version 1; promoting answers it with version 2.
            let poll = Task { try await Self.fetch(config, "zk", instances[0].id, known: 1, waitMs: 20_000) }
            var promote = Sigma_V1_ConfigAppRequest()
            promote.app = "zk"
            let promoted = try await config.call(ConfigMethods.promote, promote).release
            #expect(promoted.current == 2 && promoted.grayVersion == 0)
            let answered = try await poll.value
            #expect(answered.version == 2 && !answered.gray)

            // Nothing changes: the poll answers at its timeout with the same version.
            let started = ContinuousClock.now
            let same = try await Self.fetch(config, "zk", instances[0].id, known: 2, waitMs: 300)
            #expect(same.version == 2 && ContinuousClock.now - started >= .milliseconds(300))
        }
    }

    /// A feed bound to 0.0.0.0 (inside a container) is advertised where clients reach it: --events-advertise.
    /// DeleteConfig removes every version, on every replica, and is refused while an app of that name runs with a
    /// config; a set published again goes on with the next number (no old version's content comes back).
    @Test func deleteRemovesEveryVersionAndTheNumberingGoesOn() async throws {
        try await SchedulerCluster.with(configs: 2) { cluster in
            let replicas = try cluster.configEndpoints.map { try SchedulerCluster.rpcClient([$0]) }
            let config = replicas[0]
            _ = try await Self.publish(config, "web", [Self.file("/conf/web.conf", "a=1")])
            _ = try await Self.publish(config, "web", [Self.file("/conf/web.conf", "a=2")])
            var get = Sigma_V1_GetConfigRequest()
            get.app = "web"
            get.version = 1
            for replica in replicas { #expect(try await replica.call(ConfigMethods.get, get).version.version == 1) }  // cached there

            try await cluster.apply("web", replicas: 0) { $0.config = Sigma_V1_ConfigReference() }
            var delete = Sigma_V1_ConfigAppRequest()
            delete.app = "web"
            await #expect(throws: RPCError.failedPrecondition("app web runs with this config; delete the app, or apply it without config:, first")) {
                _ = try await config.call(ConfigMethods.delete, delete)
            }
            var app = Sigma_V1_AppRequest()
            app.name = "web"
            _ = try await cluster.client.call(SchedulerMethods.deleteApp, app)
            let deleted = try await config.call(ConfigMethods.delete, delete)
            #expect(deleted.versions == 2 && deleted.lastVersion == 2)

            var history = Sigma_V1_ConfigHistoryRequest()
            history.app = "web"
            var diff = Sigma_V1_DiffConfigRequest()
            diff.app = "web"
            diff.from = 1
            diff.to = 2
            var rollback = Sigma_V1_RollbackConfigRequest()
            rollback.app = "web"
            rollback.to = 1
            for replica in replicas {
                await #expect(throws: RPCError.notFound("app web has no config")) { _ = try await replica.call(ConfigMethods.get, get) }
                await #expect(throws: RPCError.notFound("app web has no config")) { _ = try await replica.call(ConfigMethods.history, history) }
                await #expect(throws: RPCError.notFound("app web has no config")) { _ = try await replica.call(ConfigMethods.diff, diff) }
                await #expect(throws: RPCError.notFound("app web has no config")) { _ = try await replica.call(ConfigMethods.rollback, rollback) }
                await #expect(throws: RPCError.notFound("app web has no config")) { _ = try await replica.call(ConfigMethods.promote, delete) }
                await #expect(throws: RPCError.notFound("app web has no config")) { _ = try await replica.call(ConfigMethods.delete, delete) }
            }
            await #expect(throws: RPCError.failedPrecondition("app web has no current config yet; publish one without gray instances first")) {
                _ = try await Self.publish(config, "web", [Self.file("/conf/web.conf", "a=3")], gray: [0])
            }

            let again = try await Self.publish(replicas[1], "web", [Self.file("/conf/web.conf", "a=3")])
            #expect(again.version.version == 3 && again.release.current == 3)
            get.version = 0
            for replica in replicas {
                let current = try await replica.call(ConfigMethods.get, get).version
                #expect(current.version == 3 && String(decoding: current.files[0].content, as: UTF8.self) == "a=3")
            }
            get.version = 1
            await #expect(throws: RPCError.notFound("app web has no config version 1")) { _ = try await replicas[0].call(ConfigMethods.get, get) }
            #expect(try await config.call(ConfigMethods.history, history).versions.map(\.version) == [3])
        }
    }

    @Test func theFeedIsAdvertisedWhereClientsReachIt() async throws {
        try await withTestDatabase { db in
            let arguments = ["--listen", "tcp://127.0.0.1:*", "--database-url", db.url, "--events-listen", "tcp://0.0.0.0:*",
                             "--events-advertise", "tcp://198.18.0.254:7114"]
            try await withServices({ [try ServiceProcess("sigma-config", arguments)] }) { services in
                let config = try SchedulerCluster.rpcClient([try await services[0].endpoint()])
                try await SchedulerCluster.waitHealthy(config)
                _ = try await Self.publish(config, "web", [Self.file("/etc/web.conf", "a=1")])
                var get = Sigma_V1_GetConfigRequest()
                get.app = "web"
                #expect(try await config.call(ConfigMethods.get, get).eventsEndpoint == "tcp://198.18.0.254:7114")
                // Health says it too, for a client that reads no config (docs/protocol.md, "Where the feeds are").
                #expect(try await config.call(CommonMethods.health, .init()).eventsEndpoint == "tcp://198.18.0.254:7114")
            }
        }
    }

    @Test func pushReachesASubscriber() async throws {
        try await SchedulerCluster.with(configs: 1) { cluster in
            let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
            _ = try await Self.publish(config, "web", [Self.file("/etc/web.conf", "a=1")])
            var get = Sigma_V1_GetConfigRequest()
            get.app = "web"
            let events = try await config.call(ConfigMethods.get, get).eventsEndpoint
            let snapshotRequest = get
            let subscriber = try Subscriber(endpoints: [events], topics: [FeedTopics.config("web")], logger: quietLogger) { _ in
                let snapshot = try await config.call(ConfigMethods.get, snapshotRequest)
                var change = Sigma_V1_ConfigChange()
                change.release = snapshot.release
                return EventSnapshot(sequence: snapshot.sequence, epoch: snapshot.feedEpoch, payload: try change.serializedBytes())
            }
            defer { subscriber.close() }
            _ = try await Self.publish(config, "web", [Self.file("/etc/web.conf", "a=2")])
            var seen: Int64 = 0
            // The first snapshot may already hold version 2 (it can be taken after the publish): either way ends it.
            for await event in subscriber.events {
                switch event {
                case .update(_, _, let payload), .snapshot(_, _, let payload):
                    seen = try Sigma_V1_ConfigChange(serializedBytes: payload).release.current
                }
                if seen == 2 { break }
            }
            #expect(seen == 2)
        }
    }

    @Test func badInputGetsTypedErrors() async throws {
        try await SchedulerCluster.with(configs: 1) { cluster in
            let config = try SchedulerCluster.rpcClient(cluster.configEndpoints)
            do {
                _ = try await Self.publish(config, "zk", [Self.file("/conf/zoo.cfg", "port={{instance.port}}")])
                Issue.record("an unknown variable was accepted")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument)
                #expect(error.message.hasPrefix("files[/conf/zoo.cfg]: template {{instance.port}}: unknown variable"))
            }
            await #expect(throws: RPCError.invalidArgument("files[/conf/zoo.cfg]: template {{#peers}}: section not closed")) {
                try await Self.publish(config, "zk", [Self.file("/conf/zoo.cfg", "{{#peers}}{{ip}}")])
            }
            do {
                _ = try await Self.publish(config, "zk", [Self.file("/conf/big", String(repeating: "x", count: 300 << 10))])
                Issue.record("an oversized file was accepted")
            } catch let error as RPCError {
                #expect(error.code == .resourceExhausted)
                #expect(error.message.contains("at most 262144 (256 KiB) per file"))
            }
            await #expect(throws: RPCError.self) { try await Self.publish(config, "zk", [Self.file("../etc/passwd", "x")]) }
            var get = Sigma_V1_GetConfigRequest()
            get.app = "nothing"
            await #expect(throws: RPCError.notFound("app nothing has no config")) { try await config.call(ConfigMethods.get, get) }
            _ = try await Self.publish(config, "zk", [Self.file("/conf/zoo.cfg", "ok")])
            var promote = Sigma_V1_ConfigAppRequest()
            promote.app = "zk"
            await #expect(throws: RPCError.failedPrecondition("app zk has no gray version to promote")) {
                try await config.call(ConfigMethods.promote, promote)
            }
            await #expect(throws: RPCError.notFound("app zk has no instance 6f0f7a2e-0000-4000-8000-000000000000")) {
                try await Self.fetch(config, "zk", "6f0f7a2e-0000-4000-8000-000000000000")
            }
        }
    }

    @Test func sigmactlConfig() async throws {
        try await SchedulerCluster.with(configs: 1) { cluster in
            let sigmactl = ServiceProcess.binDirectory + "/sigmactl"
            let flags = ["--config", cluster.configEndpoints[0], "--timeout", "20"]
            let folder = NSTemporaryDirectory() + "sigma-config-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: folder) }
            try "port={{host.ports.http}}\n".write(toFile: folder + "/app.conf", atomically: true, encoding: .utf8)
            try "s3cr3t".write(toFile: folder + "/token", atomically: true, encoding: .utf8)
            let published = try await runProgram(sigmactl, ["config", "publish", "web", "--file", "/etc/app.conf=\(folder)/app.conf",
                                                             "--secret", "/etc/token=\(folder)/token", "-m", "first"] + flags)
            #expect(published.contains("published version 1") && published.contains("current version 1"))
            try "port={{host.ports.http}}\nworkers=4\n".write(toFile: folder + "/app.conf", atomically: true, encoding: .utf8)
            let gray = try await runProgram(sigmactl, ["config", "publish", "web", "--file", "/etc/app.conf=\(folder)/app.conf",
                                                        "--secret", "/etc/token=\(folder)/token", "--gray", "0"] + flags)
            #expect(gray.contains("gray version 2 on ordinal 0"))
            let shown = try await runProgram(sigmactl, ["config", "get", "web", "--version", "2"] + flags)
            #expect(shown.contains("workers=4") && shown.contains("<secret, 6 bytes>") && !shown.contains("s3cr3t"))
            let diff = try await runProgram(sigmactl, ["config", "diff", "web", "1", "2"] + flags)
            #expect(diff.contains("+workers=4"))
            #expect(try await runProgram(sigmactl, ["config", "promote", "web"] + flags).contains("current version 2"))
            #expect(try await runProgram(sigmactl, ["config", "rollback", "web", "--to", "1"] + flags).contains("current version 3"))
            let history = try await runProgram(sigmactl, ["config", "history", "web"] + flags)
            #expect(history.contains("rollback to version 1"))
            // A bad template: exit code 1 and the variable named.
            try "{{instance.nope}}".write(toFile: folder + "/app.conf", atomically: true, encoding: .utf8)
            let refused = try await runProgramStatus(sigmactl, ["config", "publish", "web", "--file", "/etc/app.conf=\(folder)/app.conf"] + flags)
            #expect(refused.status == 1 && refused.output.contains("{{instance.nope}}: unknown variable"))
            let deleted = try await runProgram(sigmactl, ["config", "delete", "web"] + flags)
            #expect(deleted.contains("config/web deleted (3 version(s); the next publish is version 4)"), "\(deleted)")
            let gone = try await runProgramStatus(sigmactl, ["config", "get", "web"] + flags)
            #expect(gone.status == 1 && gone.output.contains("app web has no config"), "\(gone.output)")
        }
    }
}
