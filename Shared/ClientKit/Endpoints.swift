import ArgumentParser
import Foundation
import Logging
import Protocol
import RPC
#if canImport(Glibc)
import Glibc
#endif

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

    /// A client for `endpoints` (comma-separated replicas allowed; see ``EndpointList/parse(_:)``).
    public func client(endpoints: String, timeout: Duration = .seconds(10), file: [String: String] = [:], logger: Logger) throws -> RPCClient {
        var configuration = RPCClientConfiguration(endpoints: try EndpointList.parse(endpoints))
        configuration.defaultTimeout = timeout
        configuration.curve = try curve(file: file)
        return try RPCClient(configuration: configuration, logger: logger)
    }
}

/// Endpoints as users write them: `tcp://HOST:PORT`, or `HOST:PORT` (tcp:// is the only transport), comma-separated.
public enum EndpointList {
    /// Each endpoint with its `tcp://`; anything else is a `ValidationError` that shows the accepted forms.
    public static func parse(_ text: String) throws -> [String] {
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !parts.isEmpty else { throw ValidationError("no endpoint given (expected tcp://HOST:PORT or HOST:PORT)") }
        return try parts.map { part in
            var address = Substring(part)
            if address.hasPrefix("tcp://") {
                address = address.dropFirst("tcp://".count)
            } else if address.contains("://") {
                throw ValidationError("endpoint \"\(part)\": only tcp:// is supported (tcp://HOST:PORT or HOST:PORT)")
            }
            guard let colon = address.lastIndex(of: ":"), colon != address.startIndex,
                  let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port) else {
                throw ValidationError("endpoint \"\(part)\": expected tcp://HOST:PORT or HOST:PORT, the port 1-65535")
            }
            return "tcp://" + address
        }
    }

    /// Whether nothing listens at any of `endpoints` (each `tcp://HOST:PORT` with a numeric IPv4 host): every
    /// TCP connect was refused at once. An endpoint that accepts, times out (within `within`), or names a
    /// host by name counts as maybe there; a call then waits its deadline as usual.
    public static func allRefuse(_ endpoints: [String], within: Duration = .milliseconds(500)) -> Bool {
        !endpoints.isEmpty && endpoints.allSatisfy { refuses($0, within: within) }
    }

    static func refuses(_ endpoint: String, within: Duration) -> Bool {
        let address = endpoint.dropFirst("tcp://".count)
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else { return false }
        var target = sockaddr_in()
        target.sin_family = sa_family_t(AF_INET)
        target.sin_port = port.bigEndian
        guard inet_pton(AF_INET, String(address[..<colon]), &target.sin_addr) == 1 else { return false }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let started = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if started == 0 { return false }
        if errno == ECONNREFUSED { return true }
        guard errno == EINPROGRESS else { return false }
        var poll = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let millis = Int32(within.components.seconds * 1000 + within.components.attoseconds / 1_000_000_000_000_000)
        guard Glibc.poll(&poll, 1, millis) == 1 else { return false }
        var failure: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &length)
        return failure == ECONNREFUSED
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
    @Option(help: "Context of ~/.sigma/config to use (default: its current-context). [SIGMA_CONTEXT]") public var context: String?
    @OptionGroup public var keys: ClientOptions

    public init() {}

    /// The context named for this call, if any: the flag, then `SIGMA_CONTEXT`.
    public var chosenContext: String? { context ?? environmentValue("SIGMA_CONTEXT") }

    /// ~/.sigma/config's settings for this call (its context's).
    public var settings: [String: String] { ConfigFile.load(context: chosenContext) }

    public func validate() throws { try ConfigFile.check(context: chosenContext) }

    public func endpoints(_ kind: ServiceKind) -> String { givenEndpoints(kind) ?? kind.defaultEndpoint }

    /// `kind`'s endpoints when the flag, the variable or ~/.sigma/config names them.
    public func givenEndpoints(_ kind: ServiceKind) -> String? {
        let flag: String? = switch kind {
        case .scheduler: scheduler
        case .allocator: allocator
        case .agent: agent
        case .config: config
        case .discovery: discovery
        }
        return flag ?? environmentValue(kind.endpointVariable) ?? settings[kind.rawValue]
    }

    /// A client for `kind`'s endpoints with the per-call timeout and CURVE keys given; its logs stay quiet
    /// (sigmactl reports errors itself). When nothing listens at any of them (every connect refused) it fails
    /// at once with `UNAVAILABLE`, instead of each call waiting out its deadline.
    public func client(_ kind: ServiceKind, at given: String? = nil) throws -> RPCClient {
        var logger = Logger(label: "sigmactl")
        logger.logLevel = .critical
        let list = try EndpointList.parse(given ?? endpoints(kind))
        if EndpointList.allRefuse(list) {
            throw RPCError.unavailable("nothing listens at \(list.joined(separator: ", ")) (is the \(kind.rawValue) running? "
                           + "set --\(kind.rawValue), \(kind.endpointVariable) or ~/.sigma/config)")
        }
        return try keys.client(endpoints: list.joined(separator: ","), timeout: .milliseconds(Int(timeout * 1000)), file: settings, logger: logger)
    }
}

