import Core
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC
import ClientKit
import Hosting

/// What the agent reports: every instance's status for a heartbeat.
extension Agent {
    // MARK: - Reports

    /// Every instance's status for a heartbeat, and the stopped ones not yet reported.
    /// With `usage` (heartbeats only: it moves each instance's CPU sample), the cgroup figures are read too.
    func statuses(usage: Bool = true) async -> [Sigma_V1_InstanceStatus] {
        var statuses: [Sigma_V1_InstanceStatus] = []
        let now = ContinuousClock.now
        for (id, instance) in local.sorted(by: { $0.key < $1.key }) {
            var status = Sigma_V1_InstanceStatus()
            status.instanceID = id
            status.generation = instance.assignment.generation
            status.restarts = Int32(clamping: instance.restarts)
            switch instance.phase {
            case .starting:
                status.state = InstanceState.starting.rawValue
            case .running:
                status.state = InstanceState.running.rawValue
                status.ready = instance.lifecycle.readiness == nil || instance.probes.readinessPassed
                if instance.restarts > 0, let last = instance.lastEnding {
                    status.reason = "restarted \(instance.restarts) time(s); last \(instance.endNote.map { "\($0): \(last)" } ?? "\(last)")"
                }
                if !status.ready, !instance.probes.readinessDetail.isEmpty {
                    status.reason += (status.reason.isEmpty ? "" : "; ") + "not ready: \(instance.probes.readinessDetail)"
                }
            case .selfFenced:
                // Stopped, and started again once the control plane answers: it waits, as a back-off does.
                status.state = InstanceState.backOff.rawValue
                status.reason = instance.endNote ?? "self-fenced"
            case .backoff(let until):
                status.state = InstanceState.backOff.rawValue
                let wait = max(.zero, until - now)
                status.nextRetryUnixMs = Int64((Date().timeIntervalSince1970 + Double(wait.components.seconds)) * 1000)
                    + wait.components.attoseconds / 1_000_000_000_000_000
                status.reason = BackOffReason.text(waitSeconds: Int(wait.components.seconds), after: instance.lastEnding.map { "\($0)" } ?? "an ending",
                                                   restarts: instance.restarts)
                status.exitCode = instance.lastEnding?.exitCode ?? 0
            case .ended:
                let ending = instance.lastEnding ?? .failed("unknown")
                status.state = ending.state
                status.exitCode = ending.exitCode
                status.reason = instance.endNote.map { "\($0): \(ending)" } ?? "\(ending)"
            }
            status.stateCode = InstanceState(rawValue: status.state)?.code ?? .instanceStateUnspecified
            if let problem = instance.limitProblem { status.reason += (status.reason.isEmpty ? "" : "; ") + problem }
            if usage, case .running = instance.phase, let reading = await runtime.reading(id) {
                status.usage.memoryBytes = reading.memoryBytes
                status.usage.cpuMillis = cpuMillis(id, nanos: reading.cpuNanos, now: now)
                status.appliedLimit.cpuMillis = reading.applied.cpuLimitMillis
                status.appliedLimit.memoryBytes = reading.applied.memoryLimitBytes
            }
            statuses.append(status)
        }
        return statuses + finished.values.sorted { ($0.instanceID, $0.generation) < ($1.instanceID, $1.generation) }
    }

    private func cpuMillis(_ id: String, nanos: UInt64, now: ContinuousClock.Instant) -> Int64 {
        defer { local[id]?.lastCPU = (nanos, now) }
        guard let last = local[id]?.lastCPU, nanos >= last.nanos else { return 0 }
        let elapsed = (now - last.at).components
        let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        guard seconds > 0 else { return 0 }
        return Int64(Double(nanos - last.nanos) / seconds / 1e6)
    }

    /// A heartbeat carried these finished reports: they need not be sent again.
    func reported(_ statuses: [Sigma_V1_InstanceStatus]) {
        for status in statuses where status.state == InstanceState.terminated.rawValue {
            finished[Self.key(status.instanceID, status.generation)] = nil
        }
    }

    /// For sigmactl and tests: the local view.
    func snapshot() -> [String: LocalInstance] { local }
}
