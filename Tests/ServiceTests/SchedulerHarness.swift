import Foundation
import Protocol
import RPC
import Store
import Synchronization
import Testing
import TestSupport

/// A control plane for scheduler tests: a fresh database, one allocator with the pool 100.64.0.0/22, and
/// `schedulers` scheduler processes with a short lease, all listening on `host` (a testbed's control address).
/// The pool is 1,024 addresses, one row each: with a /16 (65,536 rows) made by ten suites at once, a loaded CI
/// machine's PostgreSQL answered none of them within the 20 s deadline. A node is Broken after `brokenAfter`
/// seconds without a heartbeat (Suspect after a third of it): 12 s by default, so a loaded machine's pauses (the
/// fuzz smoke runs beside the other suites) never make a node Suspect by accident; tests of failure detection
/// pass a shorter one.
struct SchedulerCluster {
    let client: RPCClient
    let each: [RPCClient]
    let store: Store
    let processes: [ServiceProcess]
    let databaseURL: String
    /// Discovery replicas (when asked for): their processes and endpoints.
    var discoveries: [ServiceProcess] = []
    var discoveryEndpoints: [String] = []
    /// Config center replicas (when asked for).
    var configEndpoints: [String] = []
    /// The schedulers' endpoints.
    var endpoints: [String] = []
    /// The allocator's.
    var allocatorEndpoint = ""
    /// Every process of the control plane, the allocator first (a test may kill and restart them).
    var everyProcess: [ServiceProcess] = []

    static func with(
        schedulers: Int = 1, discoveries: Int = 0, configs: Int = 0, brokenAfter: Double = 12, pool cidr: String = "100.64.0.0/22", extra: [String] = [],
        host: String = "127.0.0.1", databaseURL: String? = nil,
        _ body: (SchedulerCluster) async throws -> Void
    ) async throws {
        // A database of the shared test cluster, or the one given (a private PostgreSQL a test may stop).
        func withDatabase(_ run: (TestDatabase) async throws -> Void) async throws {
            if let databaseURL { try await run(TestDatabase(name: "given", url: databaseURL)) } else { try await withTestDatabase(run) }
        }
        try await withDatabase { db in
            try await withServices({ [try ServiceProcess("sigma-allocator", ["--listen", "tcp://\(host):*", "--database-url", db.url])] }) { allocators in
                let allocatorEndpoint = try await allocators[0].endpoint()
                let allocator = try rpcClient([allocatorEndpoint])
                try await waitHealthy(allocator)
                var pool = Sigma_V1_CreateIPPoolRequest()
                pool.pool.name = "test"
                pool.pool.cidr = cidr
                pool.pool.gateway = IPv4CIDRText.firstHost(cidr)
                _ = try await allocator.call(AllocatorMethods.createIPPool, pool)
                let arguments = [
                    "--listen", "tcp://\(host):*", "--events-listen", "tcp://\(host):*", "--database-url", db.url,
                    "--allocator", allocatorEndpoint, "--suspect-after", "\(brokenAfter / 3)", "--broken-after", "\(brokenAfter)",
                    "--lease-duration", "1", "--pass-interval", "0.1", "--usage-flush-interval", "0.2", "--liveness-flush-interval", "0.2",
                ] + extra
                let discoveryArguments = ["--listen", "tcp://\(host):*", "--events-listen", "tcp://\(host):*", "--database-url", db.url]
                try await withServices({
                    try (0..<schedulers).map { _ in try ServiceProcess("sigma-scheduler", arguments) }
                        + (0..<discoveries).map { _ in try ServiceProcess("sigma-discovery", discoveryArguments) }
                        + (0..<configs).map { _ in try ServiceProcess("sigma-config", discoveryArguments) }
                }) { all in
                    let processes = Array(all.prefix(schedulers))
                    var endpoints: [String] = []
                    for process in processes { endpoints.append(try await process.endpoint()) }
                    let each = try endpoints.map { try rpcClient([$0]) }
                    for client in each { try await waitHealthy(client) }
                    let store = testStore(db.url)
                    defer { store.shutdown() }
                    var cluster = SchedulerCluster(client: try rpcClient(endpoints), each: each, store: store, processes: processes, databaseURL: db.url)
                    cluster.endpoints = endpoints
                    cluster.allocatorEndpoint = allocatorEndpoint
                    cluster.everyProcess = allocators + all
                    cluster.discoveries = Array(all.dropFirst(schedulers).prefix(discoveries))
                    for process in cluster.discoveries {
                        let endpoint = try await process.endpoint()
                        try await waitHealthy(try rpcClient([endpoint]))
                        cluster.discoveryEndpoints.append(endpoint)
                    }
                    for process in all.suffix(configs) {
                        let endpoint = try await process.endpoint()
                        try await waitHealthy(try rpcClient([endpoint]))
                        cluster.configEndpoints.append(endpoint)
                    }
                    do {
                        try await body(cluster)
                    } catch {
                        for process in all { print("---- \(process.name) log\n\(process.log.suffix(6000))") }
                        throw error
                    }
                }
            }
        }
    }

