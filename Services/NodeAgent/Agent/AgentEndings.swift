import Core
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC
import ClientKit
import Hosting

/// Live limit changes, stops, endings and the restart policy with back-off.
extension Agent {
    /// Only the limit fields are written back, and only to the same generation still here: the actor runs
    /// other work across each await (a fence, a stop), and a copy taken before one would bring it back.
    func applyLimits(_ id: String) async {
        guard let instance = local[id] else { return }
        let generation = instance.assignment.generation
        let limits = LaunchPlan.limits(instance.assignment, node: settings.node)
        let applied: CgroupLimits?, problem: String?
        do {
            applied = try await runtime.update(id, limits: limits).applied
            problem = nil
            logger.info("limits changed live", metadata: ["instance": "\(id)", "cpu": "\(limits.cpuLimitMillis)m",
                                                          "memory": "\(limits.memoryLimitBytes)"])
        } catch {
            problem = "\(error)"
            applied = await runtime.reading(id)?.applied
            logger.warning("limit change refused", metadata: ["instance": "\(id)", "error": "\(error)"])
        }
        guard local[id]?.assignment.generation == generation else { return }
        local[id]?.applied = applied
        local[id]?.limitProblem = problem
    }

    /// Stops an instance and removes what it used. With `report`, its end goes into the next heartbeat.
    func stop(_ id: String, reason: String, report: Bool) async {
        guard let instance = local[id] else { return }
        local[id] = nil
        arrivals[id] = nil
        configWatchers.removeValue(forKey: id)?.cancel()
        let ending: InstanceEnding
        if case .ended = instance.phase, let last = instance.lastEnding {
            ending = last
        } else if case .backoff = instance.phase, let last = instance.lastEnding {
            ending = last
        } else if case .selfFenced = instance.phase, let last = instance.lastEnding {
            ending = last
        } else {
            ending = await runtime.stop(id, grace: grace(instance.assignment))
        }
        await runtime.cleanUp(id, removeFolder: true)
        await hostPorts.unpublish(instance: id)
        await network.detach(id)
        releaseStorage(instance.assignment)
        removalReasons[id] = nil
        disowned.remove(id)
        logger.info("stopped", metadata: ["instance": "\(id)", "reason": "\(reason)", "ending": "\(ending)"])
        guard report else { return }
        var status = Sigma_V1_InstanceStatus()
        status.instanceID = id
        status.generation = instance.assignment.generation
        status.state = InstanceState.terminated.rawValue
        status.exitCode = ending.exitCode
        status.reason = "\(reason) (\(ending))"
        finished[Self.key(id, instance.assignment.generation)] = status
    }

    /// The app's grace period, or the agent's default for specs that set none.
    func grace(_ assignment: Sigma_V1_Assignment) -> Duration {
        assignment.appSpec.lifecycle.map { .seconds($0.stopGracePeriodSeconds) } ?? settings.stopGrace
    }

    /// Checks running instances for an ending, and decides by the restart policy.
    func watchEndings() async {
        for (id, instance) in local where !instance.killing {
            guard case .running = instance.phase else { continue }
            if let ending = await runtime.ending(of: id), local[id]?.killing == false { handleEnding(id, ending) }
        }
    }

    func handleEnding(_ id: String, _ ending: InstanceEnding) {
        guard var instance = local[id] else { return }
        instance.lastEnding = ending
        if case .fenced = ending {
            // Its monitor killed it when the node's lease lapsed: it starts again once the scheduler grants one.
            guard instance.move(to: .selfFenced) else { return refused(id, instance.phase, .selfFenced) }
            instance.endNote = "\(ending)"
            local[id] = instance
            logger.notice("the node's lease lapsed; the instance was killed", metadata: ["instance": "\(id)"])
            return
        }
        let policy = instance.assignment.appSpec.restartPolicy
        let restart = switch policy {
        case .always: true
        case .onFailure: !ending.succeeded
        case .never: false
        }
        if restart {
            var ranLong = false
            if case .running(let since) = instance.phase { ranLong = ContinuousClock.now - since >= settings.restartBackoffReset }
            if ranLong { instance.restarts = 0 }
            let delay = backOff(&instance)
            logger.info("ended; restarting", metadata: ["instance": "\(id)", "ending": "\(ending)", "in": "\(delay)"])
        } else {
            guard instance.move(to: .ended) else { return refused(id, instance.phase, .ended) }
            logger.info("ended", metadata: ["instance": "\(id)", "ending": "\(ending)"])
        }
        local[id] = instance
    }

    /// Moves a local instance to `next` if the agent's lifecycle allows it.
    func move(_ id: String, to next: LocalInstance.Phase) {
        guard var instance = local[id] else { return }
        guard instance.move(to: next) else { return refused(id, instance.phase, next) }
        local[id] = instance
    }

    /// A move the agent's lifecycle does not have: nothing changes, and it is logged (it is a bug).
    func refused(_ id: String, _ from: LocalInstance.Phase, _ to: LocalInstance.Phase) {
        logger.error("refused a move of the agent's lifecycle", metadata: ["instance": "\(id)", "from": "\(from.kind)", "to": "\(to.kind)"])
    }

    /// Counts a restart and waits before it: the first wait `restartBackoff`, doubling up to `restartBackoffLimit`.
    private func backOff(_ instance: inout LocalInstance) -> Duration {
        let delay = min(settings.restartBackoff * (1 << min(instance.restarts, 20)), settings.restartBackoffLimit)
        instance.restarts += 1
        if !instance.move(to: .backoff(until: .now + delay)) { refused(instance.assignment.instanceID, instance.phase, .backoff(until: .now)) }
        return delay
    }

    /// A start that may work later (the ConfigCenter was out of reach): back off as after a crash.
    func retryLater(_ id: String, generation: Int64, reason: String) {
        guard var instance = local[id], instance.assignment.generation == generation else { return }
        instance.lastEnding = .failed(reason)
        let delay = backOff(&instance)
        local[id] = instance
        logger.warning("cannot start yet; retrying", metadata: ["instance": "\(id)", "reason": "\(reason)", "in": "\(delay)"])
    }
}
