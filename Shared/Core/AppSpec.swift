/// What a team asks Sigma to run: the image, how many replicas, their resources and where they may go.
/// `sigmactl apply -f app.yaml` sends one; every apply becomes a numbered revision.
public struct AppSpec: Hashable, Sendable, Codable {
    public var name: String
    public var team: String
    public var image: String
    public var command: [String]
    public var args: [String]
    public var env: [String: String]
    public var replicas: Int
    public var resources: ResourceRequirements
    public var nodeSelector: LabelSelector
    public var spread: SpreadPolicy
    public var idcAffinity: IDCAffinity
    public var network: NetworkMode
    public var ports: [ContainerPort]
    public var ssd: SSDRequest?
    public var startup: StartupOrder
    public var restartPolicy: RestartPolicy
    public var config: ConfigReference?
    /// Grace period, probes, self-fencing, config reload; nil = the defaults (older revisions have none).
    public var lifecycle: Lifecycle?
    /// Who the instance runs as; nil = the image's user (root for `host`).
    public var security: SecurityContext?
    /// What a lost node costs: at most one copy (`safe`) or the fastest replacement (`fast`); nil = the
    /// default, `failoverMode`.
    public var failover: FailoverMode?
    /// Volumes each instance gets, one set per ordinal, kept on its node (`VolumeSpec`).
    public var volumes: [VolumeSpec]
    /// How a changed template rolls through the instances; nil = the defaults (`rollout`).
    public var update: UpdateStrategy?
    /// The app's own labels: metadata for people and selectors, no part of the template (a change restarts nothing).
    public var labels: [String: String] = [:]

    /// The keys of the stored JSON (apps.spec, app_revisions.spec): fixed here, not by the property names,
    /// because SQL reads some of them (`AppSpec.StoredPath`, and the views of migration 20). Rename a
    /// property and keep its key.
    public enum CodingKeys: String, CodingKey {
        case name, team, image, command, args, env, replicas, resources, nodeSelector, spread, idcAffinity, network, ports
        case ssd, startup, restartPolicy, config, lifecycle, security, failover, volumes, update, labels
    }

    public init(
        name: String, team: String = "", image: String = "", command: [String] = [], args: [String] = [],
        env: [String: String] = [:], replicas: Int = 1, resources: ResourceRequirements = .init(),
        nodeSelector: LabelSelector = .init(), spread: SpreadPolicy = .init(), idcAffinity: IDCAffinity = .init(),
        network: NetworkMode = .overlay, ports: [ContainerPort] = [], ssd: SSDRequest? = nil,
        startup: StartupOrder = .parallel, restartPolicy: RestartPolicy = .always, config: ConfigReference? = nil,
        lifecycle: Lifecycle? = nil, security: SecurityContext? = nil, failover: FailoverMode? = nil, volumes: [VolumeSpec] = [],
        update: UpdateStrategy? = nil
    ) {
        self.name = name
        self.team = team
        self.image = image
        self.command = command
        self.args = args
        self.env = env
        self.replicas = replicas
        self.resources = resources
        self.nodeSelector = nodeSelector
        self.spread = spread
        self.idcAffinity = idcAffinity
        self.network = network
        self.ports = ports
        self.ssd = ssd
        self.startup = startup
        self.restartPolicy = restartPolicy
        self.config = config
        self.lifecycle = lifecycle
        self.security = security
        self.failover = failover
        self.volumes = volumes
        self.update = update
    }

    /// The rollout strategy the app gets: the spec's, else the defaults.
    public var rollout: UpdateStrategy { update ?? UpdateStrategy() }

    /// The failover the app gets: the spec's, else `safe` for apps whose instances keep data on their node
    /// (an SSD or volumes), else `fast`.
    public var failoverMode: FailoverMode { failover ?? (keepsDataOnNode ? .safe : .fast) }

    /// Its instances keep data on their node: volumes, or an SSD (`StoredPath.keepsDataOnNode` in SQL).
    public var keepsDataOnNode: Bool { ssd != nil || !volumes.isEmpty }

    /// Host ports each instance needs on its node: one per container port in host network mode.
    public var hostPortCount: Int { network == .host ? ports.count : 0 }

