import ClientKit
import Core
import Manifest
import Protocol
import Testing

/// The wire converts to and from Core's `AppSpec` at one place (ClientKit/AppSpecWire.swift), and an unset
/// wire field means Core's default, as docs/protocol.md says.
@Suite struct SpecWireTests {
    @Test func unsetWireFieldsTakeCoresDefaults() {
        var wire = Sigma_V1_AppSpec()
        wire.name = "web"
        wire.image = "oci:/images/web:1"
        wire.replicas = 1
        wire.lifecycle = Sigma_V1_Lifecycle()
        wire.ssd = Sigma_V1_SSDClaim()
        wire.ssd.count = 1
        wire.security = Sigma_V1_Security()
        let (spec, problems) = AppSpec.from(wire: wire)
        #expect(problems.isEmpty)
        #expect(spec == AppSpec(name: "web", image: "oci:/images/web:1", ssd: SSDRequest(), lifecycle: Lifecycle(), security: SecurityContext()))
        #expect(spec.lifecycle?.stopGracePeriodSeconds == Lifecycle.defaultGracePeriodSeconds)
        // A grace period of 0 that is set is no grace at all.
        wire.lifecycle.stopGracePeriodSeconds = 0
        #expect(AppSpec.from(wire: wire).spec.lifecycle?.stopGracePeriodSeconds == 0)
    }

    /// A field added to AppSpec fails the first check until it is set in the manifest below (and converted).
    @Test func aFullSpecCrossesTheWireUnchanged() throws {
        #expect(Mirror(reflecting: AppSpec(name: "")).children.count == 23, "AppSpec has a new field: set it below")
        let spec = try #require(try AppManifest.parse("""
            name: db
            team: dba
            labels: {tier: db, env: prod}
            image: oci:/images/db:1
            command: [/usr/sbin/db]
            env: {MODE: "on"}
            replicas: 3
            resources: {request: {cpu: 500m, memory: 1Gi}, limit: {cpu: 2, memory: 2Gi}}
            nodeSelector: "disk=ssd,idc in (hz-a,hz-b),!gpu"
            spread: {keys: [idc], maxSkew: 2, required: true}
            idcAffinity: {required: [hz-a, hz-b], preferred: [hz-a]}
            network: host
            ports: [{name: db, containerPort: 3306}, {name: g, containerPort: 7946, protocol: udp}]
            ssd: {count: 2, minBytes: 100Gi, mountPath: /var/lib/db}
            startup: ordered
            restartPolicy: Never
            config: {app: db, version: 2}
            lifecycle:
              stopGracePeriodSeconds: 0
              livenessProbe: {exec: [/bin/check], periodSeconds: 5}
              readinessProbe: {tcpPort: 3306, initialDelaySeconds: 5, timeoutSeconds: 2, failureThreshold: 5}
              selfFencing: true
              reload: {command: [/bin/reload]}
            security: {user: "1000:1000", runAsNonRoot: true, seccomp: Unconfined}
            failover: fast
            volumes: [{name: data, mountPath: /var/lib/db/data, size: 10Gi}, {name: wal, mountPath: /wal, size: 512Mi}]
            update: {maxUnavailable: 2, minReadySeconds: 15, progressDeadlineSeconds: 300, autoRevert: true, canary: 1, autoPromote: true}
            """).first)
        let back = AppSpec.from(wire: spec.wire)
        #expect(back.problems.isEmpty)
        #expect(back.spec == spec)
    }
}
