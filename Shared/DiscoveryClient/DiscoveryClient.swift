import Foundation
import Logging
import Protocol
import RPC
import Synchronization

/// What service code uses at startup to find its peers: `Resolve` against every Discovery replica, a blocking
/// wait for changes, and a local cache file it falls back to when no replica answers.
///
/// ```swift
/// let discovery = try DiscoveryClient(endpoints: ["tcp://10.0.0.5:7105", "tcp://10.0.0.6:7105"],
///                                     cacheFile: "/var/lib/myapp/peers.cache")
/// let peers = try await discovery.waitForPeers("zookeeper", count: 3, readyOnly: false, within: .seconds(120))
/// ```
public final class DiscoveryClient: Sendable {
    /// An answer: the app's endpoints and index, and whether it came from the cache file (and when that was saved).
    public struct Resolution: Sendable {
        public var app: String
        public var index: UInt64
        public var endpoints: [Sigma_V1_Endpoint]
        public var fromCache: Bool
        public var savedAt: Date?
    }

    /// Filters, as `Resolve` takes them.
    public struct Filter: Sendable, Hashable {
        public var readyOnly: Bool
        public var state: String
        public var idc: String

        public init(readyOnly: Bool = false, state: String = "", idc: String = "") {
            self.readyOnly = readyOnly
            self.state = state
            self.idc = idc
        }

        var cacheKey: String { "ready=\(readyOnly)&state=\(state)&idc=\(idc)" }
    }

    let client: RPCClient
    let cacheFile: String?
    let timeout: Duration
    private let token: String
    /// A file holding the current token (SIGMA_TOKEN_FILE), read at every call: it outlives the token given
    /// at start (a restarted agent issues a new one and rewrites only the file).
    private let tokenFile: String?
    /// The last answer per question, as bytes and decoded: an unchanged answer (the usual case) is neither
    /// decoded nor written to the cache file again.
    private let last = Mutex<[String: (bytes: [UInt8], answer: Sigma_V1_ResolveResponse)]>([:])

    public init(
        endpoints: [String], cacheFile: String? = nil, curve: CurveClientConfiguration? = nil, token: String = "",
        tokenFile: String? = nil, timeout: Duration = .seconds(3), logger: Logger = Logger(label: "sigma.discovery-client")
    ) throws {
        var configuration = RPCClientConfiguration(endpoints: endpoints)
        configuration.defaultTimeout = timeout
        configuration.curve = curve
        client = try RPCClient(configuration: configuration, logger: logger)
        self.cacheFile = cacheFile
        self.timeout = timeout
        self.token = token
        self.tokenFile = tokenFile
    }

    /// The token to send: the file's when there is one, else the one given.
    var currentToken: String {
        guard let tokenFile, let text = try? String(contentsOfFile: tokenFile, encoding: .utf8) else { return token }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? token : trimmed
    }