    /// Every problem with this spec, each naming its field; empty when the spec is valid.
    public func problems() -> [SpecProblem] {
        var problems: [SpecProblem] = []
        func check(_ ok: Bool, _ field: String, _ reason: String) {
            if !ok { problems.append(SpecProblem(field: field, reason: reason)) }
        }
        check(Self.isValidName(name), "name", "\(name.quotedForError) is not a name (\(Self.nameRule))")
        check(team.isEmpty || Self.isValidName(team), "team", "\(team.quotedForError) is not a name (lowercase letters, digits and '-')")
        check(!image.isEmpty, "image", "required (oci:PATH:TAG, docker-archive:PATH, docker://REF or host)")
        check(replicas >= 0, "replicas", "must not be negative")
        check(replicas <= 100_000, "replicas", "at most 100000")
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) {
            check(LabelSelector.isValidKey(key), "labels.\(key)", "not a label key (letters, digits, - _ . /; 1-63 characters)")
            check(Self.isValidLabelValue(value), "labels.\(key)", "\(value.quotedForError) is not a label value (letters, digits, - _ .; at most 63 characters)")
        }
        for key in env.keys.sorted() {
            check(Self.isValidEnvName(key), "env.\(key)", "not an environment variable name")
        }
        problems += resources.problems()
        problems += nodeSelector.problems(field: "nodeSelector")
        problems += spread.problems()
        for (index, idc) in idcAffinity.required.enumerated() where idc.isEmpty {
            problems.append(SpecProblem(field: "idcAffinity.required[\(index)]", reason: "empty IDC name"))
        }
        for (index, idc) in idcAffinity.preferred.enumerated() where idc.isEmpty {
            problems.append(SpecProblem(field: "idcAffinity.preferred[\(index)]", reason: "empty IDC name"))
        }
        var names = Set<String>()
        var numbers = Set<String>()
        for (index, port) in ports.enumerated() {
            let field = "ports[\(index)]"
            check(Self.isValidName(port.name), "\(field).name", "\(port.name.quotedForError) is not a port name")
            check(names.insert(port.name).inserted, "\(field).name", "\"\(port.name)\" used twice")
            check((1...65535).contains(port.containerPort), "\(field).containerPort", "\(port.containerPort) is not a port (1-65535)")
            check(numbers.insert("\(port.containerPort)/\(port.protocol.rawValue)").inserted, "\(field).containerPort", "\(port.containerPort)/\(port.protocol.rawValue) used twice")
        }
        if let ssd {
            check(ssd.count >= 1 && ssd.count <= 16, "ssd.count", "\(ssd.count) is not between 1 and 16")
            check(ssd.minBytes >= 0, "ssd.minBytes", "must not be negative")
            check(ssd.mountPath.hasPrefix("/") && !ssd.mountPath.split(separator: "/").contains(".."), "ssd.mountPath", "\"\(ssd.mountPath)\" is not an absolute path")
        }
        problems += VolumeSpec.problems(volumes, ssdPath: ssd?.mountPath)
        if let lifecycle { problems += lifecycle.problems() }
        if let security { problems += security.problems() }
        if let update { problems += update.problems() }
        if let config {
            check(config.app.isEmpty || Self.isValidName(config.app), "config.app", "\(config.app.quotedForError) is not an app name")
            check(config.version >= 0, "config.version", "must not be negative (0 means the latest)")
        }
        return problems
    }

    /// DNS-label style names: `[a-z][a-z0-9-]*`, at most 63 characters, not ending in '-'.
    /// The rule `isValidName` checks, as messages say it.
    public static let nameRule = "[a-z][a-z0-9-]*, at most 63 characters, not ending in '-'"

    /// A name of an app or a team (a DNS label that starts with a letter).
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.first, first.isASCII, first.isLowercase, name.count <= 63, name.last != "-" else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
    }

    static func isValidLabelValue(_ value: String) -> Bool {
        value.count <= 63 && value.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
    }

    static func isValidEnvName(_ name: String) -> Bool {
        guard let first = name.first, first.isASCII, first.isLetter || first == "_" else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }
}

/// Who an app's instances run as. `user` is `UID[:GID]` or `NAME[:GROUP]` (names from the image's /etc/passwd
/// and /etc/group); empty keeps the image's own user (its `User`, else root). With `runAsNonRoot` an instance
/// that would run as uid 0 does not start, and says why.
/// `seccomp`: `RuntimeDefault` (the node's profile) or `Unconfined`, which the scheduler accepts only for a
/// team an operator allows it (`SetTeamPolicy`).
public struct SecurityContext: Hashable, Sendable, Codable {
    public var user: String
    public var runAsNonRoot: Bool
    public var seccomp: SeccompMode

