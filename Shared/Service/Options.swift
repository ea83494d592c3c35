import ArgumentParser
import Foundation
import Logging
import RPC
import Store

/// The five services, with their default endpoints on the loopback.
public enum ServiceKind: String, Sendable, CaseIterable, ExpressibleByArgument {
    case scheduler, allocator, agent, config, discovery

    public var defaultEndpoint: String {
        switch self {
        case .scheduler: "tcp://127.0.0.1:7101"
        case .allocator: "tcp://127.0.0.1:7102"
        case .agent: "tcp://127.0.0.1:7103"
        case .config: "tcp://127.0.0.1:7104"
        case .discovery: "tcp://127.0.0.1:7105"
        }
    }

    /// The environment variable naming this service's endpoints for clients (comma-separated replicas).
    public var endpointVariable: String { "SIGMA_\(rawValue.uppercased())" }

    /// Where this service's push feed (PUB) binds unless told otherwise: its RPC port + 10, on every interface.
    public var defaultEventsEndpoint: String {
        let port = Int(defaultEndpoint.split(separator: ":").last!)! + 10
        return "tcp://0.0.0.0:\(port)"
    }

    /// The environment variable that sets this service's push feed endpoint.
    public var eventsVariable: String { "SIGMA_\(rawValue.uppercased())_EVENTS" }

    /// Control-plane services connect to PostgreSQL; the agent never does.
    public var usesDatabase: Bool { self != .agent }

    /// Business instances call Discovery and the config center (with their token).
    public var servesInstances: Bool { self == .discovery || self == .config }
}

/// The push feed of the services that have one (scheduler, config center, discovery).
public struct FeedOptions: ParsableArguments, Sendable {
    @Option(help: "ZeroMQ endpoint of this service's push feed (PUB); port * picks a free one. [SIGMA_<SERVICE>_EVENTS]")
    public var eventsListen: String?

    @Option(help: "The feed's endpoint as clients are told it, when they cannot use the bound one (bound to 0.0.0.0, behind NAT). [SIGMA_<SERVICE>_EVENTS_ADVERTISE]")
    public var eventsAdvertise: String?

    public init() {}
}

/// Flags every service shares. Each flag can also come from the environment variable named in its help.
public struct ServiceOptions: ParsableArguments, Sendable {
    @Option(help: "ZeroMQ endpoint to serve on, e.g. tcp://0.0.0.0:7101; port * picks a free one. [SIGMA_LISTEN]")
    public var listen: String?

    @Option(help: "PostgreSQL URL or conninfo; several hosts allowed. [SIGMA_DATABASE_URL]")
    public var databaseURL: String?

    @Option(help: "PostgreSQL connections kept open. [SIGMA_DB_POOL_SIZE]")
    public var dbPoolSize: Int?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical. [SIGMA_LOG_LEVEL]")
    public var logLevel: String?

    @Option(help: "Log format: text (logfmt) or json. [SIGMA_LOG_FORMAT]")
    public var logFormat: String?

    @Option(help: "CURVE key pair file of this service (from `sigmactl keys generate`); turns CURVE on. [SIGMA_CURVE_KEY]")
    public var curveKey: String?

    @Option(help: "Client public keys allowed in: a directory of *.pub files or a file of keys. [SIGMA_CURVE_ALLOW]")
    public var curveAllow: String?

    @Option(help: "Requests larger than this many bytes get RESOURCE_EXHAUSTED. [SIGMA_MAX_REQUEST_BYTES]")
    public var maxRequestBytes: Int?

    @Option(help: "Write the bound endpoint to this file once serving (for supervisors and tests).")
    public var readyFile: String?

    public init() {}

    public static func environment(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        return value
    }

    public func resolvedListen(_ kind: ServiceKind) -> String {
        listen ?? Self.environment("SIGMA_LISTEN") ?? kind.defaultEndpoint
    }

    public func resolvedDatabaseURL() throws -> String {
        guard let url = databaseURL ?? Self.environment("SIGMA_DATABASE_URL") else {
            throw ValidationError("no database: pass --database-url or set SIGMA_DATABASE_URL")
        }
        return url
    }

    public var resolvedPoolSize: Int {
        dbPoolSize ?? Self.environment("SIGMA_DB_POOL_SIZE").flatMap(Int.init) ?? 8
    }

