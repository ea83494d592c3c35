import Core
import Manifest
import Testing

/// `AppManifest.render` writes what `AppManifest.parse` reads: every valid spec comes back equal, so
/// `sigmactl get apps -o yaml` applies back unchanged.
@Suite struct ManifestRoundTripTests {
    @Test func theFullManifestComesBackEqual() throws {
        let specs = try AppManifest.parse(ManifestFuzzTests.manifest)
        #expect(try AppManifest.parse(try AppManifest.render(specs)) == specs)
    }

    @Test func aSmallSpecReadsLikeTheManifestsPeopleWrite() throws {
        var spec = AppSpec(name: "web", image: "oci:/images/web:1", replicas: 2)
        spec.resources.request = Resources(cpuMillis: 500, memoryBytes: 256 << 20)
        spec.env = ["MODE": "true", "PORT": "8080"]
        #expect(try AppManifest.render([spec], comments: ["revision 3"]) == """
            # revision 3
            name: web
            image: oci:/images/web:1
            env:
              MODE: "true"
              PORT: "8080"
            replicas: 2
            resources:
              request:
                cpu: 500m
                memory: 256Mi
              limit:
                cpu: 0
                memory: 0

            """)
    }

    /// Seeded random specs with every field drawn, awkward strings included; each valid one survives.
    /// A field added to AppSpec fails the first check until it is drawn here too (and written by render).
    @Test func randomValidSpecsComeBackEqual() throws {
        #expect(Mirror(reflecting: AppSpec(name: "")).children.count == 23, "AppSpec has a new field: draw it below")
        var random = SeededGenerator(seed: 7)
        let words = ["web", "a", "true", "no", "1", "0x1F", "null", "~", "", " spaced ", "a: b", "- x", "#c", "[x]", "{y}",
                     "'q'", "\"dq\"", "multi\nline", "tab\there", "😀", "1.5", "2026-12-01", "*ref", "&anchor", "!tag", "%"]
        func word() -> String { words.randomElement(using: &random)! }
        func some<T>(_ make: () -> T) -> [T] { (0..<Int.random(in: 0...3, using: &random)).map { _ in make() } }
        func maybe() -> Bool { Bool.random(using: &random) }
        func probe() -> Probe {
            Probe(exec: maybe() ? ["/bin/check", word()] : [], tcpPort: maybe() ? Int.random(in: 1...65535, using: &random) : 0,
                  periodSeconds: Int.random(in: 1...60, using: &random), failureThreshold: Int.random(in: 1...10, using: &random),
                  initialDelaySeconds: Int.random(in: 0...30, using: &random), timeoutSeconds: Int.random(in: 1...10, using: &random))
        }
        var checked = 0
        for index in 0..<2_000 {
            var spec = AppSpec(name: "app-\(index)", image: maybe() ? "host" : "oci:/images/\(index):1", replicas: Int.random(in: 0...5, using: &random))
            if maybe() { spec.team = "team-\(index % 7)" }
            spec.command = some(word)
            spec.args = some(word)
            spec.env = Dictionary(some { ("VAR_\(Int.random(in: 0...9, using: &random))", word()) }, uniquingKeysWith: { $1 })
            spec.labels = Dictionary(some { (["tier", "env", "a.b/c", "x_y"].randomElement(using: &random)!, ["web", "", "1.5", "a-b"].randomElement(using: &random)!) },
                                     uniquingKeysWith: { $1 })
            let cpu = Int64.random(in: 0...8000, using: &random), memory = Int64.random(in: 0...(8 << 30), using: &random)
            spec.resources = ResourceRequirements(
                request: Resources(cpuMillis: cpu, memoryBytes: memory),
                limit: maybe() ? Resources(cpuMillis: cpu + 1000, memoryBytes: maybe() ? 0 : memory * 2) : Resources())
            if maybe() {
                spec.nodeSelector = LabelSelector(some {
                    LabelSelector.Requirement("k\(Int.random(in: 0...3, using: &random))",
                                              LabelSelector.Requirement.Operator.allCases.randomElement(using: &random)!, maybe() ? ["v1", "v2"] : [])
                })
            }
            if maybe() {
                spec.spread = SpreadPolicy(keys: maybe() ? ["idc"] : ["node", "idc"], maxSkew: Int.random(in: 1...3, using: &random), required: maybe())
            }
            if maybe() { spec.idcAffinity = IDCAffinity(required: maybe() ? ["hz-a"] : [], preferred: some { "hz-\(word())" }) }
            spec.network = NetworkMode.allCases.randomElement(using: &random)!
            spec.ports = (0..<Int.random(in: 0...2, using: &random)).map { port in
                ContainerPort(name: "p\(port)", containerPort: 1000 + port, protocol: ContainerPort.TransportProtocol.allCases.randomElement(using: &random)!)
            }
            if maybe() { spec.ssd = SSDRequest(count: Int.random(in: 1...2, using: &random), minBytes: Int64.random(in: 0...(1 << 40), using: &random), mountPath: maybe() ? SSDRequest.defaultMountPath : "/var/lib/\(index)") }
            spec.startup = StartupOrder.allCases.randomElement(using: &random)!
            spec.restartPolicy = RestartPolicy.allCases.randomElement(using: &random)!
            if maybe() { spec.config = ConfigReference(app: maybe() ? "" : "cfg-\(index)", version: Int64.random(in: 0...9, using: &random)) }
            if maybe() {
                spec.lifecycle = Lifecycle(
                    stopGracePeriodSeconds: Int.random(in: 0...60, using: &random), liveness: maybe() ? probe() : nil, readiness: maybe() ? probe() : nil,
                    selfFencing: maybe(), reload: maybe() ? ReloadAction(signal: maybe() ? "SIGHUP" : "", command: some(word)) : nil)
            }
            if maybe() {
                spec.security = SecurityContext(user: maybe() ? "1000:1000" : "", runAsNonRoot: maybe(),
                                                seccomp: SecurityContext.SeccompMode.allCases.randomElement(using: &random)!)
            }
            if maybe() { spec.failover = FailoverMode.allCases.randomElement(using: &random)! }
            spec.volumes = (0..<Int.random(in: 0...2, using: &random)).map { volume in
                // Sizes round-trip as the writer's quantities: whole MiB here, from 16 MiB.
                VolumeSpec(name: "v\(volume)", mountPath: "/srv/\(index)/v\(volume)",
                           sizeBytes: Int64.random(in: 16...(1 << 20), using: &random) << 20)
            }
            if maybe() {
                let ready = Int.random(in: 0...60, using: &random)
                spec.update = UpdateStrategy(maxUnavailable: Int.random(in: 1...5, using: &random), minReadySeconds: ready,
                                             progressDeadlineSeconds: ready + Int.random(in: 10...900, using: &random), autoRevert: maybe())
                if maybe() { spec.update?.canary = Int.random(in: 1...3, using: &random); spec.update?.autoPromote = maybe() }
            }
            guard spec.problems().isEmpty else { continue }
            let text = try AppManifest.render([spec])
            let back: [AppSpec]
            do {
                back = try AppManifest.parse(text)
            } catch {
                Issue.record("\(error)\nin:\n\(text)")
                return
            }
            #expect(back == [spec], "read back differently:\n\(text)")
            if back != [spec] { return }
            checked += 1
        }
        #expect(checked > 300, "only \(checked) valid specs drawn")
    }

    @Test func severalAppsAreSeveralDocuments() throws {
        let specs = [AppSpec(name: "a", image: "oci:/a:1"), AppSpec(name: "b", image: "host", network: .host)]
        let text = try AppManifest.render(specs)
        #expect(text.contains("---\n"))
        #expect(try AppManifest.parse(text) == specs)
    }
}
