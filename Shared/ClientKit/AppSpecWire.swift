import Core
import Protocol

/// Between the domain model (Core) and the wire (Protocol): app specs, resources, selectors.
extension Resources {
    public init(wire: Sigma_V1_Resources) {
        self.init(cpuMillis: wire.cpuMillis, memoryBytes: wire.memoryBytes)
    }

    public var wire: Sigma_V1_Resources {
        var wire = Sigma_V1_Resources()
        wire.cpuMillis = cpuMillis
        wire.memoryBytes = memoryBytes
        return wire
    }
}

extension ResourceRequirements {
    public init(wire: Sigma_V1_ResourceRequirements) {
        self.init(request: Resources(wire: wire.request), limit: Resources(wire: wire.limit))
    }

    public var wire: Sigma_V1_ResourceRequirements {
        var wire = Sigma_V1_ResourceRequirements()
        wire.request = request.wire
        wire.limit = limit.wire
        return wire
    }
}

extension AppSpec {
    /// The spec a request carries; enum fields it cannot read are reported as problems, like every other bad field.
    public static func from(wire: Sigma_V1_AppSpec) -> (spec: AppSpec, problems: [SpecProblem]) {
        var problems: [SpecProblem] = []
        func parse<T: RawRepresentable<String>>(_ text: String, _ field: String, default value: T, all: [T]) -> T {
            if text.isEmpty { return value }
            if let parsed = T(rawValue: text) { return parsed }
            problems.append(SpecProblem(field: field, reason: "\"\(text)\" is not one of \(all.map(\.rawValue).joined(separator: ", "))"))
            return value
        }
        var requirements: [LabelSelector.Requirement] = []
        for (index, requirement) in wire.nodeSelector.enumerated() {
            let op = parse(requirement.operator, "nodeSelector[\(index)].operator", default: .in, all: LabelSelector.Requirement.Operator.allCases)
            requirements.append(.init(requirement.key, op, requirement.values))
        }
        var spread = SpreadPolicy()
        if wire.hasSpread {
            if !wire.spread.keys.isEmpty { spread.keys = wire.spread.keys }
            if wire.spread.maxSkew != 0 { spread.maxSkew = Int(wire.spread.maxSkew) }
            spread.required = wire.spread.required
        }
        let ports = wire.ports.enumerated().map { index, port in
            ContainerPort(
                name: port.name, containerPort: Int(port.containerPort),
                protocol: parse(port.protocol, "ports[\(index)].protocol", default: .tcp, all: ContainerPort.TransportProtocol.allCases))
        }
        var spec = AppSpec(
            name: wire.name, team: wire.team, image: wire.image, command: wire.command, args: wire.args, env: wire.env,
            replicas: Int(wire.replicas), resources: ResourceRequirements(wire: wire.resources),
            nodeSelector: LabelSelector(requirements), spread: spread,
            idcAffinity: IDCAffinity(required: wire.requiredIdcs, preferred: wire.preferredIdcs),
            network: parse(wire.network, "network", default: .overlay, all: NetworkMode.allCases),
            ports: ports,
            ssd: wire.hasSsd ? SSDRequest(count: Int(wire.ssd.count), minBytes: Int64(clamping: wire.ssd.minBytes), mountPath: wire.ssd.mountPath.isEmpty ? SSDRequest.defaultMountPath : wire.ssd.mountPath) : nil,
            startup: parse(wire.startup, "startup", default: .parallel, all: StartupOrder.allCases),
            restartPolicy: parse(wire.restartPolicy, "restartPolicy", default: .always, all: RestartPolicy.allCases),
            config: wire.hasConfig ? ConfigReference(app: wire.config.app, version: wire.config.version) : nil,
            lifecycle: wire.hasLifecycle ? Lifecycle(wire: wire.lifecycle) : nil,
            security: wire.hasSecurity
                ? SecurityContext(
                    user: wire.security.user, runAsNonRoot: wire.security.runAsNonRoot,
                    seccomp: parse(wire.security.seccomp, "security.seccomp", default: .runtimeDefault, all: SecurityContext.SeccompMode.allCases))
                : nil,
            failover: wire.failover.isEmpty ? nil : parse(wire.failover, "failover", default: .safe, all: FailoverMode.allCases),
            volumes: wire.volumes.map { VolumeSpec(name: $0.name, mountPath: $0.mountPath, sizeBytes: Int64(clamping: $0.sizeBytes)) },
            update: wire.hasUpdate ? UpdateStrategy(wire: wire.update) : nil)
        spec.labels = wire.labels
        return (spec, problems + spec.problems())
    }