    public func resolvedLogLevel() throws -> Logger.Level {
        let text = logLevel ?? Self.environment("SIGMA_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: text) else { throw ValidationError("unknown log level '\(text)'") }
        return level
    }

    public func resolvedLogFormat() throws -> LogFormat {
        let text = logFormat ?? Self.environment("SIGMA_LOG_FORMAT") ?? "text"
        guard let format = LogFormat(rawValue: text) else { throw ValidationError("unknown log format '\(text)' (text or json)") }
        return format
    }

    /// The server side of CURVE, when a key pair is configured, with the named keys of `--curve-allow`.
    /// The agent admits exactly those; a control-plane service also every key in its database's principals
    /// table (then `--curve-allow` is optional: its keys are operators, to add the first others), and
    /// Discovery and the config center also unknown keys that prove themselves with an instance token.
    public func resolvedCurve(_ kind: ServiceKind) throws -> (configuration: CurveServerConfiguration, bootstrap: [String: String])? {
        guard let keyPath = curveKey ?? Self.environment("SIGMA_CURVE_KEY") else { return nil }
        let allowPath = curveAllow ?? Self.environment("SIGMA_CURVE_ALLOW")
        if allowPath == nil && !kind.usesDatabase {
            throw ValidationError("--curve-key needs --curve-allow: with CURVE on, only allow-listed clients get in")
        }
        let bootstrap = try allowPath.map { try CurveKeyFile.namedAllowList(path: $0) } ?? [:]
        let list = CurveAllowList(Set(bootstrap.keys), admitsUnknownKeys: kind.servesInstances)
        return (CurveServerConfiguration(keyPair: try CurveKeyPair.load(path: keyPath), allowList: list), bootstrap)
    }

    public func serverConfiguration(_ kind: ServiceKind, curve: CurveServerConfiguration?) throws -> RPCServerConfiguration {
        var configuration = RPCServerConfiguration(endpoint: resolvedListen(kind))
        if let bytes = maxRequestBytes ?? Self.environment("SIGMA_MAX_REQUEST_BYTES").flatMap(Int.init) {
            configuration.maxRequestBytes = bytes
        }
        configuration.curve = curve
        return configuration
    }
}

/// How a client reaches one service: its endpoints and, with CURVE, the keys to use.
public struct ClientOptions: ParsableArguments, Sendable {
    @Option(help: "CURVE key pair file of this client. [SIGMA_CLIENT_KEY]")
    public var clientKey: String?

    @Option(help: "Public key (file or Z85 text) of the servers, when they require CURVE. [SIGMA_SERVER_KEY]")
    public var serverKey: String?

    public init() {}

    /// The client side of CURVE: flags, then `SIGMA_SERVER_KEY`/`SIGMA_CLIENT_KEY`, then (for sigmactl and the
    /// console) `server-key`/`client-key` of `~/.sigma/config` given as `file`.
    public func curve(file: [String: String] = [:]) throws -> CurveClientConfiguration? {
        guard let serverKey = serverKey ?? ServiceOptions.environment("SIGMA_SERVER_KEY") ?? file["server-key"] else { return nil }
        guard let keyPath = clientKey ?? ServiceOptions.environment("SIGMA_CLIENT_KEY") ?? file["client-key"] else {
            throw ValidationError("--server-key needs --client-key (this client's key pair)")
        }
        return CurveClientConfiguration(keyPair: try CurveKeyPair.load(path: keyPath),
                                        serverPublicKey: try CurveKeyFile.publicKey(fileOrKey: serverKey))
    }

    /// A client for `endpoints` (comma-separated replicas allowed).
    public func client(endpoints: String, timeout: Duration = .seconds(10), file: [String: String] = [:], logger: Logger) throws -> RPCClient {
        var configuration = RPCClientConfiguration(
            endpoints: endpoints.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        configuration.defaultTimeout = timeout
        configuration.curve = try curve(file: file)
        return try RPCClient(configuration: configuration, logger: logger)
    }
}

/// Where the services are: flags, then SIGMA_<SERVICE> variables, then ~/.sigma/config, then the defaults.
public struct EndpointOptions: ParsableArguments, Sendable {
    @Option(help: "Scheduler endpoints (comma-separated replicas). [SIGMA_SCHEDULER]") public var scheduler: String?
    @Option(help: "Allocator endpoints. [SIGMA_ALLOCATOR]") public var allocator: String?
    @Option(help: "Agent endpoints. [SIGMA_AGENT]") public var agent: String?
    @Option(help: "Config center endpoints. [SIGMA_CONFIG]") public var config: String?
    @Option(help: "Discovery endpoints. [SIGMA_DISCOVERY]") public var discovery: String?
    @Option(help: "Per-call timeout in seconds.") public var timeout: Double = 5
    @OptionGroup public var keys: ClientOptions

    public init() {}

    public func endpoints(_ kind: ServiceKind) -> String {
        let flag: String? = switch kind {
        case .scheduler: scheduler
        case .allocator: allocator
        case .agent: agent
        case .config: config
        case .discovery: discovery
        }
        return flag ?? ServiceOptions.environment(kind.endpointVariable) ?? ConfigFile.load()[kind.rawValue]
            ?? kind.defaultEndpoint
    }

    /// A client for `kind`'s endpoints with the per-call timeout and CURVE keys given; its logs stay quiet
    /// (sigmactl reports errors itself).
    public func client(_ kind: ServiceKind) throws -> RPCClient {
        var logger = Logger(label: "sigmactl")
        logger.logLevel = .critical
        return try keys.client(endpoints: endpoints(kind), timeout: .milliseconds(Int(timeout * 1000)), file: ConfigFile.load(), logger: logger)
    }
}

/// `~/.sigma/config`: `key = value` lines, e.g. `scheduler = tcp://10.0.0.1:7101,tcp://10.0.0.2:7101`, and with
/// CURVE `client-key = PATH` and `server-key = PATH_OR_KEY`.
public enum ConfigFile {
    public static func load() -> [String: String] {
        let path = (ServiceOptions.environment("HOME") ?? "/root") + "/.sigma/config"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
        var values: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 { values[parts[0]] = parts[1] }
        }
        return values
    }
}
