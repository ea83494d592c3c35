import Core
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC
import ClientKit
import Hosting
actor Agent {
    let settings: AgentSettings
    let runtime: InstanceRuntime
    let network: NodeNetwork
    let config: ConfigDelivery
    let hostPorts: HostPorts
    let logger: Logger
    /// One config long poll per instance with config.
    var configWatchers: [String: Task<Void, Never>] = [:]

    /// What the scheduler wants: the latest assignment of every instance bound here.
    private(set) var desired: [String: Sigma_V1_Assignment] = [:]
    /// Why an instance left `desired` ("deleted", "migrated", ...), for the stop reason.
    var removalReasons: [String: String] = [:]
    var local: [String: LocalInstance] = [:]
    /// Instances stopped on the scheduler's word: reported once as Terminated, then forgotten. Keyed by
    /// `Agent.key(id, generation)`: two generations of one instance may both wait to be reported.
    var finished: [String: Sigma_V1_InstanceStatus] = [:]
    /// Volumes removed on the scheduler's word, to say so in the next heartbeat.
    var releasedVolumes: [Sigma_V1_VolumeRef] = []
    /// Generations the scheduler asked to stop before this agent ever had them (a removal overtook the
    /// assignment): each id's highest such generation, never started here, with when it was asked.
    var refusedGenerations: [String: (generation: Int64, at: ContinuousClock.Instant)] = [:]
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>
    let overlayWake: AsyncStream<Void>.Continuation
    let overlayWakes: AsyncStream<Void>
    /// Instances the scheduler no longer counts as this node's (stale generation): stopped, then reported Terminated once.
    var disowned: Set<String> = []
    /// Heartbeat refusals already logged.
    private var loggedRefusals: Set<String> = []
    /// When each assignment not yet started arrived (for the start latency).
    var arrivals: [String: ContinuousClock.Instant] = [:]
    /// Every instance's route, by instance id (the overlay's input).
    var routes: [String: Sigma_V1_Route] = [:]
    /// The last answer from the scheduler, and how long a silence makes a node Broken (self-fencing).
    var lastContact = ContinuousClock.now
    var brokenAfter: Duration?
    /// Asks the scheduler for an instance's fresh token (IssueToken); nil: instances get none.
    var issueToken: (@Sendable (_ instance: String, _ generation: Int64) async throws -> String)?

    /// Where an instance finds its current token (also in SIGMA_TOKEN at its start; a restarted agent
    /// issues a fresh one and rewrites only this file).
    static let tokenPath = "/.sigma/token"

    func useTokens(_ issue: @escaping @Sendable (_ instance: String, _ generation: Int64) async throws -> String) {
        issueToken = issue
    }

    init(settings: AgentSettings, runtime: InstanceRuntime, network: NodeNetwork, config: ConfigDelivery, hostPorts: HostPorts,
         logger: Logger) {
        self.settings = settings
        self.runtime = runtime
        self.network = network
        self.config = config
        self.hostPorts = hostPorts
        self.logger = logger
        (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        (overlayWakes, overlayWake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    // MARK: - What the scheduler says

    /// The key of one generation of an instance (`finished`).
    static func key(_ id: String, _ generation: Int64) -> String { "\(id)/\(generation)" }

    /// Whether `assignment` is a generation the scheduler already asked to stop here.
    private func isRefused(_ assignment: Sigma_V1_Assignment) -> Bool {
        guard let refused = refusedGenerations[assignment.instanceID] else { return false }
        return assignment.generation <= refused.generation
    }

    /// The whole desired state (a snapshot): replaces what was known.
    func replaceAssignments(_ assignments: [Sigma_V1_Assignment]) {
        let incoming = Dictionary(assignments.filter { !isRefused($0) }.map { ($0.instanceID, $0) },
                                  uniquingKeysWith: { a, b in a.generation >= b.generation ? a : b })
        for (id, known) in desired where incoming[id] == nil {
            removalReasons[id] = removalReasons[id] ?? "removed"
            if local[id] == nil { neverStarted(known, reason: removalReasons[id]!) }
        }
        let now = ContinuousClock.now
        for (id, assignment) in incoming where desired[id]?.generation != assignment.generation { arrivals[id] = now }
        desired = incoming
        wake.yield()
    }

    /// One pushed change.
    func apply(_ event: Sigma_V1_AssignmentEvent) {
        let id = event.assignment.instanceID
        if event.removed {
            if let known = desired[id], event.assignment.generation != 0, known.generation > event.assignment.generation {
                return  // an old generation's removal; the newer one stays
            }
            let known = desired.removeValue(forKey: id)
            removalReasons[id] = event.reason.isEmpty ? "removed" : event.reason
            if let known, local[id] == nil { neverStarted(known, reason: removalReasons[id]!) }
        } else {
            if let known = desired[id], known.generation > event.assignment.generation { return }
            if isRefused(event.assignment) { return }
            if desired[id]?.generation != event.assignment.generation { arrivals[id] = .now }
            desired[id] = event.assignment
            removalReasons[id] = nil
        }
        wake.yield()
    }

    /// The scheduler says these generations are no longer this node's: each is stopped if it is the one that
    /// runs here (a newer generation of the same instance stays). `ids` are from a scheduler that predates
    /// generations in its answer: those name whatever generation runs.
    func disown(_ refs: [Sigma_V1_InstanceRef], ids: [String] = []) {
        let named = Set(refs.map(\.instanceID))
        let all = refs.map { ($0.instanceID, $0.generation) }
            + ids.filter { !named.contains($0) }.compactMap { id in local[id].map { (id, $0.assignment.generation) } }
        for (id, generation) in all {
            guard let instance = local[id], instance.assignment.generation == generation else {
                notHere(id, generation: generation)
                continue
            }
            disowned.insert(id)
            if desired[id]?.generation == instance.assignment.generation { desired[id] = nil }
            removalReasons[id] = "fenced: generation \(instance.assignment.generation) is no longer this node's"
        }
        wake.yield()
    }

    /// The scheduler asks to stop a generation that does not run here: one assigned but not started yet is
    /// dropped, one never seen is refused for good (its assignment may still be on its way); either way it is
    /// reported Terminated, so the scheduler knows this node will never run it.
    private func notHere(_ id: String, generation: Int64) {
        if let known = desired[id], known.generation == generation {
            desired[id] = nil
            neverStarted(known, reason: "fenced: generation \(generation) is no longer this node's")
            return
        }
        guard local[id].map({ $0.assignment.generation < generation }) ?? true else { return }
        let now = ContinuousClock.now
        if (refusedGenerations[id]?.generation ?? -1) < generation { refusedGenerations[id] = (generation, now) }
        refusedGenerations = refusedGenerations.filter { now - $0.value.at < .seconds(600) }
        var status = Sigma_V1_InstanceStatus()
        status.instanceID = id
        status.generation = generation
        status.state = InstanceState.terminated.rawValue
        status.reason = "never ran on this node"
        finished[Self.key(id, generation)] = status
    }

    /// Entries of a heartbeat the scheduler refused (each said once in the log; the rest of it counted).
    func refused(_ entries: [Sigma_V1_RefusedEntry]) {
        for entry in entries where loggedRefusals.insert("\(entry.instanceID)/\(entry.generation)/\(entry.message)").inserted {
            logger.warning("heartbeat entry refused", metadata: [
                "instance": "\(entry.instanceID)", "generation": "\(entry.generation)", "error": "\(entry.message)",
            ])
        }
        if loggedRefusals.count > 10_000 { loggedRefusals.removeAll() }
    }

    /// An assignment that left before it ever started here (an ordered start still waiting, a delete right after
    /// the binding): reported Terminated at once, so its instance ends.
    private func neverStarted(_ assignment: Sigma_V1_Assignment, reason: String) {
        var status = Sigma_V1_InstanceStatus()
        status.instanceID = assignment.instanceID
        status.generation = assignment.generation
        status.state = InstanceState.terminated.rawValue
        status.reason = "\(reason) before it started"
        finished[Self.key(assignment.instanceID, assignment.generation)] = status
        arrivals[assignment.instanceID] = nil
    }

    func poke() { wake.yield() }

    /// Fencing: takes `assignments` as the whole truth and stops, before anything else, every instance they do
    /// not hold at the same generation, each reported Terminated once (the scheduler settles prior copies by it).
    func fence(_ assignments: [Sigma_V1_Assignment]) async {
        replaceAssignments(assignments)
        for (id, instance) in local where desired[id]?.generation != instance.assignment.generation {
            await stop(id, reason: "fenced", report: true)
        }
    }

    // MARK: - Re-adoption

    /// After a restart: instances that still run and match an assignment are taken over as they are; the
    /// rest is stopped and removed. Call once, with the snapshot in `desired`, before reconciling.
    func adopt() async {
        // Rules and forwarding entries of a previous run are made anew from what is wanted now.
        await hostPorts.removeTable()
        await network.resetOverlay()
        for found in await runtime.found() {
            let id = found.record.id
            let generation = Int64(found.record.labels["generation"] ?? "") ?? -1
            guard let assignment = desired[id], assignment.generation == generation else {
                if found.ending == nil {
                    logger.notice("stopping an orphan", metadata: ["instance": "\(id)", "generation": "\(generation)"])
                    _ = await runtime.stop(id, grace: settings.stopGrace)
                }
                await runtime.cleanUp(id, removeFolder: true)
                await network.detach(id)
                continue
            }
            var instance = LocalInstance(assignment: assignment, phase: .running(since: .now), pid: found.record.pid)
            instance.applied = await runtime.reading(id)?.applied
            if let ending = found.ending {
                // It ended while no agent watched: as a running instance's ending, the policy decides.
                instance.lastEnding = ending
                local[id] = instance
                handleEnding(id, ending)
            } else {
                logger.info("re-adopted", metadata: ["instance": "\(id)", "pid": "\(found.record.pid)"])
                local[id] = instance
                await reissueToken(assignment)
                do {
                    try await publishPorts(assignment)
                } catch {
                    logger.warning("host ports of a re-adopted instance not published", metadata: ["instance": "\(id)", "error": "\(error)"])
                }
            }
        }
    }

    // MARK: - Reconcile

    /// The scheduler allows it, and a safe-mode instance also needs the node's lease to hold (its monitor
    /// would refuse it otherwise).
    private func mayStart(_ assignment: Sigma_V1_Assignment) -> Bool {
        assignment.mayStart && (assignment.appSpec.failoverMode == .fast || runtime.lease.holds)
    }

    /// Runs passes until cancelled: one per wake, plus one per watch interval for endings and back-offs.
    func run() async {
        let ticker = Task { [wake, settings] in
            while !Task.isCancelled {
                try? await Task.sleep(for: settings.watchInterval)
                wake.yield()
            }
        }
        let overlay = Task { await runOverlay() }
        defer {
            ticker.cancel()
            overlay.cancel()
            overlayWake.finish()
        }
        for await _ in wakes {
            if Task.isCancelled { break }
            await pass()
        }
    }

    /// One reconcile pass: notice endings, stop what is not wanted, apply live limit changes, start what is
    /// missing (in parallel), restart what the policy allows.
    func pass() async {
        await watchEndings()
        await selfFenceIfCutOff()
        let now = ContinuousClock.now
        scheduleProbes(now: now)

        // Stop what is no longer wanted here, or runs an older generation.
        for (id, instance) in local {
            let wanted = desired[id]
            if let wanted, wanted.generation == instance.assignment.generation { continue }
            let reason = wanted != nil ? "replaced by generation \(wanted!.generation)" : removalReasons[id] ?? "removed"
            await stop(id, reason: reason, report: wanted == nil || disowned.contains(id))
        }

        var starts: [Sigma_V1_Assignment] = []
        for (id, assignment) in desired {
            guard var instance = local[id] else {
                if mayStart(assignment) { starts.append(assignment) }
                continue
            }
            let limitsChanged = instance.assignment.resources != assignment.resources
            instance.assignment = assignment
            local[id] = instance
            if limitsChanged, case .running = instance.phase { await applyLimits(id) }
            if case .backoff(let until) = instance.phase, until <= now, mayStart(assignment) { starts.append(assignment) }
        }
        guard !starts.isEmpty else { return }
        for assignment in starts where local[assignment.instanceID] == nil {
            local[assignment.instanceID] = LocalInstance(assignment: assignment, phase: .starting)
        }
        for assignment in starts { if case .backoff = local[assignment.instanceID]?.phase { move(assignment.instanceID, to: .starting) } }
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            for assignment in starts {
                if running == settings.startConcurrency {
                    await group.next()
                    running -= 1
                }
                group.addTask { await self.start(assignment) }
                running += 1
            }
        }
    }
}
