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
        public static let startup = StoredPath([CodingKeys.startup.rawValue])
        public static let requestCPU = resources(.request, .cpuMillis)
        public static let requestMemory = resources(.request, .memoryBytes)
        public static let limitCPU = resources(.limit, .cpuMillis)
        public static let limitMemory = resources(.limit, .memoryBytes)
        public static let failover = StoredPath([CodingKeys.failover.rawValue])
        public static let ssd = StoredPath([CodingKeys.ssd.rawValue])
        public static let all = [replicas, startup, requestCPU, requestMemory, limitCPU, limitMemory]

        /// SQL for `AppSpec.failoverMode` of the stored spec `column`: 'safe' or 'fast'.
        public static func failoverMode(of column: String) -> String {
            "coalesce(\(column) #>> \(failover), CASE WHEN \(column) #> \(ssd) IS NOT NULL AND \(column) #> \(ssd) <> 'null'::jsonb "
                + "THEN '\(FailoverMode.safe.rawValue)' ELSE '\(FailoverMode.fast.rawValue)' END)"
        }

        static func resources(_ kind: ResourceRequirements.CodingKeys, _ quantity: Resources.CodingKeys) -> StoredPath {
            StoredPath([CodingKeys.resources.rawValue, kind.rawValue, quantity.rawValue])
        }
    }
}
