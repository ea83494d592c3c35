import Core
import Yams

/// App specs back to the manifest format `AppManifest.parse` reads (`sigmactl get apps -o yaml`), so what
/// is printed applies back unchanged: `parse(render(specs)) == specs` for every valid spec. Fields at their
/// default are left out, except those a reader looks for first (name, image, replicas, resources).
extension AppManifest {
    /// `specs` as YAML documents separated by `---`; `comments[i]`, when given, goes above document i as `#` lines.
    public static func render(_ specs: [AppSpec], comments: [String] = []) throws -> String {
        try specs.enumerated().map { index, spec in
            let comment = index < comments.count && !comments[index].isEmpty
                ? comments[index].split(separator: "\n", omittingEmptySubsequences: false).map { "# \($0)\n" }.joined() : ""
            return comment + (try Yams.serialize(node: node(spec)))
        }.joined(separator: "---\n")
    }

    static func node(_ spec: AppSpec) -> Node {
        var fields = Fields()
        fields["name"] = text(spec.name)
        if !spec.team.isEmpty { fields["team"] = text(spec.team) }
        if !spec.labels.isEmpty { fields["labels"] = textMap(spec.labels) }
        fields["image"] = text(spec.image)
        if !spec.command.isEmpty { fields["command"] = texts(spec.command) }
        if !spec.args.isEmpty { fields["args"] = texts(spec.args) }
        if !spec.env.isEmpty { fields["env"] = textMap(spec.env) }
        fields["replicas"] = number(spec.replicas)
        fields["resources"] = Fields(pairs: [(Node("request"), quantities(spec.resources.request)),
                                             (Node("limit"), quantities(spec.resources.limit))]).node
        placement(spec, into: &fields)
        if spec.network != .overlay { fields["network"] = text(spec.network.rawValue) }
        if !spec.ports.isEmpty {
            fields["ports"] = .sequence(.init(spec.ports.map { port in
                var fields = Fields()
                fields["name"] = text(port.name)
                fields["containerPort"] = number(port.containerPort)
                if port.protocol != .tcp { fields["protocol"] = text(port.protocol.rawValue) }
                return fields.node
            }))
        }
        if let ssd = spec.ssd {
            var disk = Fields()
            disk["count"] = number(ssd.count)
            disk["minBytes"] = quantity(Quantity.formatBytes(ssd.minBytes))
            disk["mountPath"] = text(ssd.mountPath)
            fields["ssd"] = disk.node
        }
        if spec.startup != .parallel { fields["startup"] = text(spec.startup.rawValue) }
        if spec.restartPolicy != .always { fields["restartPolicy"] = text(spec.restartPolicy.rawValue) }
        if let failover = spec.failover { fields["failover"] = text(failover.rawValue) }
        if let update = spec.update { fields["update"] = node(update) }
        if !spec.volumes.isEmpty {
            fields["volumes"] = .sequence(.init(spec.volumes.map { volume in
                var fields = Fields()
                fields["name"] = text(volume.name)
                fields["mountPath"] = text(volume.mountPath)
                fields["size"] = quantity(Quantity.formatBytes(volume.sizeBytes))
                return fields.node
            }))
        }
        if let config = spec.config {
            var reference = Fields()
            reference["app"] = text(config.app)
            reference["version"] = number(config.version)
            fields["config"] = reference.node
        }
        if let lifecycle = spec.lifecycle { fields["lifecycle"] = node(lifecycle) }
        if let security = spec.security {
            var context = Fields()
            if !security.user.isEmpty { context["user"] = text(security.user) }
            if security.runAsNonRoot { context["runAsNonRoot"] = flag(true) }
            context["seccomp"] = text(security.seccomp.rawValue)
            fields["security"] = context.node
        }
        return fields.node
    }

    /// Where it may run: node selector, spread and IDC affinity, each only when not the default.
    static func placement(_ spec: AppSpec, into fields: inout Fields) {
        if !spec.nodeSelector.isEmpty { fields["nodeSelector"] = selector(spec.nodeSelector) }
        if spec.spread != SpreadPolicy() {
            var spread = Fields()
            spread["keys"] = texts(spec.spread.keys)
            spread["maxSkew"] = number(spec.spread.maxSkew)
            spread["required"] = flag(spec.spread.required)
            fields["spread"] = spread.node
        }
        if spec.idcAffinity != IDCAffinity() {
            var affinity = Fields()
            if !spec.idcAffinity.required.isEmpty { affinity["required"] = texts(spec.idcAffinity.required) }
            if !spec.idcAffinity.preferred.isEmpty { affinity["preferred"] = texts(spec.idcAffinity.preferred) }
            fields["idcAffinity"] = affinity.node
        }
    }

