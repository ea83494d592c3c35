import ArgumentParser
import ClientKit
import Foundation
import Logging
import RPC

/// Flags every service shares (the control plane adds its database's, `DatabaseOptions`). Each flag can also come from the environment variable named in its help.
public struct ServiceOptions: ParsableArguments, Sendable {
    @Option(help: "ZeroMQ endpoint to serve on, e.g. tcp://0.0.0.0:7101; port * picks a free one. [SIGMA_LISTEN]")
    public var listen: String?

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

    public func resolvedListen(_ kind: ServiceKind) -> String {
        listen ?? environmentValue("SIGMA_LISTEN") ?? kind.defaultEndpoint
    }

    public func resolvedLogLevel() throws -> Logger.Level {
        let text = logLevel ?? environmentValue("SIGMA_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: text) else { throw ValidationError("unknown log level '\(text)'") }
        return level
    }

    public func resolvedLogFormat() throws -> LogFormat {
        let text = logFormat ?? environmentValue("SIGMA_LOG_FORMAT") ?? "text"
        guard let format = LogFormat(rawValue: text) else { throw ValidationError("unknown log format '\(text)' (text or json)") }
        return format
    }

    /// The server side of CURVE, when a key pair is configured, with the named keys of `--curve-allow`.
    /// The agent admits exactly those; a control-plane service also every key in its database's principals
    /// table (then `--curve-allow` is optional: its keys are operators, to add the first others), and
    /// Discovery and the config center also unknown keys that prove themselves with an instance token.
    public func resolvedCurve(_ kind: ServiceKind) throws -> (configuration: CurveServerConfiguration, bootstrap: [String: String])? {
        guard let keyPath = curveKey ?? environmentValue("SIGMA_CURVE_KEY") else { return nil }
        let allowPath = curveAllow ?? environmentValue("SIGMA_CURVE_ALLOW")
        if allowPath == nil && !kind.usesDatabase {
            throw ValidationError("--curve-key needs --curve-allow: with CURVE on, only allow-listed clients get in")
        }
        let bootstrap = try allowPath.map { try CurveKeyFile.namedAllowList(path: $0) } ?? [:]
        let list = CurveAllowList(Set(bootstrap.keys), admitsUnknownKeys: kind.servesInstances)
        return (CurveServerConfiguration(keyPair: try CurveKeyPair.load(path: keyPath), allowList: list), bootstrap)
    }

    public func serverConfiguration(_ kind: ServiceKind, curve: CurveServerConfiguration?) throws -> RPCServerConfiguration {
        var configuration = RPCServerConfiguration(endpoint: resolvedListen(kind))
        if let bytes = maxRequestBytes ?? environmentValue("SIGMA_MAX_REQUEST_BYTES").flatMap(Int.init) {
            configuration.maxRequestBytes = bytes
        }
        configuration.curve = curve
        return configuration
    }
}

