import ArgumentParser
import Core
import Foundation
import Logging
import NodeRuntime
import Protocol
import RPC
import ClientKit
import Hosting
import ServiceLifecycle

/// `sigma-agent`: runs on every server, as root. It never touches PostgreSQL; it talks to the scheduler.
@main
struct AgentMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-agent",
        abstract: "Sigma's node agent: runs this server's instances under runc and reports to the scheduler.",
        subcommands: [AgentCommand.self, DecommissionCommand.self], defaultSubcommand: AgentCommand.self)
}

/// `sigma-agent decommission`: removes everything an agent made on this node (its instances, their cgroups,
/// namespaces, veths and mounts, the bridge and the state folder). For taking a node out, and for testbeds.
struct DecommissionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decommission", abstract: "Stop and remove every instance of this node, its bridge and its state.")

    @Option(help: "The agent's state folder.") var stateDir: String
    @Option(help: "The agent's node name.") var name: String
    @Option(help: "The agent's bridge.") var bridge: String = "sigma0"
    @Option(help: "The agent's parent cgroup (default sigma/<node>).") var cgroupParent: String?
    @Option(help: "The OCI runtime.") var runtime: String = "runc"

    func run() async throws {
        var logger = Logger(label: "sigma.agent")
        logger.logLevel = .warning
        guard let runtimePath = Subprocess.find(runtime) else { throw ValidationError("the OCI runtime \"\(runtime)\" was not found") }
        await NodeDecommission.removeEverything(
            stateDirectory: stateDir, bridge: bridge, node: name.lowercased(), cgroupParent: cgroupParent ?? "sigma/\(name.lowercased())",
            runtime: runtimePath, monitor: AgentCommand.executableDirectory() + "/sigma-monitor", logger: logger)
    }
}

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run the agent (the default).")

    @OptionGroup var options: ServiceOptions
    @OptionGroup var client: ClientOptions

    @Option(help: "Scheduler endpoints, comma-separated. [SIGMA_SCHEDULER]")
    var scheduler: String?

    @Option(help: "This node's name (lowercase). [SIGMA_NODE_NAME] (default: the host name)")
    var name: String?

    @Option(help: "This node's IP as other servers reach it. [SIGMA_HOST_IP] (default: the first non-loopback IPv4)")
    var hostIP: String?

    @Option(help: "Where the node is: region, IDC (datacenter) and ISP (network carrier).")
    var region: String = ""
    @Option(help: "The node's IDC (datacenter). [SIGMA_IDC]")
    var idc: String?
    @Option(help: "The node's network carrier.")
    var isp: String = ""

    @Option(name: .customLong("label"), help: "A node label KEY=VALUE; repeat for more.")
    var labels: [String] = []

    @Option(name: .customLong("ssd"), help: "A local SSD PATH[:SIZE[:MODEL]] (a device or a directory; SIZE like 800Gi, read from the filesystem when left out); repeat for more.")
    var ssds: [String] = []

    @Option(help: "Host port range for instances, FIRST-LAST (default 20000-32767).")
    var portRange: String?

    @Option(help: "Folder for instances, images and the runtime's state. [SIGMA_AGENT_STATE]")
    var stateDir: String?

    @Option(help: "The OCI runtime (runc; crun on cgroup v2 hosts). [SIGMA_RUNTIME]")
    var runtime: String?

    @Option(help: "The per-instance monitor (default: sigma-monitor next to this executable).")
    var monitor: String?

    @Option(help: "A static init run as every instance's PID 1 (signals reach the app, orphans are reaped): default tini-static (apt-get install tini); \"none\" runs the command itself as PID 1.")
    var initProgram: String = "tini-static"

    @Option(help: "The seccomp profile every instance runs under, resolved for its capabilities (Docker's and podman's format): default the containers project's /usr/share/containers/seccomp.json (apt-get install golang-github-containers-common); \"none\" runs instances without a filter.")
    var seccompProfile: String = "/usr/share/containers/seccomp.json"

    @Option(name: .customLong("control-plane"), help: "Another control-plane host (its allocator, its database): instances reach it not at all, as they reach the scheduler's; repeat for more. The hosts of --scheduler, --discovery and --config are known already.")
    var controlPlane: [String] = []

    @Option(help: "Linux bridge of the node-local network (at most 15 characters).")
    var bridge: String = "sigma0"

    @Option(help: "Where the cgroup hierarchies are mounted.")
    var cgroupRoot: String = "/sys/fs/cgroup"

    @Option(help: "Parent cgroup of every instance (default sigma/<node>).")
    var cgroupParent: String?

    @Option(help: "Discovery endpoints given to instances as SIGMA_DISCOVERY. [SIGMA_DISCOVERY]")
    var discovery: String?

    @Option(help: "ConfigCenter endpoints, for apps with config. [SIGMA_CONFIG]")
    var config: String?

    @Option(help: "Most processes and threads one instance may have (0 = unlimited).")
    var pidsLimit: Int64 = CgroupLimits.defaultPids

    @Option(help: "Seconds between SIGTERM and SIGKILL when stopping an instance.")
    var stopGrace: Double = 10

    @Option(help: "First wait in seconds before restarting an ended instance (doubles, up to 60 s).")
    var restartBackoff: Double = 1

    @Option(help: "VXLAN network identifier of the overlay (the same on every node).")
    var vni: Int = 4242

    @Option(help: "MTU of instance interfaces: the underlay's minus the VXLAN header's 50 bytes.")
    var mtu: Int = 1450

    @Option(help: "Seconds an unpacked image no instance uses is kept before it is removed.")
    var imageKeep: Double = 600

    @Option(help: "Bytes an instance's console.log grows to before it is rotated.")
    var logMaxBytes: Int64 = 10 << 20

    @Option(help: "Rotated console logs kept per instance (console.log.1 ...); 0 keeps none.")
    var logKeep: Int = 3

    @Option(help: "Endpoint operators' tools use to reach this agent (default: the bound one, 0.0.0.0 replaced by the host IP).")
    var advertise: String?

    func validate() throws {
        guard logMaxBytes >= 4096, logKeep >= 0 else { throw ValidationError("need --log-max-bytes >= 4096 and --log-keep >= 0") }
    }

    func run() async throws {
        let host = try ServiceHost(kind: .agent, options: options)
        let logger = host.logger
        let nodeName = try resolvedName()
        let nodeIP = try resolvedHostIP()
        let state = stateDir ?? environmentValue("SIGMA_AGENT_STATE") ?? "/var/lib/sigma/agent"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)

        let configuration = try runtimeConfiguration(nodeName: nodeName, state: state)
        let instanceRuntime: InstanceRuntime
        do {
            instanceRuntime = try InstanceRuntime(configuration: configuration, logger: logger)
        } catch {
            throw ValidationError("\(error)")
        }
        let network = try NodeNetwork(bridge: bridge, node: nodeName, mtu: mtu)
        guard (1...16_777_215).contains(vni) else { throw ValidationError("--vni: 1 to 16777215") }
        await network.configureOverlay(vni: vni, localIP: nodeIP)
        let context = NodeContext(
            name: nodeName, hostIP: nodeIP,
            discovery: discovery ?? environmentValue(ServiceKind.discovery.endpointVariable) ?? ServiceKind.discovery.defaultEndpoint,
            pidsLimit: pidsLimit, serverKey: try client.curve()?.serverPublicKey)
        var settings = AgentSettings(node: context)
        settings.stopGrace = .milliseconds(Int64(stopGrace * 1000))
        settings.restartBackoff = .milliseconds(Int64(restartBackoff * 1000))
        let configEndpoints = config ?? environmentValue(ServiceKind.config.endpointVariable) ?? ServiceKind.config.defaultEndpoint
        let configClient = try client.client(endpoints: configEndpoints, timeout: .seconds(5), logger: logger)
        let endpoints = scheduler ?? environmentValue(ServiceKind.scheduler.endpointVariable)
            ?? ServiceKind.scheduler.defaultEndpoint
        // Instances reach the control plane's hosts only at Discovery and the config center, and any node only
        // at its host ports.
        let services = Self.addresses(context.discovery) + Self.addresses(configEndpoints)
        let controlHosts = Set(services.map(\.host) + Self.addresses(endpoints).map(\.host) + controlPlane.flatMap { Self.addresses($0.hasPrefix("tcp://") ? $0 : "tcp://\($0):0").map(\.host) })
        let reach = HostPorts.Reach(
            controlHosts: controlHosts.sorted(), services: services, hostPorts: try Self.hostPortRange(portRange))
        let agent = Agent(settings: settings, runtime: instanceRuntime, network: network,
                          config: ConfigDelivery(client: configClient), hostPorts: HostPorts(bridge: bridge, hostIP: nodeIP, reach: reach),
                          logger: logger)

        let schedulerClient = try client.client(endpoints: endpoints, timeout: .seconds(5), logger: logger)
        await agent.useTokens { [nodeName] instance, generation in
            var request = Sigma_V1_IssueTokenRequest()
            request.node = nodeName
            request.instanceID = instance
            request.generation = generation
            return try await schedulerClient.call(SchedulerMethods.issueToken, request).token
        }
        let registration = try registrationRequest(name: nodeName, hostIP: nodeIP, stateDirectory: state)
        let loop = AgentLoop(
            agent: agent, scheduler: schedulerClient, registration: registration, stateDirectory: state,
            bound: host.bound, advertise: advertise, hostIP: nodeIP, curve: try client.curve(),
            imageKeep: .milliseconds(Int64(imageKeep * 1000)), logger: logger)

        let reachScheduler = Self.schedulerCheck(schedulerClient, endpoints)
        var handlers = RPCHandlers()
        let logs = LogReader(runtime: instanceRuntime, agent: agent)
        handlers.register(AgentMethods.readLogs) { request, _ in try await logs.read(request) }
        handlers.register(AgentMethods.listLocalInstances) { _, _ in await logs.list() }
        try await host.run(handlers: handlers, checks: [reachScheduler], role: "agent", services: [loop])
    }

    /// How the runtime runs instances: the OCI runtime, sigma-monitor, the init, the seccomp profile, cgroups, logs.
    func runtimeConfiguration(nodeName: String, state: String) throws -> RuntimeConfiguration {
        let runtimeName = runtime ?? environmentValue("SIGMA_RUNTIME") ?? "runc"
        guard let runtimePath = Subprocess.find(runtimeName) else {
            throw ValidationError("the OCI runtime \"\(runtimeName)\" was not found: install runc (apt-get install runc) or pass --runtime PATH")
        }
        let monitorPath = monitor ?? (Self.executableDirectory() + "/sigma-monitor")
        var initPath: String?
        if initProgram != "none" {
            guard let found = Subprocess.find(initProgram) else {
                throw ValidationError("the instances' init \"\(initProgram)\" was not found: install tini (apt-get install tini) or pass --init-program none")
            }
            initPath = found
        }
        var seccomp: SeccompProfile?
        if seccompProfile != "none" {
            do {
                seccomp = try SeccompProfile.load(path: seccompProfile)
            } catch {
                throw ValidationError("\(error): install golang-github-containers-common, pass another --seccomp-profile, or --seccomp-profile none")
            }
        }
        return RuntimeConfiguration(
            runtime: runtimePath, monitor: monitorPath, stateDirectory: state, cgroupRoot: cgroupRoot,
            cgroupParent: cgroupParent ?? "sigma/\(nodeName)", logMaxBytes: logMaxBytes, logKeep: logKeep, initProgram: initPath,
            seccomp: seccomp)
    }

    /// Health's check of the scheduler: reachable within a second, and its role and version.
    static func schedulerCheck(_ schedulerClient: RPCClient, _ endpoints: String) -> HealthCheck {
        HealthCheck(name: "scheduler") {
            do {
                let answer = try await schedulerClient.call(CommonMethods.health, .init(), timeout: .seconds(1))
                return (true, "\(endpoints) (\(answer.role), \(answer.version))")
            } catch {
                return (false, "\(endpoints): \(error)")
            }
        }
    }

    func resolvedName() throws -> String {
        let name = (self.name ?? environmentValue("SIGMA_NODE_NAME") ?? ProcessInfo.processInfo.hostName).lowercased()
        guard !name.isEmpty else { throw ValidationError("--name: required (the host name is empty)") }
        return name
    }

    func resolvedHostIP() throws -> String {
        if let given = hostIP ?? environmentValue("SIGMA_HOST_IP") {
            guard IPv4Address(given) != nil else { throw ValidationError("--host-ip: \"\(given)\" is not an IPv4 address") }
            return given
        }
        guard let found = Self.firstIPv4() else { throw ValidationError("--host-ip: required (no non-loopback IPv4 address found)") }
        return found
    }

    /// The registration: real CPUs, memory and disk; location, labels and SSDs from the flags.
    func registrationRequest(name: String, hostIP: String, stateDirectory: String) throws -> Sigma_V1_RegisterNodeRequest {
        let facts = MachineFacts.read(stateDirectory: stateDirectory)
        var request = Sigma_V1_RegisterNodeRequest()
        request.name = name
        request.hostIp = hostIP
        request.region = region
        request.idc = idc ?? environmentValue("SIGMA_IDC") ?? ""
        request.isp = isp
        request.capacity.cpuMillis = facts.cpuMillis
        request.capacity.memoryBytes = facts.memoryBytes
        request.diskBytes = facts.diskBytes
        for label in labels {
            let parts = label.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("--label \"\(label)\": use KEY=VALUE") }
            request.labels[parts[0]] = parts[1]
        }
        request.ssds = try ssds.map(Self.ssd)
        if portRange != nil {
            let range = try Self.hostPortRange(portRange)
            request.portRange.firstPort = UInt32(range.lowerBound)
            request.portRange.lastPort = UInt32(range.upperBound)
        }
        return request
    }

    /// `--port-range FIRST-LAST` (default 20000-32767, the scheduler's).
    static func hostPortRange(_ text: String?) throws -> ClosedRange<Int> {
        guard let text else { return HostPortRange.default }
        let parts = text.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2, parts[0] >= 1, parts[0] <= parts[1], parts[1] <= 65535 else {
            throw ValidationError("--port-range \"\(text)\": use FIRST-LAST, within 1-65535")
        }
        return parts[0]...parts[1]
    }

    /// The IPv4 addresses and ports of comma-separated `tcp://HOST:PORT` endpoints (names resolved now; a
    /// wildcard or unresolvable host is left out).
    static func addresses(_ endpoints: String) -> [(host: String, port: Int)] {
        endpoints.split(separator: ",").compactMap { endpoint -> (String, Int)? in
            let text = endpoint.trimmingCharacters(in: .whitespaces)
            guard text.hasPrefix("tcp://"), let colon = text.lastIndex(of: ":") else { return nil }
            let host = String(text[text.index(text.startIndex, offsetBy: 6)..<colon])
            guard let port = Int(text[text.index(after: colon)...]) else { return nil }
            if IPv4Address(host) != nil { return (host, port) }
            var hints = addrinfo()
            hints.ai_family = AF_INET
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var found: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, nil, &hints, &found) == 0, let first = found else { return nil }
            defer { freeaddrinfo(found) }
            var address = first.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            var printed = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            inet_ntop(AF_INET, &address, &printed, socklen_t(INET_ADDRSTRLEN))
            return (String(cString: printed), port)
        }
    }

    static func ssd(_ text: String) throws -> Sigma_V1_SSD {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        var ssd = Sigma_V1_SSD()
        ssd.path = parts[0]
        guard ssd.path.hasPrefix("/") else { throw ValidationError("--ssd \"\(text)\": the path must be absolute") }
        if parts.count > 1, !parts[1].isEmpty {
            guard let size = Quantity.parseBytes(parts[1]), size > 0 else {
                throw ValidationError("--ssd \"\(text)\": \"\(parts[1])\" is not a size")
            }
            ssd.sizeBytes = UInt64(size)
        } else {
            ssd.sizeBytes = UInt64(max(0, MachineFacts.filesystem(ssd.path).total))
        }
        if parts.count > 2 { ssd.model = parts[2] }
        ssd.healthy = FileManager.default.fileExists(atPath: ssd.path)
        return ssd
    }

    static func executableDirectory() -> String {
        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (path as NSString).deletingLastPathComponent
    }

    static func firstIPv4() -> String? {
        var addresses: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&addresses) == 0, let first = addresses else { return nil }
        defer { freeifaddrs(addresses) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET),
                  entry.pointee.ifa_flags & UInt32(IFF_LOOPBACK) == 0
            else { continue }
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { inet in
                var raw = inet.pointee.sin_addr
                _ = inet_ntop(AF_INET, &raw, &text, socklen_t(INET_ADDRSTRLEN))
            }
            return String(cString: text)
        }
        return nil
    }
}