    public enum SeccompMode: String, Hashable, Sendable, Codable, CaseIterable {
        case runtimeDefault = "RuntimeDefault"
        case unconfined = "Unconfined"
    }

    public init(user: String = "", runAsNonRoot: Bool = false, seccomp: SeccompMode = .runtimeDefault) {
        self.user = user
        self.runAsNonRoot = runAsNonRoot
        self.seccomp = seccomp
    }

    enum CodingKeys: String, CodingKey { case user, runAsNonRoot, seccomp }

    /// Revisions stored before `seccomp` existed read as RuntimeDefault.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        user = try container.decodeIfPresent(String.self, forKey: .user) ?? ""
        runAsNonRoot = try container.decodeIfPresent(Bool.self, forKey: .runAsNonRoot) ?? false
        seccomp = try container.decodeIfPresent(SeccompMode.self, forKey: .seccomp) ?? .runtimeDefault
    }

    /// `UID[:GID]` or `NAME[:GROUP]`: each part a number or a name of letters, digits, '_', '-' and '.'.
    public static func isValidUser(_ text: String) -> Bool {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count) else { return false }
        return parts.allSatisfy { part in
            guard let first = part.first, part.count <= 32 else { return false }
            if part.allSatisfy(\.isNumber) { return UInt32(part) != nil }
            return first.isASCII && (first.isLetter || first == "_")
                && part.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_-.".contains($0)) }
        }
    }

    func problems() -> [SpecProblem] {
        guard user.isEmpty || Self.isValidUser(user) else {
            return [SpecProblem(field: "security.user", reason: "\(user.quotedForError) is not UID[:GID] or NAME[:GROUP]")]
        }
        return []
    }
}

/// How instances of one app spread over topology domains: `keys` from broadest to narrowest (default: IDC,
/// then node). Each instance goes to the domain with the fewest of the app's instances, level by level. With
/// `required`, an instance stays Pending rather than push a domain more than `maxSkew` above its emptiest sibling.
public struct SpreadPolicy: Hashable, Sendable, Codable {
    public var keys: [String]
    public var maxSkew: Int
    public var required: Bool

    public init(keys: [String] = ["idc", "node"], maxSkew: Int = 1, required: Bool = false) {
        self.keys = keys
        self.maxSkew = maxSkew
        self.required = required
    }

    func problems() -> [SpecProblem] {
        var problems: [SpecProblem] = []
        for (index, key) in keys.enumerated() {
            if !LabelSelector.isValidKey(key) {
                problems.append(SpecProblem(field: "spread.keys[\(index)]", reason: "\"\(key)\" is not a label key"))
            }
            if key == "node" && index != keys.count - 1 {
                problems.append(SpecProblem(field: "spread.keys[\(index)]", reason: "node is the narrowest domain and must come last"))
            }
        }
        if Set(keys).count != keys.count {
            problems.append(SpecProblem(field: "spread.keys", reason: "a key appears twice"))
        }
        if maxSkew < 1 { problems.append(SpecProblem(field: "spread.maxSkew", reason: "must be at least 1")) }
        return problems
    }
}

/// IDCs an app must run in (`required`) or would rather run in (`preferred`, used while they have room).
public struct IDCAffinity: Hashable, Sendable, Codable {
    public var required: [String]
    public var preferred: [String]

    public init(required: [String] = [], preferred: [String] = []) {
        self.required = required
        self.preferred = preferred
    }
}

public enum NetworkMode: String, Hashable, Sendable, Codable, CaseIterable {
    /// Own overlay IP, kept across migration; reached at instance IP + container port.
    case overlay
    /// Reached at the node's IP and an allocated host port, mapped to the container port (injected as env).
    case host
}

public struct ContainerPort: Hashable, Sendable, Codable {
    public enum TransportProtocol: String, Hashable, Sendable, Codable, CaseIterable { case tcp, udp }

    public var name: String
    public var containerPort: Int
    public var `protocol`: TransportProtocol

    /// Stored JSON keys: Discovery reads them from the ports column of `instance_directory`.
    public enum CodingKeys: String, CodingKey { case name, containerPort, `protocol` }

    public init(name: String, containerPort: Int, protocol: TransportProtocol = .tcp) {
        self.name = name
        self.containerPort = containerPort
        self.protocol = `protocol`
    }
}

/// Local SSDs each instance gets on its node, mounted at `mountPath` (data stays on the node it was written on).
public struct SSDRequest: Hashable, Sendable, Codable {
    public var count: Int
    public var minBytes: Int64
    public var mountPath: String

