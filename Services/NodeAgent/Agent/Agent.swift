import Core
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC
import ClientKit
import Hosting

/// How the agent behaves; flags of `sigma-agent`.
struct AgentSettings: Sendable {
    var node: NodeContext
    var stopGrace: Duration = .seconds(10)
    /// First wait before restarting an instance that ended; doubles each time up to `restartBackoffLimit`, and
    /// starts over once an instance ran for `restartBackoffReset`.
    var restartBackoff: Duration = .seconds(1)
    var restartBackoffLimit: Duration = .seconds(60)
    var restartBackoffReset: Duration = .seconds(60)
    /// How often running instances are checked for an ending.
    var watchInterval: Duration = .milliseconds(100)
    /// Parallel starts in one pass.
    var startConcurrency = 8
}

/// One instance this node runs (or ran), as the agent sees it.
struct LocalInstance: Sendable {
    enum Phase: Sendable, Equatable {
        case starting
        case running(since: ContinuousClock.Instant)
        /// Ended; restarted at `until` (the restart policy allowed it).
        case backoff(until: ContinuousClock.Instant)
        /// Ended for good (the restart policy said no, or it could not start).
        case ended
        /// Stopped by its own node: the control plane was out of reach too long (self-fencing apps).
        case selfFenced

        /// The phase of the agent's lifecycle (Shared/Core's `AgentPhase`, which says which moves exist).
        var kind: AgentPhase {
            switch self {
            case .starting: .starting
            case .running: .running
            case .backoff: .backOff
            case .ended: .ended
            case .selfFenced: .selfFenced
            }
        }
    }

    var assignment: Sigma_V1_Assignment
    var phase: Phase
    var pid: Int32 = 0
    var restarts = 0
    var lastEnding: InstanceEnding?
    var network: InstanceNetwork?
    var applied: CgroupLimits?
    var limitProblem: String?
    var lastCPU: (nanos: UInt64, at: ContinuousClock.Instant)?
    /// From the assignment's arrival to the process running, for its first start.
    var startLatency: Duration?
    var probes = ProbeState()
    /// Being stopped by the agent itself (a failed liveness probe): its ending is handled there, not by the watch.
    var killing = false
    /// Why the agent ended it, when it did ("liveness probe failed ...", "self-fenced ...").
    var endNote: String?
    /// The ConfigCenter version written into it.
    var configVersion: Int64?

    var lifecycle: Lifecycle { assignment.appSpec.lifecycle ?? Lifecycle() }

    /// Moves to `next` when the agent's lifecycle has that move (`AgentPhase.transitions`); otherwise nothing
    /// changes and the answer is false (the caller logs it: a bug, never a state to act on).
    @discardableResult
    mutating func move(to next: Phase) -> Bool {
        guard phase.kind.canMove(to: next.kind) else { return false }
        phase = next
        return true
    }
}

