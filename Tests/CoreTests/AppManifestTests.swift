import Core
import Manifest
import Testing

@Suite struct AppManifestTests {
    @Test func readsEveryField() throws {
        let specs = try AppManifest.parse("""
            name: mysql
            team: dba
            image: oci:/images/mysql:8
            command: [/usr/sbin/mysqld]
            args: ["--port=3306"]
            env: {MYSQL_ROOT_HOST: "%"}
            replicas: 3
            resources:
              request: {cpu: 500m, memory: 1Gi}
              limit: {cpu: 2, memory: 0}
            nodeSelector:
              matchLabels: {disk: ssd}
              matchExpressions: [{key: idc, operator: NotIn, values: [old]}]
            spread: {keys: [idc, node], maxSkew: 2, required: true}
            idcAffinity: {required: [hz-a, hz-b], preferred: [hz-a]}
            network: host
            ports: [{name: mysql, containerPort: 3306}]
            ssd: {count: 1, minBytes: 100Gi, mountPath: /var/lib/mysql}
            startup: ordered
            restartPolicy: OnFailure
            config: {app: mysql, version: 4}
            """)
        #expect(specs.count == 1)
        let spec = specs[0]
        #expect(spec.name == "mysql" && spec.team == "dba" && spec.replicas == 3)
        #expect(spec.command == ["/usr/sbin/mysqld"] && spec.args == ["--port=3306"] && spec.env == ["MYSQL_ROOT_HOST": "%"])
        #expect(spec.resources == ResourceRequirements(
            request: Resources(cpuMillis: 500, memoryBytes: 1 << 30), limit: Resources(cpuMillis: 2000, memoryBytes: 0)))
        #expect(spec.nodeSelector.description == "disk=ssd,idc!=old")
        #expect(spec.spread == SpreadPolicy(keys: ["idc", "node"], maxSkew: 2, required: true))
        #expect(spec.idcAffinity == IDCAffinity(required: ["hz-a", "hz-b"], preferred: ["hz-a"]))
        #expect(spec.network == .host && spec.hostPortCount == 1)
        #expect(spec.ssd == SSDRequest(count: 1, minBytes: 100 << 30, mountPath: "/var/lib/mysql"))
        #expect(spec.startup == .ordered && spec.restartPolicy == .onFailure)
        #expect(spec.config == ConfigReference(app: "mysql", version: 4))
    }

    @Test func defaultsAndTextSelectorAndSeveralDocuments() throws {
        let specs = try AppManifest.parse("""
            name: a
            image: host
            nodeSelector: "disk=ssd,!spot"
            ---
            name: b
            image: host
            replicas: 0
            """)
        #expect(specs.map(\.name) == ["a", "b"])
        #expect(specs[0].replicas == 1 && specs[0].spread == SpreadPolicy() && specs[0].network == .overlay)
        #expect(specs[0].nodeSelector.description == "disk=ssd,!spot")
        #expect(specs[1].replicas == 0)
    }

    @Test(arguments: [
        ("name: a\nimage: host\nreplica: 3", "replica"),
        ("name: a\nimage: host\nreplicas: three", "replicas"),
        ("name: a\nimage: host\nresources: {request: {cpu: lots}}", "resources.request.cpu"),
        ("name: a\nimage: host\nresources: {limit: {memory: 2Zi}}", "resources.limit.memory"),
        ("name: a\nimage: host\nnetwork: bridge", "network"),
        ("name: a\nimage: host\nports: [{name: http, containerPort: 99999}]", "ports[0].containerPort"),
        ("name: a\nimage: host\nnodeSelector: \"idc in hz\"", "nodeSelector"),
        ("name: a\nresources: {request: {cpu: 2}, limit: {cpu: 1}}", "image"),
        ("- just\n- a list", "(root)"),
        ("name: [unclosed", "(yaml)"),
    ])
    func namesTheBadField(_ yaml: String, _ field: String) {
        do {
            _ = try AppManifest.parse(yaml)
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.problems.map(\.field).contains(field), "\(error.problems)")
        }
    }

    /// Each YAML mistake says where it is and what it is (never "no document"): one problem, `(yaml)`, with
    /// the line and column, and the cause.
    @Test(arguments: [
        ("name: a\nimage: host\n  replicas: 3\n", "line 3, column 11: mapping values are not allowed in this context"),
        ("name: a\nimage: \"host\nreplicas: 3\n", "line 4, column 1: found unexpected end of stream (while scanning a quoted scalar at line 2, column 8)"),
        ("name: a\n\timage: host\n", "line 2, column 1: found a tab character that violates indentation (while scanning a plain scalar at line 1, column 7)"),
        ("name: a\nimage: host\nname: b\n", "line 3, column 1: \"name\" appears more than once in one mapping (first at line 1)"),
        ("name: a\nimage: host\nresources:\n  request: {cpu: 1}\n  limit: {cpu: 2}\n  request: {cpu: 3}\n",
         "line 6, column 3: \"request\" appears more than once in one mapping (first at line 4)"),
        ("{name: a, image: host, name: b}", "line 1, column 2: \"name\" appears more than once in one mapping"),
        ("name: a\nresources:\n  request: {cpu: 1\n", "line 4, column 1: did not find expected ',' or '}' (while parsing a flow mapping at line 3, column 12)"),
    ])
    func aYAMLMistakeSaysWhereAndWhat(_ yaml: String, _ reason: String) {
        do {
            _ = try AppManifest.parse(yaml)
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.problems == [SpecProblem(field: "(yaml)", reason: reason)], "\(error.problems)")
        }
    }
}

@Suite struct LifecycleTests {
    @Test func readsTheLifecycle() throws {
        let spec = try AppManifest.parse("""
            name: zk
            image: host
            lifecycle:
              stopGracePeriodSeconds: 30
              livenessProbe: {exec: [/bin/zkOk.sh], periodSeconds: 5, failureThreshold: 2}
              readinessProbe: {tcpPort: 2181, initialDelaySeconds: 3}
              selfFencing: true
              reload: {signal: SIGHUP}
            """)[0]
        #expect(spec.lifecycle == Lifecycle(
            stopGracePeriodSeconds: 30, liveness: Probe(exec: ["/bin/zkOk.sh"], periodSeconds: 5, failureThreshold: 2),
            readiness: Probe(tcpPort: 2181, initialDelaySeconds: 3), selfFencing: true, reload: ReloadAction(signal: "SIGHUP")))
        #expect(spec.problems().isEmpty)
    }

    @Test func badLifecyclesNameTheirField() {
        var spec = AppSpec(name: "web", image: "host")
        spec.lifecycle = Lifecycle(
            stopGracePeriodSeconds: -1, liveness: Probe(exec: ["/bin/true"], tcpPort: 80), readiness: Probe(periodSeconds: 0),
            reload: ReloadAction(signal: "SIGFOO"))
        let fields = spec.problems().map(\.field)
        #expect(fields.contains("lifecycle.stopGracePeriodSeconds"))
        #expect(fields.contains("lifecycle.livenessProbe.exec"))
        #expect(fields.contains("lifecycle.readinessProbe.exec"))
        #expect(fields.contains("lifecycle.readinessProbe.periodSeconds"))
        #expect(fields.contains("lifecycle.reload.signal"))
        #expect(throws: (any Error).self) { try AppManifest.parse("name: x\nimage: host\nlifecycle: {livenessProbe: {bogus: 1}}\n") }
    }
}
