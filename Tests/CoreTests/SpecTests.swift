import Core
import Testing

@Suite struct QuantityTests {
    @Test(arguments: [("2", 2000), ("0.5", 500), ("500m", 500), ("1.25", 1250), ("0", 0), (".5", 500)] as [(String, Int64)])
    func cpu(_ text: String, _ millis: Int64) { #expect(Quantity.parseCPU(text) == millis) }

    @Test(arguments: ["", "-1", "1.2.3", "m", "2 cores", "1e3", "99999999999999999999"])
    func badCPU(_ text: String) { #expect(Quantity.parseCPU(text) == nil) }

    @Test(arguments: [("512Mi", 512 << 20), ("2Gi", 2 << 30), ("1G", 1_000_000_000), ("1.5Gi", 3 << 29), ("1024", 1024)] as [(String, Int64)])
    func bytes(_ text: String, _ bytes: Int64) { #expect(Quantity.parseBytes(text) == bytes) }

    @Test(arguments: ["", "Gi", "-1Gi", "1Zi", "lots"])
    func badBytes(_ text: String) { #expect(Quantity.parseBytes(text) == nil) }

    @Test func formats() {
        #expect(Quantity.formatCPU(500) == "500m")
        #expect(Quantity.formatCPU(2000) == "2")
        #expect(Quantity.formatCPU(1500) == "1.5")
        #expect(Quantity.formatBytes(2 << 30) == "2Gi")
        #expect(Quantity.formatBytes(1000) == "1000")
        #expect(Quantity.formatBytesRounded(75_829_506_048) == "70.6Gi")
        #expect(Quantity.formatBytesRounded(512 << 20) == "512Mi")
        #expect(Quantity.formatBytesRounded(1000) == "1000")
        #expect(Quantity.formatBytesRounded(3 << 30 + 1) == "3Gi")
    }
}

@Suite struct LabelSelectorTests {
    @Test func parsesEveryForm() throws {
        let selector = try LabelSelector(parsing: "disk=ssd, idc in (hz-a, hz-b),gpu,!spot,tier!=batch,zone notin (x,y)")
        #expect(selector.requirements == [
            .init("disk", .in, ["ssd"]), .init("idc", .in, ["hz-a", "hz-b"]), .init("gpu", .exists),
            .init("spot", .doesNotExist), .init("tier", .notIn, ["batch"]), .init("zone", .notIn, ["x", "y"]),
        ])
        #expect(selector.description == "disk=ssd,idc in (hz-a,hz-b),gpu,!spot,tier!=batch,zone notin (x,y)")
        #expect(try LabelSelector(parsing: selector.description) == selector)
        #expect(try LabelSelector(parsing: "").isEmpty)
    }

    @Test(arguments: ["disk=", "idc in hz-a", "idc in ()", "a,,b", "bad key=1", "x in (a,)"])
    func refusesBadText(_ text: String) {
        #expect(throws: SelectorParseError.self) { try LabelSelector(parsing: text) }
    }

    @Test func matches() throws {
        let selector = try LabelSelector(parsing: "disk=ssd,!spot")
        #expect(selector.matches(["disk": "ssd"]))
        #expect(!selector.matches(["disk": "ssd", "spot": "1"]))
        #expect(!selector.matches([:]))
    }
}

@Suite struct AppSpecTests {
    static func valid() -> AppSpec {
        AppSpec(
            name: "web", team: "shop", image: "oci:/images/web:1", replicas: 3,
            resources: ResourceRequirements(request: Resources(cpuMillis: 500, memoryBytes: 1 << 30), limit: Resources(cpuMillis: 2000, memoryBytes: 0)),
            ports: [ContainerPort(name: "http", containerPort: 8080)])
    }

    @Test func validSpecHasNoProblems() {
        #expect(Self.valid().problems().isEmpty)
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let field: String
        let change: @Sendable (inout AppSpec) -> Void
        var testDescription: String { field }
    }

    static let cases: [Case] = [
        Case(field: "name") { $0.name = "Web_1" },
        Case(field: "image") { $0.image = "" },
        Case(field: "replicas") { $0.replicas = -1 },
        Case(field: "env.1BAD") { $0.env = ["1BAD": "x"] },
        Case(field: "resources.limit.cpu") { $0.resources.limit.cpuMillis = 100 },
        Case(field: "resources.request.memory") { $0.resources.request.memoryBytes = -1 },
        Case(field: "nodeSelector[0].values") { $0.nodeSelector = LabelSelector([.init("disk", .in, [])]) },
        Case(field: "spread.keys[0]") { $0.spread.keys = ["node", "idc"] },
        Case(field: "spread.maxSkew") { $0.spread.maxSkew = 0 },
        Case(field: "ports[1].name") { $0.ports.append(ContainerPort(name: "http", containerPort: 9090)) },
        Case(field: "ports[0].containerPort") { $0.ports = [ContainerPort(name: "http", containerPort: 70000)] },
        Case(field: "ssd.mountPath") { $0.ssd = SSDRequest(count: 1, minBytes: 0, mountPath: "data") },
        Case(field: "ssd.count") { $0.ssd = SSDRequest(count: 0) },
        Case(field: "volumes[0].name") { $0.volumes = [VolumeSpec(name: "Data", mountPath: "/data", sizeBytes: 1 << 30)] },
        Case(field: "volumes[1].name") { $0.volumes = [.init(name: "d", mountPath: "/a", sizeBytes: 1 << 30), .init(name: "d", mountPath: "/b", sizeBytes: 1 << 30)] },
        Case(field: "volumes[0].mountPath") { $0.volumes = [VolumeSpec(name: "d", mountPath: "data", sizeBytes: 1 << 30)] },
        Case(field: "volumes[0].mountPath") { $0.volumes = [VolumeSpec(name: "d", mountPath: "/", sizeBytes: 1 << 30)] },
        Case(field: "volumes[0].mountPath") { $0.volumes = [VolumeSpec(name: "d", mountPath: "/a/../etc", sizeBytes: 1 << 30)] },
        Case(field: "volumes[0].mountPath") { $0.volumes = [VolumeSpec(name: "d", mountPath: "/proc/x", sizeBytes: 1 << 30)] },
        Case(field: "volumes[1].mountPath") { $0.volumes = [.init(name: "a", mountPath: "/d", sizeBytes: 1 << 30), .init(name: "b", mountPath: "/d", sizeBytes: 1 << 30)] },
        Case(field: "volumes[0].mountPath") {
            $0.ssd = SSDRequest()
            $0.volumes = [VolumeSpec(name: "d", mountPath: SSDRequest.defaultMountPath, sizeBytes: 1 << 30)]
        },
        Case(field: "volumes[0].size") { $0.volumes = [VolumeSpec(name: "d", mountPath: "/d", sizeBytes: 1 << 20)] },
    ]

    @Test func volumesAndAnSSDMakeSafeTheDefault() {
        var spec = Self.valid()
        #expect(spec.failoverMode == .fast)
        spec.volumes = [VolumeSpec(name: "data", mountPath: "/data", sizeBytes: 1 << 30)]
        #expect(spec.failoverMode == .safe)
        spec.failover = .fast
        #expect(spec.failoverMode == .fast)
        spec = Self.valid()
        spec.ssd = SSDRequest()
        #expect(spec.failoverMode == .safe)
    }

    @Test(arguments: cases)
    func namesTheField(_ c: Case) {
        var spec = Self.valid()
        c.change(&spec)
        let problems = spec.problems()
        #expect(problems.map(\.field) == [c.field], "\(problems)")
    }

    @Test func limitZeroMeansUnlimited() {
        var spec = Self.valid()
        spec.resources.limit = .zero
        #expect(spec.problems().isEmpty)
    }

    @Test func hostPortsOnlyInHostMode() {
        var spec = Self.valid()
        #expect(spec.hostPortCount == 0)
        spec.network = .host
        #expect(spec.hostPortCount == 1)
    }
}

@Suite struct NodeHealthTests {
    @Test(arguments: [
        (NodeHealth.ready, 0.5, NodeHealth.ready), (.ready, 2.5, .suspect), (.ready, 5, .broken),
        (.suspect, 1, .ready), (.suspect, 6, .broken), (.broken, 0, .broken),
    ])
    func silence(_ from: NodeHealth, _ seconds: Double, _ to: NodeHealth) {
        #expect(from.after(silence: seconds, thresholds: .init()) == to)
    }

    @Test func brokenComesBackOnlyFenced() {
        #expect(NodeHealth.broken.afterHeartbeat(fenced: false) == .broken)
        #expect(NodeHealth.broken.afterHeartbeat(fenced: true) == .ready)
        #expect(NodeHealth.suspect.afterHeartbeat(fenced: false) == .ready)
    }
}