    static func rpcClient(_ endpoints: [String]) throws -> RPCClient {
        var configuration = RPCClientConfiguration(endpoints: endpoints)
        configuration.defaultTimeout = .seconds(20)
        return try RPCClient(configuration: configuration, logger: quietLogger)
    }

    static func waitHealthy(_ client: RPCClient) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while try await !client.call(CommonMethods.health, .init()).healthy {
            guard ContinuousClock.now < deadline else { throw TestSetupError("service never became healthy") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Applies a spec built from `spec`; returns the response.
    @discardableResult
    func apply(_ name: String, replicas: Int, cpu: Int64 = 1000, memory: Int64 = 1 << 30, _ change: (inout Sigma_V1_AppSpec) -> Void = { _ in })
        async throws -> Sigma_V1_ApplyAppResponse
    {
        var request = Sigma_V1_ApplyAppRequest()
        request.spec.name = name
        request.spec.image = "oci:/images/\(name):1"
        request.spec.replicas = Int32(replicas)
        request.spec.resources.request.cpuMillis = cpu
        request.spec.resources.request.memoryBytes = memory
        change(&request.spec)
        return try await client.call(SchedulerMethods.applyApp, request)
    }

    func instances(_ app: String) async throws -> [Sigma_V1_Instance] {
        var request = Sigma_V1_ListInstancesRequest()
        request.app = app
        return try await client.call(SchedulerMethods.listInstances, request).instances
    }

    /// The node, or NOT_FOUND (tests poll for nodes that register a moment later).
    func node(_ name: String) async throws -> Sigma_V1_Node {
        guard let node = try await client.call(SchedulerMethods.listNodes, .init()).nodes.first(where: { $0.name == name }) else {
            throw RPCError.notFound("no node \(name) yet")
        }
        return node
    }

    func events(_ kind: String, _ name: String) async throws -> [Sigma_V1_Event] {
        var request = Sigma_V1_ListEventsRequest()
        request.kind = kind
        request.name = name
        return try await client.call(SchedulerMethods.listEvents, request).events
    }

    /// Polls `condition` until it holds (bounded); the scheduler works asynchronously.
    func eventually(_ what: String, within limit: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + limit
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw TestSetupError("timed out waiting for: \(what)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Waits until each of `nodes` is Ready: a test of where instances go applies only then (on a loaded
    /// machine a node registered first can turn Suspect while the others register).
    func waitReady(_ nodes: [String]) async throws {
        try await eventually("nodes \(nodes) Ready") {
            let listed = try await client.call(SchedulerMethods.listNodes, .init()).nodes
            return Set(listed.filter { $0.health == "Ready" }.map(\.name)).isSuperset(of: nodes)
        }
    }

    func allRunning(_ app: String, _ count: Int) async throws -> Bool {
        let list = try await instances(app)
        return list.count == count && list.allSatisfy { $0.state == "Running" }
    }
}

enum IPv4CIDRText {
    /// "100.64.0.0/16" → "100.64.0.1": the gateway tests give every pool.
    static func firstHost(_ cidr: String) -> String {
        let parts = cidr.split(separator: "/")[0].split(separator: ".").map { Int($0)! }
        return "\(parts[0]).\(parts[1]).\(parts[2]).\(parts[3] + 1)"
    }
}

/// An agent that runs nothing: it registers a node, and on each beat fetches its assignments, "starts" those
/// it may start (reporting Running), reports removed ones Terminated, and fences when told to.
final class SimulatedAgent: Sendable {
    let name: String
    let client: RPCClient
    struct State {
        var epoch: Int64 = 0
        var running: [String: Int64] = [:]
        var stopped: [String: Int64] = [:]
        var stops = 0
        /// Apps (or images) whose instances it reports Running but not ready (a readiness probe that does not pass).
        var unready: Set<String> = []
        /// Images whose instances it reports crash-looping: BackOff after 3 restarts, "exit 1".
        var crashing: Set<String> = []
        /// What each app's running instances report using: CPU millicores, memory bytes.
        var usage: [String: (cpu: Int64, memory: Int64)] = [:]
        /// Apps whose instances it reports ended in this state (Failed, Succeeded, ...), "exit 1", not restarted.
        var ended: [String: String] = [:]
    }
    let state = Mutex(State())
    let loop = Mutex<Task<Void, Never>?>(nil)

    init(_ name: String, client: RPCClient) {
        self.name = name
        self.client = client
    }

    @discardableResult
    func register(idc: String = "idc-a", cpu: Int64 = 8000, memory: Int64 = 16 << 30, labels: [String: String] = [:],
                  ssds: [UInt64] = [], hostIP: String? = nil) async throws -> Sigma_V1_RegisterNodeResponse {
        var request = Sigma_V1_RegisterNodeRequest()
        request.name = name
        request.hostIp = hostIP ?? "198.18.0.\(abs(name.hashValue) % 200 + 1)"
        request.region = "r1"
        request.idc = idc
        request.isp = "ct"
        request.labels = labels
        request.capacity.cpuMillis = cpu
        request.capacity.memoryBytes = memory
        request.diskBytes = 100 << 30
        request.ssds = ssds.enumerated().map { index, size in
            var ssd = Sigma_V1_SSD()
            ssd.path = "/dev/nvme\(index)n1"
            ssd.sizeBytes = size
            ssd.healthy = true
            return ssd
        }
        let response = try await client.call(SchedulerMethods.registerNode, request)
        state.withLock { $0.epoch = response.node.epoch }
        return response
    }

    var running: [String: Int64] { state.withLock { $0.running } }

    /// Reports the instances of `app` (or of an image) ready or not from the next beat on.
    func setReady(_ app: String, _ ready: Bool) {
        state.withLock { if ready { $0.unready.remove(app) } else { $0.unready.insert(app) } }
    }

    /// Reports the instances of `image` crash-looping from the next beat on.
    func setCrashing(_ image: String) {
        state.withLock { _ = $0.crashing.insert(image) }
    }

    /// Reports the instances of `app` ended in `state` from the next beat on (nil: running again).
    func setEnded(_ app: String, _ state: String?) {
        self.state.withLock { $0.ended[app] = state }
    }

    /// Reports each running instance of `app` using this much from the next beat on.
    func setUsage(_ app: String, cpuMillis: Int64, memoryBytes: Int64) {
        state.withLock { $0.usage[app] = (cpuMillis, memoryBytes) }
    }

    /// One heartbeat after syncing with the assignments.
    @discardableResult
    func beat() async throws -> Sigma_V1_HeartbeatResponse {
        var get = Sigma_V1_GetAssignmentsRequest()
        get.node = name
        let snapshot = try await client.call(SchedulerMethods.getAssignments, get)
        let statuses = state.withLock { state -> [Sigma_V1_InstanceStatus] in
            let wanted = Dictionary(snapshot.assignments.map { ($0.instanceID, $0) }, uniquingKeysWith: { a, _ in a })
            for (id, generation) in state.running where wanted[id]?.generation != generation {
                state.running[id] = nil
                state.stopped[id] = generation
            }
            for assignment in snapshot.assignments where assignment.mayStart && state.running[assignment.instanceID] == nil {
                state.running[assignment.instanceID] = assignment.generation
            }
            var statuses = state.running.map { id, generation in
                var status = Sigma_V1_InstanceStatus()
                status.instanceID = id
                status.generation = generation
                status.state = "Running"
                status.ready = !state.unready.contains(wanted[id]?.app ?? "") && !state.unready.contains(wanted[id]?.spec.image ?? "")
                if state.crashing.contains(wanted[id]?.spec.image ?? "") {
                    status.state = "BackOff"
                    status.ready = false
                    status.restarts = 3
                    status.reason = "exit 1"
                }
                if let assignment = wanted[id] { status.appliedLimit = assignment.resources.limit }
                if let ending = state.ended[wanted[id]?.app ?? ""] {
                    status.state = ending
                    status.ready = false
                    status.exitCode = 1
                    status.reason = "exit 1"
                }
                if let used = state.usage[wanted[id]?.app ?? ""] {
                    status.usage.cpuMillis = used.cpu
                    status.usage.memoryBytes = used.memory
                }
                return status
            }
            for (id, generation) in state.stopped {
                var status = Sigma_V1_InstanceStatus()
                status.instanceID = id
                status.generation = generation
                status.state = "Terminated"
                status.reason = "stopped"
                statuses.append(status)
            }
            state.stopped = [:]
            return statuses
        }
        var request = Sigma_V1_HeartbeatRequest()
        request.node = name
        request.epoch = state.withLock { $0.epoch }
        request.instances = statuses
        let response = try await client.call(SchedulerMethods.heartbeat, request)
        state.withLock { state in
            // Each generation asked for is stopped (or was never run here) and reported Terminated next time,
            // as docs/protocol.md says an agent does: a safe-mode successor waits for that report.
            for ref in response.stop {
                if state.running[ref.instanceID] == ref.generation { state.running[ref.instanceID] = nil; state.stops += 1 }
                state.stopped[ref.instanceID] = ref.generation
            }
            if response.fence {
                // Stop everything the snapshot does not list, then take the new epoch.
                let wanted = Set(snapshot.assignments.map(\.instanceID))
                for id in state.running.keys where !wanted.contains(id) { state.running[id] = nil; state.stops += 1 }
                state.epoch = response.epoch
            }
        }
        return response
    }

    /// Beats every `interval` until `stop()`.
    func start(interval: Duration = .milliseconds(150)) {
        let task = Task { [self] in
            while !Task.isCancelled {
                _ = try? await beat()
                try? await Task.sleep(for: interval)
            }
        }
        loop.withLock { $0 = task }
    }

    /// Stops beating, as a dead or cut-off server would.
    func stop() {
        loop.withLock { $0?.cancel(); $0 = nil }
    }

    deinit { loop.withLock { $0?.cancel() } }
}
