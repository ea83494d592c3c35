import Foundation
import Protocol
import RPC
import Synchronization

/// One simulated agent of `sigma-bench hollow` (kubemark's hollow node): it registers, follows its assignments
/// as sigma-agent does (the snapshot, then the pushed changes), "runs" each one it may start by reporting it
/// Running and ready, reports a removed one Terminated once, fences when told to, and heartbeats every interval
/// with every instance's state — the real protocol, nothing started.
final class HollowNode: Sendable {
    let name: String
    let index: Int
    struct State {
        var epoch: Int64 = 0
        /// What the scheduler assigns: id → (generation, may start).
        var desired: [String: (generation: Int64, mayStart: Bool)] = [:]
        var running: [String: Int64] = [:]
        var stopped: [String: Int64] = [:]
        /// When a Running report of each (id/generation) was first accepted.
        var confirmed: [String: ContinuousClock.Instant] = [:]
        var silenced = false
    }
    let state = Mutex(State())

    init(index: Int) {
        self.index = index
        name = "hollow-\(index)"
    }

    /// Registers the node; returns the scheduler's events endpoint.
    func register(_ client: RPCClient) async throws -> String {
        var request = Sigma_V1_RegisterNodeRequest()
        request.name = name
        request.hostIp = "198.18.\(index / 250 % 250).\(index % 250 + 1)"
        request.region = "r1"
        request.idc = "idc-\(index % 4)"
        request.isp = index % 2 == 0 ? "ct" : "cu"
        request.capacity.cpuMillis = 64_000
        request.capacity.memoryBytes = 256 << 30
        request.diskBytes = 1 << 40
        request.agentEndpoint = "tcp://127.0.0.1:1"
        let response = try await client.call(SchedulerMethods.registerNode, request)
        state.withLock { $0.epoch = response.node.epoch }
        return response.eventsEndpoint
    }

    func replace(_ assignments: [Sigma_V1_Assignment]) {
        state.withLock { state in
            state.desired = Dictionary(assignments.map { ($0.instanceID, ($0.generation, $0.mayStart)) }, uniquingKeysWith: { a, b in a.0 >= b.0 ? a : b })
        }
    }

    func apply(_ change: Sigma_V1_AssignmentEvent) {
        let id = change.assignment.instanceID
        state.withLock { state in
            if change.removed {
                if let known = state.desired[id], change.assignment.generation != 0, known.generation > change.assignment.generation { return }
                state.desired[id] = nil
            } else if (state.desired[id]?.generation ?? 0) <= change.assignment.generation {
                state.desired[id] = (change.assignment.generation, change.assignment.mayStart)
            }
        }
    }

    /// The statuses of one heartbeat: what runs (started now if it may), and what stopped since the last one.
    private func statuses() -> (request: Sigma_V1_HeartbeatRequest, reported: [String]) {
        state.withLock { state in
            for (id, generation) in state.running where state.desired[id]?.generation != generation {
                state.running[id] = nil
                state.stopped[id] = generation
            }
            for (id, wanted) in state.desired where wanted.mayStart && state.running[id] == nil { state.running[id] = wanted.generation }
            var request = Sigma_V1_HeartbeatRequest()
            request.node = name
            request.epoch = state.epoch
            request.usage.cpuMillis = Int64(100 * state.running.count)
            request.usage.memoryBytes = Int64(state.running.count) << 24
            request.instances = state.running.map { id, generation in
                var status = Sigma_V1_InstanceStatus()
                (status.instanceID, status.generation, status.state, status.stateCode, status.ready) = (id, generation, "Running", .instanceStateRunning, true)
                return status
            } + state.stopped.map { id, generation in
                var status = Sigma_V1_InstanceStatus()
                (status.instanceID, status.generation, status.state, status.stateCode, status.reason) = (id, generation, "Terminated", .instanceStateTerminated, "stopped")
                return status
            }
            state.stopped = [:]
            return (request, state.running.map { "\($0.key)/\($0.value)" })
        }
    }

    /// One heartbeat; returns how long the call took (nil when it failed or the node is silenced).
    func beat(_ client: RPCClient, timeout: Duration) async -> Duration? {
        guard !state.withLock({ $0.silenced }) else { return nil }
        let (request, reported) = statuses()
        let started = ContinuousClock.now
        guard let response = try? await client.call(SchedulerMethods.heartbeat, request, timeout: timeout) else { return nil }
        let now = ContinuousClock.now
        state.withLock { state in
            for key in reported where state.confirmed[key] == nil { state.confirmed[key] = now }
            for ref in response.stop {
                if state.running[ref.instanceID] == ref.generation { state.running[ref.instanceID] = nil }
                state.stopped[ref.instanceID] = ref.generation
            }
            if response.fence {
                for id in state.running.keys where state.desired[id] == nil { state.running[id] = nil }
                state.epoch = response.epoch
            }
        }
        return now - started
    }

    /// Beats every `interval` (after a first pause that spreads the nodes over it) until cancelled.
    func heartbeats(_ client: RPCClient, every interval: Duration, offset: Duration, record: @Sendable (Duration) -> Void) async {
        try? await Task.sleep(for: offset)
        while !Task.isCancelled {
            if let took = await beat(client, timeout: interval * 3) { record(took) }
            try? await Task.sleep(for: interval)
        }
    }

    var runningCount: Int { state.withLock { $0.running.count } }
    func silence() { state.withLock { $0.silenced = true } }
    /// When each instance first counted as Running here, by id.
    var confirmations: [String: ContinuousClock.Instant] {
        state.withLock { state in
            Dictionary(state.confirmed.map { (String($0.key.split(separator: "/")[0]), $0.value) }, uniquingKeysWith: min)
        }
    }
}
