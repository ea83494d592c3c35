import Core
import Foundation
import NodeRuntime
import Protocol

/// One instance's probe bookkeeping (reset at every start).
struct ProbeState: Sendable {
    enum Kind: Sendable, Hashable { case liveness, readiness }

    var readinessPassed = false
    var readinessDetail = ""
    var failures: [Kind: Int] = [:]
    var next: [Kind: ContinuousClock.Instant] = [:]
    var inFlight: Set<Kind> = []
}

/// Probes (liveness restarts, readiness gates) and self-fencing.
extension Agent {
    /// Starts the probes that are due. Each runs on its own; its result comes back through `probed`.
    func scheduleProbes(now: ContinuousClock.Instant) {
        for (id, instance) in local where !instance.killing {
            guard case .running(let since) = instance.phase else { continue }
            let lifecycle = instance.lifecycle
            for (kind, probe) in [(ProbeState.Kind.liveness, lifecycle.liveness), (.readiness, lifecycle.readiness)] {
                guard let probe, !instance.probes.inFlight.contains(kind) else { continue }
                let due = instance.probes.next[kind] ?? since + .seconds(probe.initialDelaySeconds)
                guard due <= now else {
                    local[id]?.probes.next[kind] = due
                    continue
                }
                local[id]?.probes.next[kind] = now + .seconds(probe.periodSeconds)
                local[id]?.probes.inFlight.insert(kind)
                let generation = instance.assignment.generation
                let ip = instance.assignment.ip
                Task { [runtime] in
                    let (passed, detail) = await Self.run(probe, on: id, ip: ip, runtime: runtime)
                    await self.probed(id, generation: generation, kind: kind, passed: passed, detail: detail)
                }
            }
        }
    }

    static func run(_ probe: Probe, on id: String, ip: String, runtime: InstanceRuntime) async -> (Bool, String) {
        let timeout = Duration.seconds(probe.timeoutSeconds)
        if !probe.exec.isEmpty {
            do {
                let result = try await runtime.exec(id, probe.exec, timeout: timeout)
                if result.succeeded { return (true, "") }
                let output = (result.errors + result.output).trimmingCharacters(in: .whitespacesAndNewlines)
                return (false, "\(probe.exec.joined(separator: " ")) exited \(result.status)\(output.isEmpty ? "" : ": \(output.prefix(200))")")
            } catch {
                return (false, "\(error)")
            }
        }
        guard !ip.isEmpty else { return (false, "the instance has no IP to probe") }
        let accepts = await TCPCheck.accepts(ip, probe.tcpPort, timeout: timeout)
        return (accepts, accepts ? "" : "nothing accepts connections at \(ip):\(probe.tcpPort)")
    }

    func probed(_ id: String, generation: Int64, kind: ProbeState.Kind, passed: Bool, detail: String) {
        guard var instance = local[id], instance.assignment.generation == generation else { return }
        instance.probes.inFlight.remove(kind)
        guard case .running = instance.phase, !instance.killing else {
            local[id] = instance
            return
        }
        let lifecycle = instance.lifecycle
        if passed {
            instance.probes.failures[kind] = 0
            if kind == .readiness {
                if !instance.probes.readinessPassed { logger.info("ready", metadata: ["instance": "\(id)"]) }
                instance.probes.readinessPassed = true
                instance.probes.readinessDetail = ""
            }
            local[id] = instance
            return
        }
        let failures = (instance.probes.failures[kind] ?? 0) + 1
        instance.probes.failures[kind] = failures
        let threshold = (kind == .liveness ? lifecycle.liveness : lifecycle.readiness)?.failureThreshold ?? 1
        if kind == .readiness {
            instance.probes.readinessDetail = detail
            if failures >= threshold { instance.probes.readinessPassed = false }
            local[id] = instance
            return
        }
        guard failures >= threshold else {
            local[id] = instance
            return
        }
        logger.notice("liveness probe failed; stopping", metadata: ["instance": "\(id)", "detail": "\(detail)"])
        instance.killing = true
        local[id] = instance
        Task { await self.killForLiveness(id, generation: generation, detail: "\(detail) (\(failures) times)") }
    }

    /// A failed liveness probe: stop the instance, then its restart policy decides.
    func killForLiveness(_ id: String, generation: Int64, detail: String) async {
        guard let instance = local[id], instance.assignment.generation == generation else { return }
        let ending = await runtime.stop(id, grace: grace(instance.assignment))
        guard var current = local[id], current.assignment.generation == generation, current.killing else { return }
        current.killing = false
        current.endNote = "liveness probe failed: \(detail)"
        local[id] = current
        handleEnding(id, ending)
    }

    // MARK: - Self-fencing

    /// The scheduler answered: the control plane is reachable. Self-fenced instances may run again (if still
    /// assigned here; the next pass decides).
    /// The scheduler answered; with `granted` (not told to fence first), self-fenced instances and those
    /// fenced by a lapsed lease may start again.
    func contact(brokenAfter: Duration?, granted: Bool = true) {
        lastContact = .now
        if let brokenAfter { self.brokenAfter = brokenAfter }
        guard granted else { return }
        for (id, instance) in local where instance.phase == .selfFenced {
            move(id, to: .backoff(until: .now))
            logger.notice("control plane back; a self-fenced instance may start again", metadata: ["instance": "\(id)"])
        }
    }

    /// Stops the instances of self-fencing apps when the control plane has been out of reach for longer than
    /// the Broken timeout: by then the scheduler may have started them elsewhere.
    func selfFenceIfCutOff() async {
        guard let brokenAfter, ContinuousClock.now - lastContact > brokenAfter else { return }
        let silent = Int((ContinuousClock.now - lastContact).components.seconds)
        for (id, instance) in local where instance.lifecycle.selfFencing && !instance.killing {
            guard case .running = instance.phase else { continue }
            logger.notice("self-fencing: no control plane", metadata: ["instance": "\(id)", "silent": "\(silent)s"])
            local[id]?.killing = true
            let ending = await runtime.stop(id, grace: grace(instance.assignment))
            guard var current = local[id] else { continue }
            current.killing = false
            guard current.move(to: .selfFenced) else {
                local[id]?.killing = false
                refused(id, current.phase, .selfFenced)
                continue
            }
            current.lastEnding = ending
            current.endNote = "self-fenced: no control plane for \(silent)s"
            local[id] = current
        }
    }
}
