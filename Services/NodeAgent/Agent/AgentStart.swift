import Core
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC
import ClientKit
import Hosting

/// Starting an instance: its network, config, token, SSDs and host ports, then the runtime.
extension Agent {
    func start(_ assignment: Sigma_V1_Assignment) async {
        let id = assignment.instanceID
        var fetched: Sigma_V1_FetchConfigResponse?
        do {
            // The network is wired while the runtime prepares the bundle; runc runs once both are done.
            let wiring = try wire(assignment)
            guard let inputs = await inputs(assignment, wiring: wiring.task) else { return }
            fetched = inputs.config
            var request = try LaunchPlan.request(
                assignment, node: settings.node, configVersion: fetched?.version, ssdMounts: try await ssdMounts(assignment))
            let volumes = try await volumeMounts(assignment)
            request.mounts += volumes.mounts
            // The software knows when its volumes are new here (a first start, or the node that held them was
            // lost): it must join its peers as a new member then, not as the old one.
            if !assignment.appSpec.volumes.isEmpty { request.env["SIGMA_VOLUME_FRESH"] = volumes.fresh ? "1" : "0" }
            request.networkNamespace = wiring.namespace
            if let token = inputs.token {
                request.env["SIGMA_TOKEN"] = token
                request.env["SIGMA_TOKEN_FILE"] = Self.tokenPath
            }
            // No command in the spec: the startup script from the ConfigCenter runs (else the image's own).
            let useScript = request.command.isEmpty && request.args.isEmpty && !(fetched?.script.isEmpty ?? true)
            if useScript { request.command = ["/bin/sh", ConfigDelivery.scriptPath] }
            let record = try await launch(request, assignment, wiring: wiring.task, config: fetched, token: inputs.token, useScript: useScript)
            let attached = try? await wiring.task?.value
            await started(assignment, record: record, network: attached, limits: request.limits, config: fetched)
        } catch {
            await startFailed(assignment, error, config: fetched)
        }
    }

    /// Its network attached in the background (an overlay IP needs its pool's gateway), and the namespace to run in.
    private func wire(_ assignment: Sigma_V1_Assignment) throws -> (task: Task<InstanceNetwork, Error>?, namespace: String?) {
        let id = assignment.instanceID
        guard !assignment.ip.isEmpty else { return (nil, nil) }
        guard !assignment.gateway.isEmpty else {
            throw RuntimeError.startFailed(
                id: id, reason: "the IP pool of \(assignment.ip) has no gateway; give the pool one (sigmactl alloc create-pool NAME CIDR --gateway IP)")
        }
        let task = Task { [network] in
            try await network.attach(id, ip: assignment.ip, prefixLength: Int(assignment.prefixLength), gateway: assignment.gateway)
        }
        return (task, network.namespacePath(for: id))
    }

    /// What must come from the control plane before a start: its config (when it has one) and a fresh token
    /// (the database keeps only a hash). Either out of reach: the wiring is undone and the start retried with
    /// back-off, like a crash; nil then.
    private func inputs(_ assignment: Sigma_V1_Assignment, wiring: Task<InstanceNetwork, Error>?) async
        -> (config: Sigma_V1_FetchConfigResponse?, token: String?)? {
        let id = assignment.instanceID
        var fetched: Sigma_V1_FetchConfigResponse?
        var issued: String?
        do {
            if assignment.appSpec.config != nil { fetched = try await config.fetch(app: assignment.app, instance: id) }
        } catch {
            await unwire(id, wiring)
            retryLater(id, generation: assignment.generation, reason: "\(error)")
            return nil
        }
        do {
            if let issueToken { issued = try await issueToken(id, assignment.generation) }
        } catch {
            await unwire(id, wiring)
            retryLater(id, generation: assignment.generation, reason: "cannot get the instance's token: \(error)")
            return nil
        }
        return (fetched, issued)
    }

    private func unwire(_ id: String, _ wiring: Task<InstanceNetwork, Error>?) async {
        wiring?.cancel()
        _ = try? await wiring?.value
        await network.detach(id)
    }

