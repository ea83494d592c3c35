import Core
import Manifest
import Testing

/// The spec parser under seeded hostile input: 10,000 mutations of a full manifest (cut, spliced, bytes
/// flipped, hostile values, deep nesting). Each parses or is refused with named problems; none crashes.
@Suite struct ManifestFuzzTests {
    static let manifest = """
        name: mysql
        team: dba
        image: oci:/images/mysql:8
        replicas: 3
        resources:
          request: {cpu: 500m, memory: 1Gi}
          limit: {cpu: 2, memory: 0}
        nodeSelector: "disk=ssd,idc in (hz-a,hz-b)"
        spread: {keys: [idc, node], maxSkew: 1, required: false}
        idcAffinity: {preferred: [hz-a]}
        network: host
        ports: [{name: mysql, containerPort: 3306}]
        ssd: {count: 1, minBytes: 100Gi, mountPath: /var/lib/mysql}
        startup: ordered
        restartPolicy: Always
        config: {app: mysql}
        lifecycle:
          stopGracePeriodSeconds: 30
          livenessProbe: {exec: [/usr/bin/mysqladmin, ping], periodSeconds: 10, failureThreshold: 3}
          readinessProbe: {tcpPort: 3306, initialDelaySeconds: 5}
          selfFencing: true
          reload: {signal: SIGHUP}
        """
    static let hostile = [
        "'; DROP TABLE apps; --", "\u{0}", "-1", "99999999999999999999", "1e309", "NaN", "~", "null", "[", "{", "}", "]",
        "&anchor", "*anchor", "!!binary AAAA", "? complex", "- - - -", "|\n  block", ">\n  folded", "\t", "\"unterminated",
        String(repeating: "[", count: 200), String(repeating: "a", count: 10_000), "😀", "%TAG ! tag:", "---\n---", "...",
    ]

    @Test func tenThousandMutationsParseOrAreRefusedWithNamedProblems() {
        var random = SeededGenerator(seed: 42)
        let original = Array(Self.manifest)
        var parsed = 0, refused = 0
        for _ in 0..<10_000 {
            var text = original
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let at = Int.random(in: 0...text.count, using: &random)
                switch Int.random(in: 0..<5, using: &random) {
                case 0: text = Array(text.prefix(at))
                case 1: text.insert(contentsOf: Self.hostile.randomElement(using: &random)!, at: at)
                case 2: if at < text.count { text[at] = Character(UnicodeScalar(UInt8.random(in: 0...127, using: &random))) }
                case 3: if at < text.count { text.remove(at: at) }
                default:
                    let from = Int.random(in: 0..<original.count, using: &random)
                    text.insert(contentsOf: original[from..<min(original.count, from + Int.random(in: 1...40, using: &random))], at: at)
                }
            }
            do {
                let specs = try AppManifest.parse(String(text))
                #expect(!specs.isEmpty)
                parsed += 1
            } catch {
                #expect(!error.problems.isEmpty && error.problems.allSatisfy { !$0.field.isEmpty && !$0.reason.isEmpty }, "\(error.problems.map { "[\($0.field)] [\($0.reason)]" })")
                refused += 1
            }
        }
        #expect(parsed + refused == 10_000)
        #expect(parsed > 100 && refused > 1000, "parsed \(parsed), refused \(refused)")
    }
}