    public var wire: Sigma_V1_AppSpec {
        var wire = Sigma_V1_AppSpec()
        wire.name = name
        wire.team = team
        wire.image = image
        wire.command = command
        wire.args = args
        wire.env = env
        wire.labels = labels
        wire.replicas = Int32(clamping: replicas)
        wire.resources = resources.wire
        wire.nodeSelector = nodeSelector.requirements.map { requirement in
            var wire = Sigma_V1_LabelRequirement()
            wire.key = requirement.key
            wire.operator = requirement.op.rawValue
            wire.values = requirement.values
            return wire
        }
        wire.spread.keys = spread.keys
        wire.spread.maxSkew = Int32(clamping: spread.maxSkew)
        wire.spread.required = spread.required
        wire.requiredIdcs = idcAffinity.required
        wire.preferredIdcs = idcAffinity.preferred
        wire.network = network.rawValue
        wire.ports = ports.map { port in
            var wire = Sigma_V1_ContainerPort()
            wire.name = port.name
            wire.containerPort = UInt32(clamping: port.containerPort)
            wire.protocol = port.protocol.rawValue
            return wire
        }
        if let ssd {
            wire.ssd.count = UInt32(clamping: ssd.count)
            wire.ssd.minBytes = UInt64(clamping: ssd.minBytes)
            wire.ssd.mountPath = ssd.mountPath
        }
        wire.startup = startup.rawValue
        wire.restartPolicy = restartPolicy.rawValue
        if let config {
            wire.config.app = config.app
            wire.config.version = config.version
        }
        if let lifecycle { wire.lifecycle = lifecycle.wire }
        if let security {
            wire.security.user = security.user
            wire.security.runAsNonRoot = security.runAsNonRoot
            wire.security.seccomp = security.seccomp.rawValue
        }
        wire.failover = failover?.rawValue ?? ""
        wire.volumes = volumes.map { volume in
            var wire = Sigma_V1_Volume()
            wire.name = volume.name
            wire.mountPath = volume.mountPath
            wire.sizeBytes = UInt64(clamping: volume.sizeBytes)
            return wire
        }
        if let update { wire.update = update.wire }
        return wire
    }
}

extension Lifecycle {
    public init(wire: Sigma_V1_Lifecycle) {
        self.init(
            stopGracePeriodSeconds: wire.hasStopGracePeriodSeconds ? Int(wire.stopGracePeriodSeconds) : Lifecycle.defaultGracePeriodSeconds,
            liveness: wire.hasLiveness ? Probe(wire: wire.liveness) : nil,
            readiness: wire.hasReadiness ? Probe(wire: wire.readiness) : nil, selfFencing: wire.selfFencing,
            reload: wire.hasReload ? ReloadAction(signal: wire.reload.signal, command: wire.reload.command) : nil)
    }

    public var wire: Sigma_V1_Lifecycle {
        var wire = Sigma_V1_Lifecycle()
        wire.stopGracePeriodSeconds = UInt32(clamping: stopGracePeriodSeconds)
        if let liveness { wire.liveness = liveness.wire }
        if let readiness { wire.readiness = readiness.wire }
        wire.selfFencing = selfFencing
        if let reload {
            wire.reload.signal = reload.signal
            wire.reload.command = reload.command
        }
        return wire
    }
}

extension Probe {
    /// Zero fields take the defaults.
    public init(wire: Sigma_V1_Probe) {
        let defaults = Probe()
        self.init(
            exec: wire.exec, tcpPort: Int(wire.tcpPort),
            periodSeconds: wire.periodSeconds == 0 ? defaults.periodSeconds : Int(wire.periodSeconds),
            failureThreshold: wire.failureThreshold == 0 ? defaults.failureThreshold : Int(wire.failureThreshold),
            initialDelaySeconds: Int(wire.initialDelaySeconds),
            timeoutSeconds: wire.timeoutSeconds == 0 ? defaults.timeoutSeconds : Int(wire.timeoutSeconds))
    }

    public var wire: Sigma_V1_Probe {
        var wire = Sigma_V1_Probe()
        wire.exec = exec
        wire.tcpPort = UInt32(clamping: tcpPort)
        wire.periodSeconds = UInt32(clamping: periodSeconds)
        wire.failureThreshold = UInt32(clamping: failureThreshold)
        wire.initialDelaySeconds = UInt32(clamping: initialDelaySeconds)
        wire.timeoutSeconds = UInt32(clamping: timeoutSeconds)
        return wire
    }
}

extension RPCError {
    /// INVALID_ARGUMENT listing every problem, each with its field: "spec.resources.limit.cpu: ...; spec.image: required".
    public static func invalidSpec(_ problems: [SpecProblem], prefix: String = "spec.") -> RPCError {
        .invalidArgument(problems.map { prefix + $0.description }.joined(separator: "; "))
    }
}

extension UpdateStrategy {
    /// Zero fields take the defaults (1 unavailable, 600 s progress deadline).
    public init(wire: Sigma_V1_UpdateStrategy) {
        self.init(maxUnavailable: wire.maxUnavailable == 0 ? 1 : Int(wire.maxUnavailable), minReadySeconds: Int(wire.minReadySeconds),
                  progressDeadlineSeconds: wire.progressDeadlineSeconds == 0 ? Self.defaultProgressDeadlineSeconds : Int(wire.progressDeadlineSeconds),
                  autoRevert: wire.autoRevert, canary: Int(wire.canary), autoPromote: wire.autoPromote)
    }

    public var wire: Sigma_V1_UpdateStrategy {
        var wire = Sigma_V1_UpdateStrategy()
        wire.maxUnavailable = Int32(clamping: maxUnavailable)
        wire.minReadySeconds = Int32(clamping: minReadySeconds)
        wire.progressDeadlineSeconds = Int32(clamping: progressDeadlineSeconds)
        wire.autoRevert = autoRevert
        wire.canary = Int32(clamping: canary)
        wire.autoPromote = autoPromote
        return wire
    }
}

extension Sigma_V1_Node {
    /// A label's value, as selectors and pool groups read it: the topology keys `node`, `region`, `idc` and
    /// `isp` come from the node's own fields (Core's `NodeCandidate.value(forKey:)` for placement).
    public func value(forKey key: String) -> String? {
        switch key {
        case "node": name
        case "region": region
        case "idc": idc
        case "isp": isp
        default: labels[key]
        }
    }
}
