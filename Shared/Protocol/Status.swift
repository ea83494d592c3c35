import SwiftProtobuf

/// The status code of a reply, as it travels on the wire.
public typealias StatusCode = Sigma_V1_StatusCode

/// The major version of the envelope this code speaks (see docs/protocol.md).
public let sigmaProtocolVersion: UInt32 = 1

extension StatusCode {
    /// The upper-case name used in docs, logs and metrics ("NOT_FOUND").
    public var name: String {
        switch self {
        case .ok: "OK"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .unauthenticated: "UNAUTHENTICATED"
        case .UNRECOGNIZED(let value): "UNKNOWN(\(value))"
        }
    }
}

/// A typed error that crosses the wire: a status code and a message.
///
/// Handlers throw it (or any error conforming to ``RPCStatusConvertible``); clients receive it.
public struct RPCError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: StatusCode
    public var message: String

    public init(_ code: StatusCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.name): \(message)" }

    public static func invalidArgument(_ message: String) -> RPCError { .init(.invalidArgument, message) }
    public static func notFound(_ message: String) -> RPCError { .init(.notFound, message) }
    public static func alreadyExists(_ message: String) -> RPCError { .init(.alreadyExists, message) }
    public static func failedPrecondition(_ message: String) -> RPCError { .init(.failedPrecondition, message) }
    public static func resourceExhausted(_ message: String) -> RPCError { .init(.resourceExhausted, message) }
    public static func unauthenticated(_ message: String) -> RPCError { .init(.unauthenticated, message) }
    public static func permissionDenied(_ message: String) -> RPCError { .init(.permissionDenied, message) }
    public static func unavailable(_ message: String) -> RPCError { .init(.unavailable, message) }
    public static func deadlineExceeded(_ message: String) -> RPCError { .init(.deadlineExceeded, message) }
    public static func `internal`(_ message: String) -> RPCError { .init(.internal, message) }
    public static func unimplemented(_ message: String) -> RPCError { .init(.unimplemented, message) }
}

/// Errors of other layers (the store, the domain) that know which status they mean.
public protocol RPCStatusConvertible: Error {
    var rpcError: RPCError { get }
}

extension RPCError: RPCStatusConvertible {
    public var rpcError: RPCError { self }
}

/// A method with its types erased: what registries of every method list.
public protocol AnyRPCMethod: Sendable {
    var name: String { get }
    var idempotent: Bool { get }
    var requestType: any SwiftProtobuf.Message.Type { get }
}

/// A method: its name on the wire and its request and response types.
public struct RPCMethod<Request: SwiftProtobuf.Message & Sendable, Response: SwiftProtobuf.Message & Sendable>: AnyRPCMethod {
    public let name: String
    /// Safe to send again when no reply came (the client retries such calls with backoff).
    public let idempotent: Bool

    public init(_ name: String, idempotent: Bool) {
        self.name = name
        self.idempotent = idempotent
    }

    public var requestType: any SwiftProtobuf.Message.Type { Request.self }
}

/// Methods that every Sigma service serves.
public enum CommonMethods {
    public static let health = RPCMethod<Sigma_V1_HealthRequest, Sigma_V1_HealthResponse>("Health", idempotent: true)
    public static let metrics = RPCMethod<Sigma_V1_MetricsRequest, Sigma_V1_MetricsResponse>("Metrics", idempotent: true)

    /// Every method above (`all`: their names): what the fuzzer sends, what the access rules and docs/protocol.md are
    /// checked against (MethodRegistryTests reads this file to keep the list whole).
    public static let methods: [any AnyRPCMethod] = [health, metrics]
    public static var all: [String] { methods.map(\.name) }
}