/// The node agent's state: what the scheduler wants here (assignments) against what runs (the runtime), with
/// the reconcile pass that moves one toward the other. Every change wakes the pass; a pass only acts on a
/// copy of the state it read, and writes back what it did.
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
    private var removalReasons: [String: String] = [:]
    var local: [String: LocalInstance] = [:]
    /// Instances stopped on the scheduler's word: reported once as Terminated, then forgotten.
    private var finished: [String: Sigma_V1_InstanceStatus] = [:]
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>
    let overlayWake: AsyncStream<Void>.Continuation
    let overlayWakes: AsyncStream<Void>
    /// Instances the scheduler no longer counts as this node's (stale generation): stopped without a report.
    private var disowned: Set<String> = []
    /// Heartbeat refusals already logged.
    private var loggedRefusals: Set<String> = []
    /// When each assignment not yet started arrived (for the start latency).
    private var arrivals: [String: ContinuousClock.Instant] = [:]
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

    /// The whole desired state (a snapshot): replaces what was known.
    func replaceAssignments(_ assignments: [Sigma_V1_Assignment]) {
        let incoming = Dictionary(assignments.map { ($0.instanceID, $0) }, uniquingKeysWith: { a, b in a.generation >= b.generation ? a : b })
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
            guard let instance = local[id], instance.assignment.generation == generation else { continue }
            disowned.insert(id)
            if desired[id]?.generation == instance.assignment.generation { desired[id] = nil }
            removalReasons[id] = "fenced: generation \(instance.assignment.generation) is no longer this node's"
        }
        wake.yield()
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
        finished[assignment.instanceID] = status
        arrivals[assignment.instanceID] = nil
    }

    func poke() { wake.yield() }

    /// Fencing: takes `assignments` as the whole truth and stops, before anything else, every instance they do
    /// not hold at the same generation (without reporting them: they are not this node's any more).
    func fence(_ assignments: [Sigma_V1_Assignment]) async {
        replaceAssignments(assignments)
        for (id, instance) in local where desired[id]?.generation != instance.assignment.generation {
            await stop(id, reason: "fenced", report: false)
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
            await stop(id, reason: reason, report: wanted == nil && !disowned.contains(id))
        }

        var starts: [Sigma_V1_Assignment] = []
        for (id, assignment) in desired {
            guard var instance = local[id] else {
                if assignment.mayStart { starts.append(assignment) }
                continue
            }
            let limitsChanged = instance.assignment.resources != assignment.resources
            instance.assignment = assignment
            local[id] = instance
            if limitsChanged, case .running = instance.phase { await applyLimits(id) }
            if case .backoff(let until) = instance.phase, until <= now, assignment.mayStart { starts.append(assignment) }
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

    private func start(_ assignment: Sigma_V1_Assignment) async {
        let id = assignment.instanceID
        var fetched: Sigma_V1_FetchConfigResponse?
        do {
            // The network is wired while the runtime prepares the bundle; runc runs once both are done.
            var wiring: Task<InstanceNetwork, Error>?
            var namespace: String?
            if !assignment.ip.isEmpty {
                guard !assignment.gateway.isEmpty else {
                    throw RuntimeError.startFailed(
                        id: id, reason: "the IP pool of \(assignment.ip) has no gateway; give the pool one (sigmactl alloc create-pool NAME CIDR --gateway IP)")
                }
                wiring = Task { [network] in
                    try await network.attach(id, ip: assignment.ip, prefixLength: Int(assignment.prefixLength), gateway: assignment.gateway)
                }
                namespace = network.namespacePath(for: id)
            }
            // Config first: a ConfigCenter out of reach is retried with back-off, like a crash.
            if assignment.appSpec.config != nil {
                do {
                    fetched = try await config.fetch(app: assignment.app, instance: id)
                } catch {
                    wiring?.cancel()
                    _ = try? await wiring?.value
                    await network.detach(id)
                    retryLater(id, generation: assignment.generation, reason: "\(error)")
                    return
                }
            }
            // Its token, fresh (the database keeps only a hash); the scheduler out of reach is retried like config.
            var issued: String?
            if let issueToken {
                do {
                    issued = try await issueToken(id, assignment.generation)
                } catch {
                    wiring?.cancel()
                    _ = try? await wiring?.value
                    await network.detach(id)
                    retryLater(id, generation: assignment.generation, reason: "cannot get the instance's token: \(error)")
                    return
                }
            }
            var request = try LaunchPlan.request(
                assignment, node: settings.node, configVersion: fetched?.version, ssdMounts: try await ssdMounts(assignment))
            request.networkNamespace = namespace
            let token = issued
            if let token {
                request.env["SIGMA_TOKEN"] = token
                request.env["SIGMA_TOKEN_FILE"] = Self.tokenPath
            }
            // No command in the spec: the startup script from the ConfigCenter runs (else the image's own).
            let useScript = request.command.isEmpty && request.args.isEmpty && !(fetched?.script.isEmpty ?? true)
            if useScript { request.command = ["/bin/sh", ConfigDelivery.scriptPath] }
            let rootfs = runtime.directory(of: id) + "/rootfs"
            let hostMode = assignment.appSpec.runsOnHost
            let record: LaunchRecord
            do {
                let ssdSources = request.mounts.map(\.source)
                record = try await runtime.start(request, labels: LaunchPlan.labels(assignment)) { [wiring, fetched, self] user in
                    _ = try await wiring?.value
                    if let fetched {
                        try ConfigDelivery.write(fetched, rootfs: rootfs, hostMode: hostMode, script: useScript, owner: user)
                    }
                    if let token { try Self.writeToken(token, rootfs: rootfs, owner: user) }
                    // Its SSDs' top folders are its user's (the contents are what it wrote).
                    if user.uid != 0 { for source in ssdSources { chown(source, user.uid, user.gid) } }
                    try await self.publishPorts(assignment)
                }
            } catch {
                _ = try? await wiring?.value  // never leave the wiring running behind a failed start
                await hostPorts.unpublish(instance: id)
                throw error
            }
            let attached = try? await wiring?.value
            guard var instance = local[id], instance.assignment.generation == assignment.generation else {
                // Stopped while it started (deleted, fenced): what just started must not run on unowned.
                if local[id] == nil { await discardStarted(assignment) }
                return
            }
            guard instance.move(to: .running(since: .now)) else { return refused(id, instance.phase, .running(since: .now)) }
            instance.pid = record.pid
            instance.network = attached
            instance.applied = request.limits
            if let arrived = arrivals.removeValue(forKey: id) { instance.startLatency = .now - arrived }
            instance.probes = ProbeState()
            instance.configVersion = fetched?.version
            local[id] = instance
            if let fetched { watchConfig(id, generation: assignment.generation, app: assignment.app, version: fetched.version) }
            logger.info("started", metadata: ["instance": "\(id)", "app": "\(assignment.app)", "pid": "\(record.pid)"])
        } catch {
            let reason: String
            switch error {
            case RuntimeError.startFailed(_, let text): reason = text
            default: reason = "\(error)"
            }
            logger.warning("could not start", metadata: ["instance": "\(id)", "reason": "\(reason)"])
            await network.detach(id)
            guard let instance = local[id], instance.assignment.generation == assignment.generation else { return }
            // A failed start is an ending like any other: the restart policy decides, with back-off; a new
            // config version retries at once (the watch), a new revision comes as a new generation.
            handleEnding(id, .failed(reason))
            if let fetched, case .backoff = local[id]?.phase {
                watchConfig(id, generation: assignment.generation, app: assignment.app, version: fetched.version)
            }
        }
    }

    /// The token file, its user's alone (0400), written inside the instance's root like its config.
    static func writeToken(_ token: String, rootfs: String, owner: InstanceUser) throws {
        try InstanceFiles.write(Data((token + "\n").utf8), to: tokenPath, inRoot: rootfs, mode: 0o400,
                                owner: owner.uid == 0 && owner.gid == 0 ? nil : (owner.uid, owner.gid))
    }

    /// A re-adopted instance's token is issued again (the agent never had it on disk) and its file rewritten;
    /// the one before stops working.
    private func reissueToken(_ assignment: Sigma_V1_Assignment) async {
        guard let issueToken else { return }
        let id = assignment.instanceID
        do {
            let token = try await issueToken(id, assignment.generation)
            try Self.writeToken(token, rootfs: runtime.directory(of: id) + "/rootfs", owner: await runtime.user(of: id))
        } catch {
            logger.warning("the re-adopted instance's token was not renewed", metadata: ["instance": "\(id)", "error": "\(error)"])
        }
    }

    /// Ends and removes a start that completed after its instance was stopped here.
    private func discardStarted(_ assignment: Sigma_V1_Assignment) async {
        let id = assignment.instanceID
        logger.info("stopped while starting; discarding the start", metadata: ["instance": "\(id)"])
        _ = await runtime.stop(id, grace: .zero)
        guard local[id] == nil else { return }  // started again meanwhile: that start ended this run already
        await runtime.cleanUp(id, removeFolder: true)
        await hostPorts.unpublish(instance: id)
        await network.detach(id)
        releaseSSDs(assignment)
    }

    /// A new config version arrived for an instance waiting to restart: it starts again now, with it.
    func retryNow(_ id: String, generation: Int64) {
        guard let instance = local[id], instance.assignment.generation == generation, case .backoff = instance.phase else { return }
        move(id, to: .backoff(until: .now))
        logger.info("new config version: retrying now", metadata: ["instance": "\(id)"])
        poke()
    }

    /// The node's rules for the instance before it runs: its port's guard, and in host network mode each port of
    /// the spec published at the node's IP and the port the Allocator gave it.
    func publishPorts(_ assignment: Sigma_V1_Assignment) async throws {
        // Every instance: the node's filter and egress rules are in place before it runs.
        guard !assignment.ip.isEmpty else { return }
        try await hostPorts.setUp()
        // Only its own IP and MAC leave its port (no spoofing, no IPv6, nothing to the overlay's port).
        try await hostPorts.guardInstance(
            assignment.instanceID, interface: network.names(for: assignment.instanceID).hostInterface, ip: assignment.ip,
            mac: NodeNetwork.mac(for: assignment.ip))
        let spec = assignment.appSpec
        guard spec.network == .host else { return }
        for port in spec.ports {
            guard let hostPort = assignment.hostPorts[port.name] else { continue }
            let mapping = PortMapping(
                instance: assignment.instanceID, transport: port.protocol.rawValue, hostPort: Int(hostPort),
                instanceIP: assignment.ip, containerPort: port.containerPort)
            if let warning = try await hostPorts.publish(mapping) {
                logger.warning("host port published but not held", metadata: ["instance": "\(assignment.instanceID)", "why": "\(warning)"])
            }
        }
    }

    /// The SSDs the Allocator gave the instance, at the spec's mount path: a directory is bind-mounted, a
    /// block device mounted first under the agent's state folder.
    private func ssdMounts(_ assignment: Sigma_V1_Assignment) async throws -> [OCIConfig.Mount] {
        guard !assignment.ssds.isEmpty else { return [] }
        let base = assignment.appSpec.ssd?.mountPath ?? SSDRequest.defaultMountPath
        var mounts: [OCIConfig.Mount] = []
        for (index, ssd) in assignment.ssds.enumerated() {
            let destination = index == 0 ? base : "\(base)\(index)"
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: ssd.path, isDirectory: &isDirectory) else {
                throw RuntimeError.startFailed(id: assignment.instanceID, reason: "SSD \(ssd.path) is missing on this node")
            }
            let source = isDirectory.boolValue ? ssd.path : try await mountDevice(ssd.path)
            // Another instance's data never reaches this one: an SSD changing hands is wiped first.
            let owners = SSDOwners(stateDirectory: runtime.configuration.stateDirectory)
            if let previous = try await owners.claim(ssd.path, contents: source, for: assignment.instanceID) {
                logger.notice("SSD wiped for its new instance", metadata: [
                    "ssd": "\(ssd.path)", "instance": "\(assignment.instanceID)", "previous": "\(previous)"])
            }
            mounts.append(OCIConfig.Mount(destination: destination, type: "bind", source: source,
                                          options: ["rbind", "nosuid", "nodev", "rw"]))
        }
        return mounts
    }

    /// Where a device SSD is mounted on the node while an instance uses it.
    func deviceMountPoint(_ device: String) -> String {
        runtime.configuration.stateDirectory + "/ssd/" + String(stableHash(device), radix: 16)
    }

    /// Unmounts the device SSDs of a stopped instance (directories need nothing: the bind went with it).
    func releaseSSDs(_ assignment: Sigma_V1_Assignment) {
        for ssd in assignment.ssds {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: ssd.path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            let target = deviceMountPoint(ssd.path)
            if umount2(target, 0) == 0 { rmdir(target) }
        }
    }

    /// `mount` runs off the actor (Subprocess waits on a thread of its own), so a slow device holds up nothing else.
    private func mountDevice(_ device: String) async throws -> String {
        let target = deviceMountPoint(device)
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let mounted = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8))?.contains(" \(target) ") ?? false
        if !mounted {
            let result = try await Subprocess.run("/bin/mount", [device, target])
            guard result.succeeded else {
                throw RuntimeError.startFailed(id: device, reason: "cannot mount SSD \(device): \(result.errors)")
            }
        }
        return target
    }

    /// Only the limit fields are written back, and only to the same generation still here: the actor runs
    /// other work across each await (a fence, a stop), and a copy taken before one would bring it back.
    private func applyLimits(_ id: String) async {
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
        releaseSSDs(instance.assignment)
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
        finished[id] = status
    }

    /// The app's grace period, or the agent's default for specs that set none.
    func grace(_ assignment: Sigma_V1_Assignment) -> Duration {
        assignment.appSpec.lifecycle.map { .seconds($0.stopGracePeriodSeconds) } ?? settings.stopGrace
    }

    /// Checks running instances for an ending, and decides by the restart policy.
    private func watchEndings() async {
        for (id, instance) in local where !instance.killing {
            guard case .running = instance.phase else { continue }
            if let ending = await runtime.ending(of: id), local[id]?.killing == false { handleEnding(id, ending) }
        }
    }

    func handleEnding(_ id: String, _ ending: InstanceEnding) {
        guard var instance = local[id] else { return }
        instance.lastEnding = ending
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
                status.reason = "back-off \(Int(wait.components.seconds))s restarting after \(instance.lastEnding.map { "\($0)" } ?? "an ending") (\(instance.restarts) restart(s))"
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
        return statuses + finished.values.sorted { $0.instanceID < $1.instanceID }
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
        for status in statuses where status.state == InstanceState.terminated.rawValue
            && finished[status.instanceID]?.generation == status.generation {
            finished[status.instanceID] = nil
        }
    }

    /// For sigmactl and tests: the local view.
    func snapshot() -> [String: LocalInstance] { local }
}