    /// The client a business instance makes from what its agent gave it: SIGMA_DISCOVERY (the replicas),
    /// SIGMA_TOKEN_FILE and SIGMA_TOKEN (who it is) and, when the control plane runs CURVE, SIGMA_SERVER_KEY (the instance then
    /// connects with a key pair of its own making; the token, not the key, names it).
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment, cacheFile: String? = nil,
        timeout: Duration = .seconds(3), logger: Logger = Logger(label: "sigma.discovery-client")
    ) throws -> DiscoveryClient {
        guard let endpoints = environment["SIGMA_DISCOVERY"], !endpoints.isEmpty else {
            throw RPCConfigurationError("SIGMA_DISCOVERY is not set (it is set in every instance Sigma runs)")
        }
        var curve: CurveClientConfiguration?
        if let serverKey = environment["SIGMA_SERVER_KEY"], !serverKey.isEmpty {
            curve = CurveClientConfiguration(keyPair: try CurveKeyPair.generate(), serverPublicKey: serverKey)
        }
        return try DiscoveryClient(
            endpoints: endpoints.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }, cacheFile: cacheFile,
            curve: curve, token: environment["SIGMA_TOKEN"] ?? "", tokenFile: environment["SIGMA_TOKEN_FILE"], timeout: timeout,
            logger: logger)
    }

    public func close() { client.close() }

    /// The client's socket thread as a task executor: a loop of lookups run under
    /// `withTaskExecutorPreference(discovery.executor) { ... }` saves two thread hand-offs per lookup. Code in
    /// it must not block: the loop serves every call of this client meanwhile (the cache file is written only
    /// when an answer changes).
    public var executor: RPCClientExecutor { client.executor }

    /// The app's endpoints now. When no replica answers (UNAVAILABLE, DEADLINE_EXCEEDED) and the cache file holds
    /// an earlier answer for the same app and filter, that one comes back with `fromCache`.
    public func resolve(_ app: String, filter: Filter = Filter()) async throws -> Resolution {
        try await call(app, filter: filter, waitIndex: 0, wait: nil)
    }

    /// Blocks until the app's index is above `index` (a change), or `timeout` passes (same index, same endpoints).
    public func waitForChange(_ app: String, after index: UInt64, filter: Filter = Filter(), timeout: Duration = .seconds(60)) async throws -> Resolution {
        try await call(app, filter: filter, waitIndex: index, wait: timeout)
    }

    /// For self-forming clusters: waits (bounded) until at least `count` endpoints pass the filter.
    public func waitForPeers(_ app: String, count: Int, filter: Filter = Filter(), within limit: Duration) async throws -> Resolution {
        let deadline = ContinuousClock.now + limit
        var answer = try await resolve(app, filter: filter)
        while answer.endpoints.count < count {
            let left = deadline - .now
            guard left > .zero else {
                throw RPCError.deadlineExceeded("\(app): \(answer.endpoints.count) of \(count) endpoints after \(limit)")
            }
            answer = answer.fromCache
                ? try await resolve(app, filter: filter)
                : try await waitForChange(app, after: answer.index, filter: filter, timeout: min(left, .seconds(60)))
        }
        return answer
    }

    private func call(_ app: String, filter: Filter, waitIndex: UInt64, wait: Duration?) async throws -> Resolution {
        var request = Sigma_V1_ResolveRequest()
        request.app = app
        request.readyOnly = filter.readyOnly
        request.state = filter.state
        request.idc = filter.idc
        request.waitIndex = waitIndex
        if let wait { request.waitTimeoutMs = UInt32(clamping: wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000) }
        do {
            let bytes = try await client.callRaw(
                method: DiscoveryMethods.resolve.name, body: try request.serializedBytes(), idempotent: true,
                timeout: timeout + (wait ?? .zero), token: currentToken)
            let key = "\(app)?\(filter.cacheKey)"
            let answer: Sigma_V1_ResolveResponse
            if let known = last.withLock({ $0[key] }), known.bytes == bytes {
                answer = known.answer
            } else {
                do {
                    answer = try Sigma_V1_ResolveResponse(serializedBytes: bytes)
                } catch {
                    throw RPCError.internal("Resolve answered with a message that does not decode: \(error)")
                }
                last.withLock { $0[key] = (bytes, answer) }
                save(answer, filter: filter)
            }
            return Resolution(app: app, index: answer.index, endpoints: answer.endpoints, fromCache: false, savedAt: nil)
        } catch let error as RPCError where error.code == .unavailable || error.code == .deadlineExceeded {
            guard let cached = load(app, filter: filter) else { throw error }
            return cached
        }
    }

    // The cache file: JSON {"<app>?<filter>": {"saved": seconds since 1970, "answer": base64 ResolveResponse}}.

    private func save(_ answer: Sigma_V1_ResolveResponse, filter: Filter) {
        guard let cacheFile, let bytes: [UInt8] = try? answer.serializedBytes() else { return }
        var all = readCache(cacheFile)
        all["\(answer.app)?\(filter.cacheKey)"] = ["saved": Date().timeIntervalSince1970, "answer": Data(bytes).base64EncodedString()]
        guard let data = try? JSONSerialization.data(withJSONObject: all, options: [.sortedKeys]) else { return }
        try? data.write(to: URL(fileURLWithPath: cacheFile), options: .atomic)
    }

    private func load(_ app: String, filter: Filter) -> Resolution? {
        guard let cacheFile, let entry = readCache(cacheFile)["\(app)?\(filter.cacheKey)"] as? [String: Any],
              let encoded = entry["answer"] as? String, let data = Data(base64Encoded: encoded),
              let answer = try? Sigma_V1_ResolveResponse(serializedBytes: [UInt8](data))
        else { return nil }
        let saved = (entry["saved"] as? Double).map { Date(timeIntervalSince1970: $0) }
        return Resolution(app: app, index: answer.index, endpoints: answer.endpoints, fromCache: true, savedAt: saved)
    }

    private func readCache(_ path: String) -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        return object
    }
}