/// Methods of sigma-allocator.
public enum AllocatorMethods {
    public static let createIPPool = RPCMethod<Sigma_V1_CreateIPPoolRequest, Sigma_V1_CreateIPPoolResponse>("CreateIPPool", idempotent: false)
    public static let listIPPools = RPCMethod<Sigma_V1_ListIPPoolsRequest, Sigma_V1_ListIPPoolsResponse>("ListIPPools", idempotent: true)
    public static let allocateIPs = RPCMethod<Sigma_V1_AllocateIPsRequest, Sigma_V1_AllocateIPsResponse>("AllocateIPs", idempotent: true)
    public static let releaseIPs = RPCMethod<Sigma_V1_ReleaseIPsRequest, Sigma_V1_ReleaseIPsResponse>("ReleaseIPs", idempotent: true)
    public static let reclaim = RPCMethod<Sigma_V1_ReclaimRequest, Sigma_V1_ReclaimResponse>("Reclaim", idempotent: true)
    public static let setNodePortRange = RPCMethod<Sigma_V1_SetNodePortRangeRequest, Sigma_V1_SetNodePortRangeResponse>(
        "SetNodePortRange", idempotent: true)
    public static let allocateHostPorts = RPCMethod<Sigma_V1_AllocateHostPortsRequest, Sigma_V1_AllocateHostPortsResponse>(
        "AllocateHostPorts", idempotent: true)
    public static let releaseHostPorts = RPCMethod<Sigma_V1_ReleaseHostPortsRequest, Sigma_V1_ReleaseHostPortsResponse>(
        "ReleaseHostPorts", idempotent: true)
    public static let listHostPorts = RPCMethod<Sigma_V1_ListHostPortsRequest, Sigma_V1_ListHostPortsResponse>(
        "ListHostPorts", idempotent: true)
    public static let reportSSDs = RPCMethod<Sigma_V1_ReportSSDsRequest, Sigma_V1_ReportSSDsResponse>("ReportSSDs", idempotent: true)
    public static let allocateSSDs = RPCMethod<Sigma_V1_AllocateSSDsRequest, Sigma_V1_AllocateSSDsResponse>("AllocateSSDs", idempotent: true)
    public static let releaseSSDs = RPCMethod<Sigma_V1_ReleaseSSDsRequest, Sigma_V1_ReleaseSSDsResponse>("ReleaseSSDs", idempotent: true)
    public static let listSSDs = RPCMethod<Sigma_V1_ListSSDsRequest, Sigma_V1_ListSSDsResponse>("ListSSDs", idempotent: true)
    public static let listIPAllocations = RPCMethod<Sigma_V1_ListIPAllocationsRequest, Sigma_V1_ListIPAllocationsResponse>(
        "ListIPAllocations", idempotent: true)

    /// Every method above (`all`: their names): what the fuzzer sends, what the access rules and docs/protocol.md are
    /// checked against (MethodRegistryTests reads this file to keep the list whole).
    public static let methods: [any AnyRPCMethod] = [
        createIPPool, listIPPools, allocateIPs, releaseIPs, reclaim, setNodePortRange,
        allocateHostPorts, releaseHostPorts, listHostPorts, reportSSDs, allocateSSDs,
        releaseSSDs, listSSDs, listIPAllocations,
    ]
    public static var all: [String] { methods.map(\.name) }
}

/// Methods of sigma-scheduler.
public enum SchedulerMethods {
    public static let registerNode = RPCMethod<Sigma_V1_RegisterNodeRequest, Sigma_V1_RegisterNodeResponse>("RegisterNode", idempotent: true)
    public static let heartbeat = RPCMethod<Sigma_V1_HeartbeatRequest, Sigma_V1_HeartbeatResponse>("Heartbeat", idempotent: true)
    public static let cordonNode = RPCMethod<Sigma_V1_NodeRequest, Sigma_V1_NodeResponse>("CordonNode", idempotent: true)
    public static let uncordonNode = RPCMethod<Sigma_V1_NodeRequest, Sigma_V1_NodeResponse>("UncordonNode", idempotent: true)
    public static let drainNode = RPCMethod<Sigma_V1_NodeRequest, Sigma_V1_NodeResponse>("DrainNode", idempotent: true)
    public static let removeNode = RPCMethod<Sigma_V1_NodeRequest, Sigma_V1_NodeResponse>("RemoveNode", idempotent: true)
    public static let listNodes = RPCMethod<Sigma_V1_ListNodesRequest, Sigma_V1_ListNodesResponse>("ListNodes", idempotent: true)
    public static let getPool = RPCMethod<Sigma_V1_GetPoolRequest, Sigma_V1_GetPoolResponse>("GetPool", idempotent: true)