    /// The runtime's start; once the bundle is ready (and before runc runs it): the network, its config
    /// files, its token file, its SSDs' owner and its host ports.
    private func launch(
        _ request: LaunchRequest, _ assignment: Sigma_V1_Assignment, wiring: Task<InstanceNetwork, Error>?,
        config fetched: Sigma_V1_FetchConfigResponse?, token: String?, useScript: Bool
    ) async throws -> LaunchRecord {
        let rootfs = runtime.directory(of: assignment.instanceID) + "/rootfs"
        let hostMode = assignment.appSpec.runsOnHost
        let ssdSources = request.mounts.map(\.source)
        do {
            return try await runtime.start(request, labels: LaunchPlan.labels(assignment)) { [wiring, fetched, self] user in
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
            await hostPorts.unpublish(instance: assignment.instanceID)
            throw error
        }
    }

    /// Records a started instance as Running, unless it was stopped meanwhile (deleted, fenced): then what
    /// just started must not run on unowned.
    private func started(
        _ assignment: Sigma_V1_Assignment, record: LaunchRecord, network attached: InstanceNetwork?, limits: CgroupLimits,
        config fetched: Sigma_V1_FetchConfigResponse?
    ) async {
        let id = assignment.instanceID
        guard var instance = local[id], instance.assignment.generation == assignment.generation else {
            if local[id] == nil { await discardStarted(assignment) }
            return
        }
        guard instance.move(to: .running(since: .now)) else { return refused(id, instance.phase, .running(since: .now)) }
        instance.pid = record.pid
        instance.network = attached
        instance.applied = limits
        if let arrived = arrivals.removeValue(forKey: id) { instance.startLatency = .now - arrived }
        instance.probes = ProbeState()
        instance.configVersion = fetched?.version
        local[id] = instance
        if let fetched { watchConfig(id, generation: assignment.generation, app: assignment.app, version: fetched.version) }
        logger.info("started", metadata: ["instance": "\(id)", "app": "\(assignment.app)", "pid": "\(record.pid)"])
    }

    /// A failed start is an ending like any other: the restart policy decides, with back-off; a new config
    /// version retries at once (the watch), a new revision comes as a new generation.
    private func startFailed(_ assignment: Sigma_V1_Assignment, _ error: any Error, config fetched: Sigma_V1_FetchConfigResponse?) async {
        let id = assignment.instanceID
        let reason: String
        switch error {
        case RuntimeError.startFailed(_, let text): reason = text
        default: reason = "\(error)"
        }
        logger.warning("could not start", metadata: ["instance": "\(id)", "reason": "\(reason)"])
        await network.detach(id)
        guard local[id]?.assignment.generation == assignment.generation else { return }
        handleEnding(id, .failed(reason))
        if let fetched, case .backoff = local[id]?.phase {
            watchConfig(id, generation: assignment.generation, app: assignment.app, version: fetched.version)
        }
    }

    /// The token file, its user's alone (0400), written inside the instance's root like its config.
    static func writeToken(_ token: String, rootfs: String, owner: InstanceUser) throws {
        try InstanceFiles.write(Data((token + "\n").utf8), to: tokenPath, inRoot: rootfs, mode: 0o400,
                                owner: owner.uid == 0 && owner.gid == 0 ? nil : (owner.uid, owner.gid))
    }

    /// A re-adopted instance's token is issued again (the agent never had it on disk) and its file rewritten;
    /// the one before stops working.
    func reissueToken(_ assignment: Sigma_V1_Assignment) async {
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
        releaseStorage(assignment)
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

    nonisolated var volumes: VolumeStore { VolumeStore(stateDirectory: runtime.configuration.stateDirectory) }

    /// The ordinal's volumes on this node (made on its first start here), each at its mount path; `fresh`
    /// when any of them was made now.
    private func volumeMounts(_ assignment: Sigma_V1_Assignment) async throws -> (mounts: [OCIConfig.Mount], fresh: Bool) {
        let spec = assignment.appSpec
        var mounts: [OCIConfig.Mount] = [], fresh = false
        for volume in spec.volumes {
            let made = try await volumes.prepare(team: spec.team, app: assignment.app, ordinal: Int(assignment.ordinal), volume)
            if made.fresh {
                fresh = true
                logger.notice("volume made", metadata: ["instance": "\(assignment.instanceID)", "volume": "\(volume.name)"])
            }
            mounts.append(OCIConfig.Mount(destination: volume.mountPath, type: "bind", source: made.path,
                                          options: ["rbind", "nosuid", "nodev", "rw"]))
        }
        return (mounts, fresh)
    }

    /// The scheduler's word that these volumes' ordinals are gone for good (past the retention): each is removed
    /// unless an instance of its ordinal is here again, and reported in the next heartbeat.
    func releaseVolumes(_ refs: [Sigma_V1_VolumeRef]) {
        let inUse = local.values.map(\.assignment) + Array(desired.values)
        for ref in refs {
            guard !inUse.contains(where: { $0.app == ref.app && $0.ordinal == ref.ordinal && $0.appSpec.team == ref.team }) else { continue }
            do {
                try volumes.remove(team: ref.team, app: ref.app, ordinal: Int(ref.ordinal))
                releasedVolumes.append(ref)
                logger.info("volumes removed", metadata: ["app": "\(ref.app)", "ordinal": "\(ref.ordinal)", "team": "\(ref.team)"])
            } catch {
                logger.warning("volumes not removed", metadata: ["app": "\(ref.app)", "ordinal": "\(ref.ordinal)", "error": "\(error)"])
            }
        }
    }

    /// Volume removals a heartbeat carried: they need not be said again.
    func reportedVolumes(_ refs: [Sigma_V1_VolumeRef]) {
        releasedVolumes.removeAll { refs.contains($0) }
    }

    /// Unmounts what a stopped instance used on the node: its device SSDs and its volumes (which stay).
    func releaseStorage(_ assignment: Sigma_V1_Assignment) {
        releaseSSDs(assignment)
        let spec = assignment.appSpec
        volumes.release(team: spec.team, app: assignment.app, ordinal: Int(assignment.ordinal), names: spec.volumes.map(\.name))
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
}