    /// Where an instance's first SSD is mounted when the spec doesn't say.
    public static let defaultMountPath = "/data"

    public init(count: Int = 1, minBytes: Int64 = 0, mountPath: String = SSDRequest.defaultMountPath) {
        self.count = count
        self.minBytes = minBytes
        self.mountPath = mountPath
    }
}

/// What happens to an instance whose node stops answering (docs/operations.md, "At most one copy").
public enum FailoverMode: String, Hashable, Sendable, Codable, CaseIterable {
    /// At most one live copy: a copy elsewhere starts only once the old one is certainly gone — its node
    /// reported it stopped, or the node's lease has lapsed, after which the old copy's monitor has killed it.
    case safe
    /// The replacement starts as soon as it is placed; the old copy, cut off, may still run meanwhile.
    case fast
}

public enum StartupOrder: String, Hashable, Sendable, Codable, CaseIterable {
    /// Ordinal k starts only once k-1 is Running (started; ready or not). Quorum software, whose first member
    /// cannot be ready before the others run, starts in one pass.
    case ordered
    /// Ordinal k starts only once k-1 is Running and ready (its readiness probe passes): for software whose
    /// members join one after another through the ones already serving.
    case orderedReady = "ordered-ready"
    case parallel

    /// Whether ordinal k waits for k-1 at all.
    public var isOrdered: Bool { self != .parallel }
}

public enum RestartPolicy: String, Hashable, Sendable, Codable, CaseIterable {
    case always = "Always"
    case onFailure = "OnFailure"
    case never = "Never"
}

/// The ConfigCenter config set an app's instances run with; version 0 follows the latest.
public struct ConfigReference: Hashable, Sendable, Codable {
    public var app: String
    public var version: Int64

    public init(app: String = "", version: Int64 = 0) {
        self.app = app
        self.version = version
    }
}

extension AppSpec {
    /// The image name that runs an instance on a read-only view of its node's own folders.
    public static let hostImage = "host"
    /// Whether it runs on its node's own folders (`image: host`) rather than an image of its own.
    public var runsOnHost: Bool { image == Self.hostImage }
    /// The node's folders a `host` image sees, read-only all the way down: no config file can be written under them.
    public static let hostModeFolders = ["/bin", "/sbin", "/lib", "/lib64", "/usr"]
    /// What of the node's /etc a `host` image sees, read-only (paths below /etc; `java-*` is every folder so
    /// named): what programs need and nothing secret — no shadow, no keys, no /etc/ssl/private. The rest of its
    /// /etc is its own and writable: passwd and group (the node's system accounts, no people), hosts (its own
    /// name), hostname and resolv.conf are made for it.
    public static let hostModeEtc = [
        "alternatives", "bash.bashrc", "ca-certificates", "ca-certificates.conf", "debian_version", "default", "ethertypes", "gai.conf",
        "host.conf", "inputrc", "java-*", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "login.defs", "magic",
        "magic.mime", "mime.types", "networks", "nsswitch.conf", "os-release", "perl", "protocols", "python3", "rpc",
        "services", "shells", "ssl/certs", "ssl/openssl.cnf", "terminfo", "timezone", "xattr.conf",
        // Packages' own settings that hold nothing secret (not /etc/mysql: debian.cnf has the node's password).
        "zookeeper",
    ]

    /// The read-only host path `path` is under (a folder, or an entry of /etc), when an instance in host mode
    /// could not hold a file there.
    public static func readOnlyHostFolder(of path: String) -> String? {
        if let folder = hostModeFolders.first(where: { path == $0 || path.hasPrefix($0 + "/") }) { return folder }
        guard path.hasPrefix("/etc/") else { return nil }
        let below = String(path.dropFirst(5))
        for entry in hostModeEtc {
            if entry == "java-*" {
                if below.hasPrefix("java-") { return "/etc/" + (below.split(separator: "/").first.map(String.init) ?? below) }
            } else if below == entry || below.hasPrefix(entry + "/") {
                return "/etc/" + entry
            }
        }
        return nil
    }
}

/// The host ports a node gives instances when its agent names no range (`--port-range`).
public enum HostPortRange {
    public static let `default`: ClosedRange<Int> = 20000...32767
}

extension String {
    /// The string in quotes for an error message, at most 64 characters of it (then "…" and its length):
    /// a caller's input never comes back whole.
    public var quotedForError: String {
        let limit = 64
        guard count > limit else { return "\"\(self)\"" }
        return "\"\(prefix(limit))…\" (\(count) characters)"
    }
}
