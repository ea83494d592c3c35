import Core
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC
import ClientKit
import Hosting
import ServiceLifecycle

/// The agent's conversation with the scheduler: register, take the snapshot of its assignments and re-adopt
/// what still runs, then follow pushed changes and heartbeat until shutdown. Instances keep running when the
/// agent stops or the scheduler is unreachable; a restarted agent picks them up again.
struct AgentLoop: Service {
    let agent: Agent
    let scheduler: RPCClient
    let registration: Sigma_V1_RegisterNodeRequest
    let stateDirectory: String
    let bound: BoundEndpoint
    let advertise: String?
    let hostIP: String
    let curve: CurveClientConfiguration?
    /// How long an unpacked image no instance uses is kept.
    let imageKeep: Duration
    let logger: Logger

    var node: String { registration.name }

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await runUntilCancelled()
            }
        } catch is CancellationError {
            // Shutdown while still registering: nothing to undo, instances keep running.
        }
    }

    private func runUntilCancelled() async throws {
        var request = registration
        let endpoint = await bound.value
        request.agentEndpoint = advertise ?? endpoint.replacingOccurrences(of: "0.0.0.0", with: hostIP)
        let registered = try await retrying("register") {
            try await scheduler.call(SchedulerMethods.registerNode, request)
        }
        // The epoch this node last fenced at survives restarts: a node declared Broken meanwhile must fence
        // (stop what it no longer owns) before its instances count again.
        let epoch = EpochFile(path: stateDirectory + "/epoch")
        if epoch.value == nil { epoch.value = registered.node.epoch }
        logger.info("registered", metadata: ["node": "\(node)", "epoch": "\(epoch.value ?? 0)",
                                             "events": "\(registered.eventsEndpoint)"])

        let snapshot = try await retrying("fetch assignments") { try await assignments() }
        await agent.replaceAssignments(snapshot.assignments)
        await agent.adopt()

        // Two topics: this node's assignments, and every instance's route (the overlay). Missed route events
        // are fetched alone when the scheduler still holds them (every agent saw the same gap), else all routes.
        let subscriber = try Subscriber(
            endpoints: [registered.eventsEndpoint], topics: [FeedTopics.node(node), Self.routesTopic], curve: curve, logger: logger,
            catchUp: { topic, after, epoch in
                guard topic == Self.routesTopic else { return nil }
                var since = Sigma_V1_GetRoutesRequest()
                (since.sinceSequence, since.feedEpoch) = (after, epoch)
                let routes = try await scheduler.call(SchedulerMethods.getRoutes, since)
                guard routes.delta else { return .snapshot(try Self.snapshot(routes)) }
                return .missed(try routes.missed.enumerated().map { (after + UInt64($0.offset) + 1, try $0.element.serializedBytes()) })
            }
        ) { topic in
            if topic == Self.routesTopic { return try Self.snapshot(try await scheduler.call(SchedulerMethods.getRoutes, .init())) }
            let snapshot = try await assignments()
            return EventSnapshot(sequence: snapshot.sequence, epoch: snapshot.feedEpoch, payload: try snapshot.serializedBytes())
        }
        defer { subscriber.close() }
        let interval = Duration.milliseconds(Int64(max(100, registered.heartbeatIntervalMs)))

        await withTaskGroup(of: Void.self) { group in
            group.addTask { await agent.run() }
            group.addTask { await collectImages() }
            group.addTask { await follow(subscriber) }
            let brokenAfter: Duration? = registered.brokenAfterMs > 0 ? .milliseconds(Int64(registered.brokenAfterMs)) : nil
            group.addTask { await heartbeats(every: interval, epoch: epoch, brokenAfter: brokenAfter) }
            await group.next()
            group.cancelAll()
        }
    }

    private func assignments() async throws -> Sigma_V1_GetAssignmentsResponse {
        var get = Sigma_V1_GetAssignmentsRequest()
        get.node = node
        return try await scheduler.call(SchedulerMethods.getAssignments, get)
    }

    /// The routes as the feed's snapshot.
    static func snapshot(_ routes: Sigma_V1_GetRoutesResponse) throws -> EventSnapshot {
        EventSnapshot(sequence: routes.sequence, epoch: routes.feedEpoch, payload: try routes.serializedBytes())
    }

    /// Applies pushed changes; an empty update is the scheduler's "resync" and fetches the snapshot.
    static let routesTopic = FeedTopics.routes

    private func follow(_ subscriber: Subscriber) async {
        for await event in subscriber.events {
            switch event {
            case .snapshot(Self.routesTopic, _, let payload):
                if let routes = try? Sigma_V1_GetRoutesResponse(serializedBytes: payload) { await agent.replaceRoutes(routes.routes) }
            case .update(Self.routesTopic, _, let payload):
                if payload.isEmpty {
                    if let routes = try? await scheduler.call(SchedulerMethods.getRoutes, .init()) { await agent.replaceRoutes(routes.routes) }
                } else if let change = try? Sigma_V1_RouteEvent(serializedBytes: payload) {
                    await agent.applyRoute(change)
                }
            case .snapshot(_, _, let payload):
                if let snapshot = try? Sigma_V1_GetAssignmentsResponse(serializedBytes: payload) {
                    await agent.replaceAssignments(snapshot.assignments)
                }
            case .update(_, _, let payload):
                if payload.isEmpty {
                    if let snapshot = try? await assignments() { await agent.replaceAssignments(snapshot.assignments) }
                } else if let change = try? Sigma_V1_AssignmentEvent(serializedBytes: payload) {
                    await agent.apply(change)
                }
            }
            if Task.isCancelled { break }
        }
    }

    private func heartbeats(every interval: Duration, epoch: EpochFile, brokenAfter: Duration?) async {
        let sampler = MachineUsageSampler(stateDirectory: stateDirectory)
        while !Task.isCancelled {
            let statuses = await agent.statuses()
            let usage = sampler.sample()
            var request = Sigma_V1_HeartbeatRequest()
            request.node = node
            request.epoch = epoch.value ?? 0
            request.usage.cpuMillis = usage.cpuMillis
            request.usage.memoryBytes = usage.memoryBytes
            request.usage.diskBytes = usage.diskBytes
            request.instances = statuses
            request.releasedVolumes = await agent.releasedVolumes
            // A grant counts from before the heartbeat left: the lease never outlasts what the scheduler assumes.
            let sent = NodeLeaseFile.bootMillis()
            do {
                let response = try await scheduler.call(SchedulerMethods.heartbeat, request, timeout: interval * 3)
                if response.leaseTtlMs > 0 {
                    do {
                        try agent.runtime.lease.write(deadline: NodeLease(ttlMillis: Int64(response.leaseTtlMs)).deadline(sentAt: sent))
                    } catch {
                        logger.error("the node's lease could not be renewed", metadata: ["error": "\(error)"])
                    }
                }
                await agent.contact(brokenAfter: brokenAfter, granted: !response.fence)
                await agent.reported(statuses)
                await agent.reportedVolumes(request.releasedVolumes)
                if !response.releaseVolumes.isEmpty { await agent.releaseVolumes(response.releaseVolumes) }
                if !response.stop.isEmpty || !response.stopInstances.isEmpty {
                    await agent.disown(response.stop, ids: response.stopInstances)
                }
                if !response.refused.isEmpty { await agent.refused(response.refused) }
                if response.fence {
                    logger.notice("fencing: stopping what this node no longer owns", metadata: ["epoch": "\(response.epoch)"])
                    if let snapshot = try? await assignments() {
                        await agent.fence(snapshot.assignments)
                        epoch.value = response.epoch
                        continue  // heartbeat at once with the new epoch
                    }
                }
            } catch {
                logger.warning("heartbeat failed; instances keep running", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// Removes unpacked images no instance has used for `imageKeep`, every minute.
    private func collectImages() async {
        let runtime = agent.runtime
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(60))
            let removed = await runtime.images.collectGarbage(inUse: await runtime.digestsInUse(), unusedFor: imageKeep)
            if !removed.isEmpty { logger.info("unused images removed", metadata: ["digests": "\(removed)"]) }
        }
    }

    /// Retries `body` with a growing pause until it works or the task is cancelled.
    private func retrying<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        var pause = Duration.milliseconds(200)
        while true {
            do {
                return try await body()
            } catch {
                try Task.checkCancellation()
                logger.warning("\(what) failed; retrying", metadata: ["error": "\(error)", "in": "\(pause)"])
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(5))
            }
        }
    }
}

/// The node's fencing epoch, kept in a file of the agent's state folder.
final class EpochFile: @unchecked Sendable {
    let path: String
    private let lock = NSLock()

    init(path: String) { self.path = path }

    var value: Int64? {
        get {
            lock.withLock {
                FileManager.default.contents(atPath: path).flatMap {
                    Int64(String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
                }
            }
        }
        set {
            lock.withLock {
                guard let newValue else { unlink(path); return }
                let temporary = path + ".tmp"
                try? Data("\(newValue)\n".utf8).write(to: URL(fileURLWithPath: temporary))
                rename(temporary, path)
            }
        }
    }
}