    public static let applyApp = RPCMethod<Sigma_V1_ApplyAppRequest, Sigma_V1_ApplyAppResponse>("ApplyApp", idempotent: true)
    public static let getApp = RPCMethod<Sigma_V1_AppRequest, Sigma_V1_AppResponse>("GetApp", idempotent: true)
    public static let listApps = RPCMethod<Sigma_V1_ListAppsRequest, Sigma_V1_ListAppsResponse>("ListApps", idempotent: true)
    public static let deleteApp = RPCMethod<Sigma_V1_AppRequest, Sigma_V1_AppResponse>("DeleteApp", idempotent: true)
    public static let scaleApp = RPCMethod<Sigma_V1_ScaleAppRequest, Sigma_V1_AppResponse>("ScaleApp", idempotent: true)
    public static let rolloutHistory = RPCMethod<Sigma_V1_AppRequest, Sigma_V1_RolloutHistoryResponse>("RolloutHistory", idempotent: true)
    public static let rolloutUndo = RPCMethod<Sigma_V1_RolloutUndoRequest, Sigma_V1_AppResponse>("RolloutUndo", idempotent: false)
    public static let listRollouts = RPCMethod<Sigma_V1_ListRolloutsRequest, Sigma_V1_ListRolloutsResponse>("ListRollouts", idempotent: true)
    public static let restartRollout = RPCMethod<Sigma_V1_AppRequest, Sigma_V1_RolloutResponse>("RestartRollout", idempotent: false)
    public static let pauseRollout = RPCMethod<Sigma_V1_AppRequest, Sigma_V1_RolloutResponse>("PauseRollout", idempotent: false)
    public static let resumeRollout = RPCMethod<Sigma_V1_AppRequest, Sigma_V1_RolloutResponse>("ResumeRollout", idempotent: false)
    public static let promoteRollout = RPCMethod<Sigma_V1_AppRequest, Sigma_V1_RolloutResponse>("PromoteRollout", idempotent: false)
    public static let setQuota = RPCMethod<Sigma_V1_SetQuotaRequest, Sigma_V1_SetQuotaResponse>("SetQuota", idempotent: true)
    public static let listQuotas = RPCMethod<Sigma_V1_ListQuotasRequest, Sigma_V1_ListQuotasResponse>("ListQuotas", idempotent: true)
    public static let setTeamPolicy = RPCMethod<Sigma_V1_SetTeamPolicyRequest, Sigma_V1_SetTeamPolicyResponse>("SetTeamPolicy", idempotent: true)
    public static let listTeamPolicies = RPCMethod<Sigma_V1_ListTeamPoliciesRequest, Sigma_V1_ListTeamPoliciesResponse>("ListTeamPolicies", idempotent: true)

    public static let listInstances = RPCMethod<Sigma_V1_ListInstancesRequest, Sigma_V1_ListInstancesResponse>("ListInstances", idempotent: true)
    public static let getInstance = RPCMethod<Sigma_V1_GetInstanceRequest, Sigma_V1_GetInstanceResponse>("GetInstance", idempotent: true)
    public static let updateResources = RPCMethod<Sigma_V1_UpdateResourcesRequest, Sigma_V1_UpdateResourcesResponse>("UpdateResources", idempotent: true)
    public static let migrateInstance = RPCMethod<Sigma_V1_MigrateInstanceRequest, Sigma_V1_MigrateInstanceResponse>("MigrateInstance", idempotent: false)
    public static let restartInstance = RPCMethod<Sigma_V1_GetInstanceRequest, Sigma_V1_RestartInstanceResponse>("RestartInstance", idempotent: false)
    public static let recommendResources = RPCMethod<Sigma_V1_RecommendResourcesRequest, Sigma_V1_RecommendResourcesResponse>(
        "RecommendResources", idempotent: true)
    public static let issueToken = RPCMethod<Sigma_V1_IssueTokenRequest, Sigma_V1_IssueTokenResponse>("IssueToken", idempotent: false)
    public static let getAssignments = RPCMethod<Sigma_V1_GetAssignmentsRequest, Sigma_V1_GetAssignmentsResponse>("GetAssignments", idempotent: true)
    public static let getRoutes = RPCMethod<Sigma_V1_GetRoutesRequest, Sigma_V1_GetRoutesResponse>("GetRoutes", idempotent: true)
    public static let listEvents = RPCMethod<Sigma_V1_ListEventsRequest, Sigma_V1_ListEventsResponse>("ListEvents", idempotent: true)

    /// Every method above (`all`: their names): what the fuzzer sends, what the access rules and docs/protocol.md are
    /// checked against (MethodRegistryTests reads this file to keep the list whole).
    public static let methods: [any AnyRPCMethod] = [
        registerNode, heartbeat, cordonNode, uncordonNode, drainNode, removeNode,
        listNodes, getPool, applyApp, getApp, listApps, deleteApp, scaleApp,
        rolloutHistory, rolloutUndo, listRollouts, restartRollout, pauseRollout, resumeRollout, promoteRollout, setQuota, listQuotas, setTeamPolicy,
        listTeamPolicies, listInstances, getInstance, updateResources, migrateInstance, restartInstance, recommendResources,
        issueToken, getAssignments, getRoutes, listEvents,
    ]
    public static var all: [String] { methods.map(\.name) }
}

/// Methods of sigma-discovery.
public enum DiscoveryMethods {
    public static let resolve = RPCMethod<Sigma_V1_ResolveRequest, Sigma_V1_ResolveResponse>("Resolve", idempotent: true)

    /// Every method above (`all`: their names): what the fuzzer sends, what the access rules and docs/protocol.md are
    /// checked against (MethodRegistryTests reads this file to keep the list whole).
    public static let methods: [any AnyRPCMethod] = [resolve]
    public static var all: [String] { methods.map(\.name) }
}