    static func node(_ lifecycle: Lifecycle) -> Node {
        var fields = Fields()
        fields["stopGracePeriodSeconds"] = number(lifecycle.stopGracePeriodSeconds)
        if let probe = lifecycle.liveness { fields["livenessProbe"] = node(probe) }
        if let probe = lifecycle.readiness { fields["readinessProbe"] = node(probe) }
        if lifecycle.selfFencing { fields["selfFencing"] = flag(true) }
        if let reload = lifecycle.reload {
            var action = Fields()
            if !reload.signal.isEmpty { action["signal"] = text(reload.signal) }
            if !reload.command.isEmpty { action["command"] = texts(reload.command) }
            fields["reload"] = action.node
        }
        return fields.node
    }

    static func node(_ update: UpdateStrategy) -> Node {
        var fields = Fields()
        fields["maxUnavailable"] = number(update.maxUnavailable)
        fields["minReadySeconds"] = number(update.minReadySeconds)
        fields["progressDeadlineSeconds"] = number(update.progressDeadlineSeconds)
        fields["autoRevert"] = flag(update.autoRevert)
        if update.canary > 0 { fields["canary"] = number(update.canary) }
        if update.autoPromote { fields["autoPromote"] = flag(update.autoPromote) }
        return fields.node
    }

    static func node(_ probe: Probe) -> Node {
        var fields = Fields()
        if !probe.exec.isEmpty { fields["exec"] = texts(probe.exec) }
        if probe.tcpPort != 0 { fields["tcpPort"] = number(probe.tcpPort) }
        fields["periodSeconds"] = number(probe.periodSeconds)
        fields["failureThreshold"] = number(probe.failureThreshold)
        fields["initialDelaySeconds"] = number(probe.initialDelaySeconds)
        fields["timeoutSeconds"] = number(probe.timeoutSeconds)
        return fields.node
    }

    /// The selector in its short form ("disk=ssd,idc in (a,b)") when that reads back the same, else as
    /// `matchExpressions`.
    static func selector(_ selector: LabelSelector) -> Node {
        if let parsed = try? LabelSelector(parsing: selector.description), parsed == selector { return text(selector.description) }
        var fields = Fields()
        fields["matchExpressions"] = .sequence(.init(selector.requirements.map { requirement in
            var fields = Fields()
            fields["key"] = text(requirement.key)
            fields["operator"] = text(requirement.op.rawValue)
            if !requirement.values.isEmpty { fields["values"] = texts(requirement.values) }
            return fields.node
        }))
        return fields.node
    }

    static func quantities(_ resources: Resources) -> Node {
        var fields = Fields()
        for name in ResourceName.every { fields[name.rawValue] = quantity(name.format(resources[name])) }
        return fields.node
    }

    /// A mapping that keeps its keys in the order they were set.
    struct Fields {
        var pairs: [(Node, Node)] = []
        subscript(key: String) -> Node? {
            get { nil }
            set { if let newValue { pairs.append((Node(key), newValue)) } }
        }
        var node: Node { .mapping(.init(pairs)) }
    }

    /// A string, quoted when YAML would otherwise read it as something else ("true", "1", "null", "").
    static func text(_ value: String) -> Node {
        let plain = Node(value)
        let resolved = Resolver.default.resolveTag(of: plain)
        return Node(value, Tag(.str), resolved == .str && !value.isEmpty ? .any : .doubleQuoted)
    }

    /// A quantity ("2", "500m", "1Gi"), plain as people write it: the reader takes quantities as text.
    static func quantity(_ value: String) -> Node { Node(value, Tag(.implicit), .plain) }

    static func texts(_ values: [String]) -> Node { .sequence(.init(values.map(text))) }

    static func textMap(_ values: [String: String]) -> Node {
        .mapping(.init(values.sorted { $0.key < $1.key }.map { (text($0.key), text($0.value)) }))
    }

    static func number<T: BinaryInteger>(_ value: T) -> Node { Node("\(value)", Tag(.int)) }

    static func flag(_ value: Bool) -> Node { Node(value ? "true" : "false", Tag(.bool)) }
}
