import ArgumentParser
import Foundation
import Logging
import RPC

/// The version every Sigma executable reports.
public let sigmaVersion = "0.1.0"

/// A variable of the process environment; unset and empty are the same.
public func environmentValue(_ name: String) -> String? {
    guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
    return value
}

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
        guard let serverKey = serverKey ?? environmentValue("SIGMA_SERVER_KEY") ?? file["server-key"] else { return nil }
        guard let keyPath = clientKey ?? environmentValue("SIGMA_CLIENT_KEY") ?? file["client-key"] else {
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
        return flag ?? environmentValue(kind.endpointVariable) ?? ConfigFile.load()[kind.rawValue]
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
        let path = (environmentValue("HOME") ?? "/root") + "/.sigma/config"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
        var values: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 { values[parts[0]] = parts[1] }
        }
        return values
    }
}
