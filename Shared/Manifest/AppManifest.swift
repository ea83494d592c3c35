import Core
import Yams

/// Reads app specs from YAML (`sigmactl apply -f app.yaml`). Quantities are Kubernetes-style ("500m", "2Gi");
/// unknown keys and wrong types are errors that name the field, like the scheduler's own validation.
///
/// ```yaml
/// name: web
/// team: shop
/// labels: {tier: web}                            # the app's own; sigmactl get apps -l tier=web; changes restart nothing
/// image: oci:/images/web:1
/// replicas: 3
/// resources:
///   request: {cpu: 500m, memory: 1Gi}
///   limit: {cpu: 2, memory: 0}        # 0 = unlimited
/// nodeSelector: "disk=ssd,idc in (hz-a,hz-b)"   # or {matchLabels: {...}, matchExpressions: [...]}
/// spread: {keys: [idc, node], maxSkew: 1, required: false}
/// idcAffinity: {preferred: [hz-a]}
/// network: host
/// ports: [{name: mysql, containerPort: 3306}]
/// ssd: {count: 1, minBytes: 100Gi, mountPath: /var/lib/mysql}
/// startup: ordered
/// failover: safe                      # the default with an SSD or volumes; fast without
/// volumes: [{name: data, mountPath: /var/lib/mysql, size: 100Gi}]
/// update: {maxUnavailable: 1, minReadySeconds: 10, progressDeadlineSeconds: 600, autoRevert: true}
/// security: {user: "1000:1000", runAsNonRoot: true}
/// ```
public enum AppManifest {
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let problems: [SpecProblem]
        public var description: String { problems.map(\.description).joined(separator: "\n") }
    }

    /// Every app in `text` (several YAML documents may follow each other, separated by `---`).
    public static func parse(_ text: String) throws(ParseError) -> [AppSpec] {
        var documents: [Node] = []
        do {
            let parser = try Parser(yaml: text)
            while let document = try parser.nextRoot() { documents.append(document) }
        } catch {
            throw ParseError(problems: [yamlProblem(error, in: text)])
        }
        guard !documents.isEmpty else { throw ParseError(problems: [SpecProblem(field: "(yaml)", reason: "no document")]) }
        var specs: [AppSpec] = []
        var problems: [SpecProblem] = []
        for (index, document) in documents.enumerated() {
            var reader = Reader(prefix: documents.count > 1 ? "[\(index)]." : "")
            let spec = reader.app(document)
            problems += reader.problems
            if reader.problems.isEmpty {
                problems += spec.problems().map { SpecProblem(field: reader.prefix + $0.field, reason: $0.reason) }
            }
            specs.append(spec)
        }
        guard problems.isEmpty else { throw ParseError(problems: problems) }
        return specs
    }

    /// A YAML mistake (a bad indent, an unclosed quote, a tab, a key twice) as a problem that says where:
    /// `(yaml): line 3, column 1: found a tab character where an indentation space is expected`.
    static func yamlProblem(_ error: any Error, in text: String) -> SpecProblem {
        func at(_ mark: Mark, _ problem: String, _ context: YamlError.Context?) -> SpecProblem {
            var reason = "line \(mark.line), column \(mark.column): \(problem)"
            if let context, context.mark.line != mark.line || context.mark.column != mark.column {
                reason += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))"
            }
            return SpecProblem(field: "(yaml)", reason: reason)
        }
        switch error as? YamlError {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return at(mark, problem, context)
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
            let problem = "\(keys) appear\(duplicates.count == 1 ? "s" : "") more than once in one mapping"
            guard let (first, again) = repeatedKey(duplicates.sorted()[0], in: text, from: context.mark) else { return at(context.mark, problem, nil) }
            return SpecProblem(field: "(yaml)", reason: "line \(again.line), column \(again.column): \(problem) (first at line \(first.line))")
        case .reader(let problem, let offset, _, _):
            return SpecProblem(field: "(yaml)", reason: "\(problem)" + (offset.map { " at byte \($0)" } ?? ""))
        default:
            return SpecProblem(field: "(yaml)", reason: "\(error)".split(separator: "\n").first.map(String.init) ?? "not YAML")
        }
    }

    /// Where a key repeated in the block mapping starting at `start` stands, first and again: lines that hold
    /// `key:` at the indentation of its first line (nil for a flow mapping, or where it can't be told).
    static func repeatedKey(_ key: String, in text: String, from start: Mark) -> ((line: Int, column: Int), (line: Int, column: Int))? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard start.line >= 1, start.line <= lines.count else { return nil }
        let indent = start.column - 1
        var found: [(line: Int, column: Int)] = []
        for (index, line) in lines.enumerated().dropFirst(start.line - 1) {
            let content = line.drop { $0 == " " }
            let depth = line.count - content.count
            if index >= start.line && !content.isEmpty && !content.hasPrefix("#") && depth < indent { break }
            guard depth == indent, content.hasPrefix(key) else { continue }
            let rest = content.dropFirst(key.count).drop { $0 == " " }
            if rest.hasPrefix(":") { found.append((index + 1, depth + 1)) }
            if found.count == 2 { return (found[0], found[1]) }
        }
        return nil
    }

    struct Reader {
        let prefix: String
        var problems: [SpecProblem] = []

        init(prefix: String) { self.prefix = prefix }

        mutating func fail(_ field: String, _ reason: String) {
            problems.append(SpecProblem(field: prefix + field, reason: reason))
        }

        /// The mapping at `field`, checking that it has only `keys`.
        mutating func mapping(_ node: Node?, _ field: String, keys: Set<String>) -> [String: Node] {
            guard let node else { return [:] }
            guard case .mapping(let mapping) = node else {
                fail(field.isEmpty ? "(root)" : field, "expected a mapping")
                return [:]
            }
            var result: [String: Node] = [:]
            for (key, value) in mapping {
                guard let name = key.string else {
                    fail(field.isEmpty ? "(root)" : field, "keys must be strings")
                    continue
                }
                if !keys.contains(name) {
                    let shown = name.isEmpty ? "\"\"" : name
                    fail(field.isEmpty ? shown : "\(field).\(shown)", "unknown field (known: \(keys.sorted().joined(separator: ", ")))")
                }
                result[name] = value
            }
            return result
        }

        mutating func string(_ node: Node?, _ field: String, default value: String = "") -> String {
            guard let node else { return value }
            guard case .scalar(let scalar) = node else {
                fail(field, "expected a string")
                return value
            }
            return scalar.string
        }

        mutating func int(_ node: Node?, _ field: String, default value: Int = 0) -> Int {
            guard let node else { return value }
            guard case .scalar(let scalar) = node, let int = Int(scalar.string) else {
                fail(field, "expected a whole number")
                return value
            }
            return int
        }

        mutating func bool(_ node: Node?, _ field: String) -> Bool {
            guard let node else { return false }
            guard let bool = node.bool else {
                fail(field, "expected true or false")
                return false
            }
            return bool
        }

        mutating func strings(_ node: Node?, _ field: String) -> [String] {
            guard let node else { return [] }
            guard case .sequence(let sequence) = node else {
                fail(field, "expected a list of strings")
                return []
            }
            return sequence.enumerated().map { index, item in string(item, "\(field)[\(index)]") }
        }

        mutating func stringMap(_ node: Node?, _ field: String) -> [String: String] {
            guard let node else { return [:] }
            guard case .mapping(let mapping) = node else {
                fail(field, "expected a mapping of strings")
                return [:]
            }
            var result: [String: String] = [:]
            for (key, value) in mapping {
                guard let name = key.string else { continue }
                result[name] = string(value, "\(field).\(name)")
            }
            return result
        }

        mutating func quantity(_ node: Node?, _ field: String, _ name: ResourceName) -> Int64 {
            guard let node else { return 0 }
            let text = string(node, field)
            guard let amount = name.parse(text) else {
                fail(field, "\"\(text)\" is not \(name.examples)")
                return 0
            }
            return amount
        }

        mutating func bytes(_ node: Node?, _ field: String) -> Int64 {
            guard let node else { return 0 }
            let text = string(node, field)
            guard let bytes = Quantity.parseBytes(text) else {
                fail(field, "\"\(text)\" is not a size (512Mi, 2Gi, 1G, bytes)")
                return 0
            }
            return bytes
        }

        mutating func choice<T: RawRepresentable<String> & CaseIterable>(_ node: Node?, _ field: String, default value: T) -> T {
            guard let node else { return value }
            let text = string(node, field)
            guard let parsed = T(rawValue: text) else {
                fail(field, "\"\(text)\" is not one of \(T.allCases.map(\.rawValue).joined(separator: ", "))")
                return value
            }
            return parsed
        }

        mutating func resources(_ node: Node?, _ field: String) -> Resources {
            let fields = mapping(node, field, keys: Set(ResourceName.every.map(\.rawValue)))
            var resources = Resources()
            for name in ResourceName.every { resources[name] = quantity(fields[name.rawValue], "\(field).\(name.rawValue)", name) }
            return resources
        }

        mutating func selector(_ node: Node?) -> LabelSelector {
            guard let node else { return LabelSelector() }
            if case .scalar(let scalar) = node {
                do {
                    return try LabelSelector(parsing: scalar.string)
                } catch {
                    fail("nodeSelector", error.reason)
                    return LabelSelector()
                }
            }
            let fields = mapping(node, "nodeSelector", keys: ["matchLabels", "matchExpressions"])
            var expressions: [LabelSelector.Requirement] = []
            if let list = fields["matchExpressions"] {
                guard case .sequence(let sequence) = list else {
                    fail("nodeSelector.matchExpressions", "expected a list")
                    return LabelSelector()
                }
                for (index, item) in sequence.enumerated() {
                    let field = "nodeSelector.matchExpressions[\(index)]"
                    let parts = mapping(item, field, keys: ["key", "operator", "values"])
                    expressions.append(.init(
                        string(parts["key"], "\(field).key"), choice(parts["operator"], "\(field).operator", default: .in),
                        strings(parts["values"], "\(field).values")))
                }
            }
            return LabelSelector(matchLabels: stringMap(fields["matchLabels"], "nodeSelector.matchLabels"), expressions: expressions)
        }

        mutating func app(_ document: Node) -> AppSpec {
            let fields = mapping(document, "", keys: [
                "name", "team", "image", "command", "args", "env", "replicas", "resources", "nodeSelector", "spread",
                "idcAffinity", "network", "ports", "ssd", "startup", "restartPolicy", "config", "lifecycle", "security",
                "failover", "volumes", "update", "labels",
            ])
            if case .mapping = document {} else { return AppSpec(name: "") }
            var spec = AppSpec(name: string(fields["name"], "name"))
            spec.team = string(fields["team"], "team")
            spec.image = string(fields["image"], "image")
            spec.command = strings(fields["command"], "command")
            spec.args = strings(fields["args"], "args")
            spec.env = stringMap(fields["env"], "env")
            spec.labels = stringMap(fields["labels"], "labels")
            spec.replicas = int(fields["replicas"], "replicas", default: 1)
            let resources = mapping(fields["resources"], "resources", keys: ["request", "limit"])
            spec.resources = ResourceRequirements(
                request: self.resources(resources["request"], "resources.request"), limit: self.resources(resources["limit"], "resources.limit"))
            spec.nodeSelector = selector(fields["nodeSelector"])
            if let node = fields["spread"] {
                let spread = mapping(node, "spread", keys: ["keys", "maxSkew", "required"])
                spec.spread = SpreadPolicy(
                    keys: spread["keys"] == nil ? SpreadPolicy().keys : strings(spread["keys"], "spread.keys"),
                    maxSkew: int(spread["maxSkew"], "spread.maxSkew", default: 1), required: bool(spread["required"], "spread.required"))
            }
            let affinity = mapping(fields["idcAffinity"], "idcAffinity", keys: ["required", "preferred"])
            spec.idcAffinity = IDCAffinity(
                required: strings(affinity["required"], "idcAffinity.required"), preferred: strings(affinity["preferred"], "idcAffinity.preferred"))
            spec.network = choice(fields["network"], "network", default: .overlay)
            if let ports = fields["ports"] { spec.ports = self.ports(ports) }
            if let node = fields["ssd"] {
                let ssd = mapping(node, "ssd", keys: ["count", "minBytes", "mountPath"])
                spec.ssd = SSDRequest(
                    count: int(ssd["count"], "ssd.count", default: 1), minBytes: bytes(ssd["minBytes"], "ssd.minBytes"),
                    mountPath: string(ssd["mountPath"], "ssd.mountPath", default: SSDRequest.defaultMountPath))
            }
            spec.startup = choice(fields["startup"], "startup", default: .parallel)
            spec.restartPolicy = choice(fields["restartPolicy"], "restartPolicy", default: .always)
            if let node = fields["config"] {
                let config = mapping(node, "config", keys: ["app", "version"])
                spec.config = ConfigReference(app: string(config["app"], "config.app"), version: Int64(int(config["version"], "config.version")))
            }
            if let node = fields["lifecycle"] { spec.lifecycle = lifecycle(node) }
            if let node = fields["security"] {
                let security = mapping(node, "security", keys: ["user", "runAsNonRoot", "seccomp"])
                spec.security = SecurityContext(
                    user: string(security["user"], "security.user"), runAsNonRoot: bool(security["runAsNonRoot"], "security.runAsNonRoot"),
                    seccomp: choice(security["seccomp"], "security.seccomp", default: .runtimeDefault))
            }
            if let node = fields["failover"] { spec.failover = choice(node, "failover", default: .safe) }
            if let node = fields["volumes"] { spec.volumes = volumes(node) }
            if let node = fields["update"] { spec.update = update(node) }
            return spec
        }

        mutating func update(_ node: Node) -> UpdateStrategy {
            let fields = mapping(node, "update", keys: ["maxUnavailable", "minReadySeconds", "progressDeadlineSeconds", "autoRevert", "canary",
                                                        "autoPromote"])
            return UpdateStrategy(
                maxUnavailable: int(fields["maxUnavailable"], "update.maxUnavailable", default: 1),
                minReadySeconds: int(fields["minReadySeconds"], "update.minReadySeconds"),
                progressDeadlineSeconds: int(fields["progressDeadlineSeconds"], "update.progressDeadlineSeconds",
                                             default: UpdateStrategy.defaultProgressDeadlineSeconds),
                autoRevert: bool(fields["autoRevert"], "update.autoRevert"), canary: int(fields["canary"], "update.canary"),
                autoPromote: bool(fields["autoPromote"], "update.autoPromote"))
        }

        mutating func volumes(_ node: Node) -> [VolumeSpec] {
            guard case .sequence(let sequence) = node else {
                fail("volumes", "expected a list")
                return []
            }
            return sequence.enumerated().map { index, item in
                let field = "volumes[\(index)]"
                let volume = mapping(item, field, keys: ["name", "mountPath", "size"])
                return VolumeSpec(
                    name: string(volume["name"], "\(field).name"), mountPath: string(volume["mountPath"], "\(field).mountPath"),
                    sizeBytes: bytes(volume["size"], "\(field).size"))
            }
        }

        mutating func ports(_ node: Node) -> [ContainerPort] {
            guard case .sequence(let sequence) = node else {
                fail("ports", "expected a list")
                return []
            }
            return sequence.enumerated().map { index, item in
                let field = "ports[\(index)]"
                let port = mapping(item, field, keys: ["name", "containerPort", "protocol"])
                return ContainerPort(
                    name: string(port["name"], "\(field).name"), containerPort: int(port["containerPort"], "\(field).containerPort"),
                    protocol: choice(port["protocol"], "\(field).protocol", default: .tcp))
            }
        }

        mutating func lifecycle(_ node: Node) -> Lifecycle {
            let fields = mapping(node, "lifecycle", keys: ["stopGracePeriodSeconds", "livenessProbe", "readinessProbe", "selfFencing", "reload"])
            var lifecycle = Lifecycle(
                stopGracePeriodSeconds: int(fields["stopGracePeriodSeconds"], "lifecycle.stopGracePeriodSeconds", default: Lifecycle.defaultGracePeriodSeconds),
                selfFencing: bool(fields["selfFencing"], "lifecycle.selfFencing"))
            if let probe = fields["livenessProbe"] { lifecycle.liveness = self.probe(probe, "lifecycle.livenessProbe") }
            if let probe = fields["readinessProbe"] { lifecycle.readiness = self.probe(probe, "lifecycle.readinessProbe") }
            if let reload = fields["reload"] {
                let parts = mapping(reload, "lifecycle.reload", keys: ["signal", "command"])
                lifecycle.reload = ReloadAction(
                    signal: string(parts["signal"], "lifecycle.reload.signal"), command: strings(parts["command"], "lifecycle.reload.command"))
            }
            return lifecycle
        }

        mutating func probe(_ node: Node, _ field: String) -> Probe {
            let fields = mapping(node, field, keys: ["exec", "tcpPort", "periodSeconds", "failureThreshold", "initialDelaySeconds", "timeoutSeconds"])
            let defaults = Probe()
            return Probe(
                exec: strings(fields["exec"], "\(field).exec"), tcpPort: int(fields["tcpPort"], "\(field).tcpPort", default: 0),
                periodSeconds: int(fields["periodSeconds"], "\(field).periodSeconds", default: defaults.periodSeconds),
                failureThreshold: int(fields["failureThreshold"], "\(field).failureThreshold", default: defaults.failureThreshold),
                initialDelaySeconds: int(fields["initialDelaySeconds"], "\(field).initialDelaySeconds", default: 0),
                timeoutSeconds: int(fields["timeoutSeconds"], "\(field).timeoutSeconds", default: defaults.timeoutSeconds))
        }
    }
}
