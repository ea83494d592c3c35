/// A request that names an app. Every service refuses one whose name is not an app name with
/// INVALID_ARGUMENT before its handler runs (ControlPlane's `RPCHandlers.register` overload), so a name
/// that cannot exist never gets NOT_FOUND from one service and INVALID_ARGUMENT from another.
public protocol NamesAnApp: Sendable {
    /// The field that holds the name, as docs/protocol.md writes it.
    static var appField: String { get }
    /// True when an empty name is allowed: it then means every app, or the request names its object otherwise.
    static var appMayBeEmpty: Bool { get }
    var namedApp: String { get }
}

extension Sigma_V1_AppRequest: NamesAnApp {
    public static var appField: String { "name" }
    public static var appMayBeEmpty: Bool { false }
    public var namedApp: String { name }
}

extension Sigma_V1_ScaleAppRequest: NamesAnApp {
    public static var appField: String { "name" }
    public static var appMayBeEmpty: Bool { false }
    public var namedApp: String { name }
}

extension Sigma_V1_RolloutUndoRequest: NamesAnApp {
    public static var appField: String { "name" }
    public static var appMayBeEmpty: Bool { false }
    public var namedApp: String { name }
}

/// Requests whose field `app` names the app.
public protocol NamesAnAppInAppField: NamesAnApp {
    var app: String { get }
}

extension NamesAnAppInAppField {
    public static var appField: String { "app" }
    public var namedApp: String { app }
}

/// Requests whose `app` filters (empty: every app) or may be left out for another way of naming the object.
public protocol FiltersByApp: NamesAnAppInAppField {}

extension FiltersByApp {
    public static var appMayBeEmpty: Bool { true }
}

extension Sigma_V1_ListRolloutsRequest: FiltersByApp {}
extension Sigma_V1_ListInstancesRequest: FiltersByApp {}
extension Sigma_V1_GetInstanceRequest: FiltersByApp {}
extension Sigma_V1_UpdateResourcesRequest: FiltersByApp {}
extension Sigma_V1_ListEventsRequest: FiltersByApp {}

/// Requests whose `app` is required.
public protocol RequiresApp: NamesAnAppInAppField {}

extension RequiresApp {
    public static var appMayBeEmpty: Bool { false }
}

extension Sigma_V1_PublishConfigRequest: RequiresApp {}
extension Sigma_V1_GetConfigRequest: RequiresApp {}
extension Sigma_V1_ConfigHistoryRequest: RequiresApp {}
extension Sigma_V1_DiffConfigRequest: RequiresApp {}
extension Sigma_V1_RollbackConfigRequest: RequiresApp {}
extension Sigma_V1_GrayConfigRequest: RequiresApp {}
extension Sigma_V1_ConfigAppRequest: RequiresApp {}
extension Sigma_V1_FetchConfigRequest: RequiresApp {}
extension Sigma_V1_ResolveRequest: RequiresApp {}
extension Sigma_V1_RecommendResourcesRequest: RequiresApp {}
