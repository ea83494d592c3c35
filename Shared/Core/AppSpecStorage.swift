extension AppSpec {
    /// A path into a stored AppSpec (JSON, apps.spec and app_revisions.spec) that SQL reads, named once from
    /// the coding keys: queries write `spec #>> \(AppSpec.StoredPath.replicas)`, which reads
    /// `spec #>> '{replicas}'`, never Swift's property names. The views of migration 20 read `ports`, `image`
    /// and `config` directly; `AppSpecStorageTests` pins those and every path here.
    public struct StoredPath: Sendable, CustomStringConvertible {
        public let keys: [String]

        init(_ keys: [String]) {
            precondition(keys.allSatisfy { $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) } })
            self.keys = keys
        }

        /// The path as a PostgreSQL text-array literal, `'{resources,request,cpuMillis}'`.
        public var description: String { "'{" + keys.joined(separator: ",") + "}'" }

        public static let replicas = StoredPath([CodingKeys.replicas.rawValue])
        public static let team = StoredPath([CodingKeys.team.rawValue])
        public static let startup = StoredPath([CodingKeys.startup.rawValue])
        public static let requestCPU = resources(.request, .cpuMillis)
        public static let requestMemory = resources(.request, .memoryBytes)
        public static let limitCPU = resources(.limit, .cpuMillis)
        public static let limitMemory = resources(.limit, .memoryBytes)
        public static let failover = StoredPath([CodingKeys.failover.rawValue])
        public static let ssd = StoredPath([CodingKeys.ssd.rawValue])
        public static let volumes = StoredPath([CodingKeys.volumes.rawValue])
        public static let all = [replicas, startup, requestCPU, requestMemory, limitCPU, limitMemory]

        /// SQL for `AppSpec.failoverMode` of the stored spec `column`: 'safe' or 'fast'.
        public static func failoverMode(of column: String) -> String {
            "coalesce(\(column) #>> \(failover), CASE WHEN \(keepsDataOnNode(of: column)) "
                + "THEN '\(FailoverMode.safe.rawValue)' ELSE '\(FailoverMode.fast.rawValue)' END)"
        }

        /// SQL for `AppSpec.keepsDataOnNode` of the stored spec `column`.
        public static func keepsDataOnNode(of column: String) -> String {
            "((\(column) #> \(ssd) IS NOT NULL AND \(column) #> \(ssd) <> 'null'::jsonb) "
                + "OR jsonb_array_length(coalesce(\(column) #> \(volumes), '[]'::jsonb)) > 0)"
        }

        static func resources(_ kind: ResourceRequirements.CodingKeys, _ quantity: Resources.CodingKeys) -> StoredPath {
            StoredPath([CodingKeys.resources.rawValue, kind.rawValue, quantity.rawValue])
        }
    }
}

extension AppSpec {
    /// Reads a stored spec. Fields added after the first revisions were stored default as they do in a new
    /// spec: `volumes` (none) for revisions stored before volumes existed; the optional ones read as nil.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            name: try c.decode(String.self, forKey: .name), team: try c.decode(String.self, forKey: .team),
            image: try c.decode(String.self, forKey: .image), command: try c.decode([String].self, forKey: .command),
            args: try c.decode([String].self, forKey: .args), env: try c.decode([String: String].self, forKey: .env),
            replicas: try c.decode(Int.self, forKey: .replicas), resources: try c.decode(ResourceRequirements.self, forKey: .resources),
            nodeSelector: try c.decode(LabelSelector.self, forKey: .nodeSelector), spread: try c.decode(SpreadPolicy.self, forKey: .spread),
            idcAffinity: try c.decode(IDCAffinity.self, forKey: .idcAffinity), network: try c.decode(NetworkMode.self, forKey: .network),
            ports: try c.decode([ContainerPort].self, forKey: .ports), ssd: try c.decodeIfPresent(SSDRequest.self, forKey: .ssd),
            startup: try c.decode(StartupOrder.self, forKey: .startup), restartPolicy: try c.decode(RestartPolicy.self, forKey: .restartPolicy),
            config: try c.decodeIfPresent(ConfigReference.self, forKey: .config), lifecycle: try c.decodeIfPresent(Lifecycle.self, forKey: .lifecycle),
            security: try c.decodeIfPresent(SecurityContext.self, forKey: .security),
            failover: try c.decodeIfPresent(FailoverMode.self, forKey: .failover),
            volumes: try c.decodeIfPresent([VolumeSpec].self, forKey: .volumes) ?? [],
            update: try c.decodeIfPresent(UpdateStrategy.self, forKey: .update))
        labels = try c.decodeIfPresent([String: String].self, forKey: .labels) ?? [:]
    }
}
