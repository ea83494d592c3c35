import Core
import Foundation
import NodeRuntime
import Protocol

/// What the agent knows of its node that an instance is told about.
struct NodeContext: Sendable {
    var name: String
    var hostIP: String
    /// ZeroMQ endpoints of Discovery, comma-separated, for SIGMA_DISCOVERY.
    var discovery: String
    var pidsLimit: Int64
    /// The servers' CURVE public key, for SIGMA_SERVER_KEY, when the control plane runs CURVE.
    var serverKey: String? = nil
}

extension Sigma_V1_Assignment {
    /// The assignment's spec in Core's types, through the one converter (`AppSpec.from(wire:)`, where the
    /// defaults are applied). The agent reads a spec only through this, never the wire's strings.
    var appSpec: AppSpec { AppSpec.from(wire: spec).spec }
}

/// An assignment turned into what the runtime starts: command, environment, limits and mounts.
enum LaunchPlan {
    static func request(_ assignment: Sigma_V1_Assignment, node: NodeContext, configVersion: Int64?,
                        ssdMounts: [OCIConfig.Mount]) throws -> LaunchRequest {
        let spec = assignment.appSpec
        let image = try ImageReference(parsing: spec.image)
        var request = LaunchRequest(
            id: assignment.instanceID, image: image, command: spec.command, args: spec.args,
            env: environment(assignment, node: node, configVersion: configVersion),
            hostname: "\(assignment.app)-\(assignment.ordinal)", limits: limits(assignment, node: node),
            mounts: ssdMounts, networkNamespace: nil)
        let security = spec.security ?? SecurityContext()
        request.user = security.user
        request.runAsNonRoot = security.runAsNonRoot
        // The scheduler took Unconfined only for a team an operator allows it.
        request.unconfined = security.seccomp == .unconfined
        request.leased = spec.failoverMode == .safe
        return request
    }

    static func limits(_ assignment: Sigma_V1_Assignment, node: NodeContext) -> CgroupLimits {
        CgroupLimits(
            cpuLimitMillis: assignment.resources.limit.cpuMillis, cpuRequestMillis: assignment.resources.request.cpuMillis,
            memoryLimitBytes: assignment.resources.limit.memoryBytes, pids: node.pidsLimit)
    }

    /// The spec's environment plus what Sigma tells every instance about itself.
    static func environment(_ assignment: Sigma_V1_Assignment, node: NodeContext, configVersion: Int64?) -> [String: String] {
        let spec = assignment.appSpec
        var env = spec.env
        env["SIGMA_APP"] = assignment.app
        env["SIGMA_INSTANCE"] = assignment.instanceID
        env["SIGMA_ORDINAL"] = "\(assignment.ordinal)"
        env["SIGMA_INSTANCE_IP"] = assignment.ip
        env["SIGMA_HOST_IP"] = node.hostIP
        env["SIGMA_NODE"] = node.name
        env["SIGMA_DISCOVERY"] = node.discovery
        // Who the instance is to Discovery and the config center (with CURVE, it connects with a key pair
        // of its own making and proves itself with this token).
        if !assignment.token.isEmpty { env["SIGMA_TOKEN"] = assignment.token }
        if let key = node.serverKey { env["SIGMA_SERVER_KEY"] = key }
        if let configVersion { env["SIGMA_CONFIG_VERSION"] = "\(configVersion)" }
        // Host ports in the spec's order: the first is SIGMA_HOST_PORT, each named one SIGMA_HOST_PORT_<NAME>.
        for (index, port) in spec.ports.enumerated() {
            guard let hostPort = assignment.hostPorts[port.name] else { continue }
            if index == 0 { env["SIGMA_HOST_PORT"] = "\(hostPort)" }
            env["SIGMA_HOST_PORT_\(variableName(port.name))"] = "\(hostPort)"
        }
        return env
    }

    /// "http-admin" → "HTTP_ADMIN".
    static func variableName(_ name: String) -> String {
        String(name.uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" })
    }

    /// The labels kept with a launch, so a restarted agent knows what it was.
    static func labels(_ assignment: Sigma_V1_Assignment) -> [String: String] {
        ["app": assignment.app, "ordinal": "\(assignment.ordinal)", "generation": "\(assignment.generation)",
         "revision": "\(assignment.revision)"]
    }
}