/// Methods of sigma-config.
public enum ConfigMethods {
    public static let publish = RPCMethod<Sigma_V1_PublishConfigRequest, Sigma_V1_PublishConfigResponse>("PublishConfig", idempotent: false)
    public static let get = RPCMethod<Sigma_V1_GetConfigRequest, Sigma_V1_GetConfigResponse>("GetConfig", idempotent: true)
    public static let history = RPCMethod<Sigma_V1_ConfigHistoryRequest, Sigma_V1_ConfigHistoryResponse>("ConfigHistory", idempotent: true)
    public static let diff = RPCMethod<Sigma_V1_DiffConfigRequest, Sigma_V1_DiffConfigResponse>("DiffConfig", idempotent: true)
    public static let rollback = RPCMethod<Sigma_V1_RollbackConfigRequest, Sigma_V1_PublishConfigResponse>("RollbackConfig", idempotent: false)
    public static let gray = RPCMethod<Sigma_V1_GrayConfigRequest, Sigma_V1_ConfigReleaseResponse>("GrayConfig", idempotent: true)
    public static let promote = RPCMethod<Sigma_V1_ConfigAppRequest, Sigma_V1_ConfigReleaseResponse>("PromoteConfig", idempotent: false)
    public static let abandon = RPCMethod<Sigma_V1_ConfigAppRequest, Sigma_V1_ConfigReleaseResponse>("AbandonConfig", idempotent: false)
    public static let fetch = RPCMethod<Sigma_V1_FetchConfigRequest, Sigma_V1_FetchConfigResponse>("FetchConfig", idempotent: true)
    public static let delete = RPCMethod<Sigma_V1_ConfigAppRequest, Sigma_V1_DeleteConfigResponse>("DeleteConfig", idempotent: false)

    /// Every method above (`all`: their names): what the fuzzer sends, what the access rules and docs/protocol.md are
    /// checked against (MethodRegistryTests reads this file to keep the list whole).
    public static let methods: [any AnyRPCMethod] = [
        publish, get, history, diff, rollback, gray, promote, abandon,
        fetch, delete,
    ]
    public static var all: [String] { methods.map(\.name) }
}

/// Methods of sigma-agent (each agent serves its own node).
public enum AgentMethods {
    public static let readLogs = RPCMethod<Sigma_V1_ReadLogsRequest, Sigma_V1_ReadLogsResponse>("ReadLogs", idempotent: true)
    public static let listLocalInstances = RPCMethod<Sigma_V1_ListLocalInstancesRequest, Sigma_V1_ListLocalInstancesResponse>(
        "ListLocalInstances", idempotent: true)

    /// Every method above (`all`: their names): what the fuzzer sends, what the access rules and docs/protocol.md are
    /// checked against (MethodRegistryTests reads this file to keep the list whole).
    public static let methods: [any AnyRPCMethod] = [readLogs, listLocalInstances]
    public static var all: [String] { methods.map(\.name) }
}

/// Access control, served by sigma-scheduler (operators only).
public enum AccessMethods {
    public static let addPrincipal = RPCMethod<Sigma_V1_AddPrincipalRequest, Sigma_V1_AddPrincipalResponse>("AddPrincipal", idempotent: true)
    public static let removePrincipal = RPCMethod<Sigma_V1_RemovePrincipalRequest, Sigma_V1_RemovePrincipalResponse>(
        "RemovePrincipal", idempotent: true)
    public static let listPrincipals = RPCMethod<Sigma_V1_ListPrincipalsRequest, Sigma_V1_ListPrincipalsResponse>(
        "ListPrincipals", idempotent: true)
    public static let listAudit = RPCMethod<Sigma_V1_ListAuditRequest, Sigma_V1_ListAuditResponse>("ListAudit", idempotent: true)

    /// Every method above (`all`: their names): what the fuzzer sends, what the access rules and docs/protocol.md are
    /// checked against (MethodRegistryTests reads this file to keep the list whole).
    public static let methods: [any AnyRPCMethod] = [addPrincipal, removePrincipal, listPrincipals, listAudit]
    public static var all: [String] { methods.map(\.name) }
}

/// The topics of the push feeds. Each ends where a name ends (`node/<name>/`), because ZeroMQ matches
/// subscriptions by prefix: a subscriber of node s-1 must not receive node s-10's events.
public enum FeedTopics {
    /// The scheduler's assignments of one node.
    public static func node(_ name: String) -> String { "node/\(name)/" }
    /// The scheduler's routes of every instance IP (the overlay).
    public static let routes = "routes"
    /// The config center's releases of one app.
    public static func config(_ app: String) -> String { "config/\(app)/" }
    /// Discovery's endpoints of one app.
    public static func app(_ app: String) -> String { "app/\(app)/" }
}