/// `~/.sigma/config`: `key = value` lines, e.g. `scheduler = tcp://10.0.0.1:7101,tcp://10.0.0.2:7101`, and with
/// CURVE `client-key = PATH` and `server-key = PATH_OR_KEY`. Several clusters are contexts: a `[context NAME]`
/// line starts one, whose keys override the top-level ones; `current-context = NAME` (top-level) picks one,
/// `--context NAME` or `SIGMA_CONTEXT` another for one call.
public enum ConfigFile {
    public static var path: String { (environmentValue("HOME") ?? "/root") + "/.sigma/config" }

    public struct Contents: Sendable {
        public var top: [String: String] = [:]
        public var contexts: [String: [String: String]] = [:]
        /// The contexts in the file's order.
        public var names: [String] = []
        public var current: String? { top["current-context"] }
    }

    public static func read() -> Contents { parse((try? String(contentsOfFile: path, encoding: .utf8)) ?? "") }

    public static func parse(_ text: String) -> Contents {
        var contents = Contents()
        var section: String?
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[context "), line.hasSuffix("]") {
                let name = String(line.dropFirst("[context ".count).dropLast()).trimmingCharacters(in: .whitespaces)
                section = name
                if contents.contexts[name] == nil { contents.contexts[name] = [:]; contents.names.append(name) }
                continue
            }
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            if let section { contents.contexts[section]![parts[0]] = parts[1] } else { contents.top[parts[0]] = parts[1] }
        }
        return contents
    }

    /// The settings in force: the top-level keys, overridden by those of `context` (else of the current one).
    public static func load(context: String? = nil) -> [String: String] {
        let contents = read()
        guard let name = context ?? contents.current, let chosen = contents.contexts[name] else { return contents.top }
        return contents.top.merging(chosen) { _, context in context }
    }

    /// A ValidationError unless `context` (else the current one) names a context of the file.
    public static func check(context: String?) throws {
        let contents = read()
        guard let name = context ?? contents.current else { return }
        guard contents.contexts[name] != nil else {
            let known = contents.names.isEmpty ? "none" : contents.names.joined(separator: ", ")
            throw ValidationError("no context \"\(name)\" in \(path) (contexts: \(known); sigmactl config set-context NAME --scheduler ...)")
        }
    }

    /// Writes the file with `current-context` set (or removed when nil), keeping every other line.
    public static func setCurrent(_ name: String?) throws {
        var lines = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        lines.removeAll { $0.trimmingCharacters(in: .whitespaces).hasPrefix("current-context") }
        if let name { lines.insert("current-context = \(name)", at: 0) }
        try write(lines)
    }

    /// Writes `[context NAME]` with `values` (replacing that section if there is one), keeping the rest.
    public static func setContext(_ name: String, _ values: [(String, String)]) throws {
        let lines = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var kept: [String] = []
        var inside = false
        for line in lines {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("[context ") { inside = trimmed == "[context \(name)]" }
            if !inside { kept.append(line) }
        }
        while kept.last?.isEmpty == true { kept.removeLast() }
        kept.append("[context \(name)]")
        kept += values.map { "\($0.0) = \($0.1)" }
        try write(kept)
    }

    private static func write(_ lines: [String]) throws {
        let folder = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var text = lines.joined(separator: "\n")
        if !text.hasSuffix("\n") { text += "\n" }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
