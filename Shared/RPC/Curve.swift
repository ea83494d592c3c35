import CZeroMQ
import Foundation
import Synchronization

/// A CURVE key pair in Z85 text (40 characters each), as libzmq uses them.
public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: String
    public let secretKey: String

    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A new random key pair.
    public static func generate() throws -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { throw ZMQError("zmq_curve_keypair") }
        return CurveKeyPair(publicKey: string(fromCBuffer: pub), secretKey: string(fromCBuffer: sec))
    }

    /// The text of a secret key file: both keys. Keep it mode 0600.
    public var secretFileText: String {
        "# Sigma CURVE key pair; keep this file secret (mode 0600)\npublic-key = \(publicKey)\nsecret-key = \(secretKey)\n"
    }

    /// The text of a public key file: what goes into a server's allow-list or a client's `--server-key`.
    public var publicFileText: String { "public-key = \(publicKey)\n" }

    /// Reads a key pair written by `sigmactl keys generate`.
    public static func load(path: String) throws -> CurveKeyPair {
        let fields = try CurveKeyFile.fields(path: path)
        guard let pub = fields["public-key"], let sec = fields["secret-key"],
            CurveKeyFile.isZ85Key(pub), CurveKeyFile.isZ85Key(sec)
        else {
            throw RPCConfigurationError("\(path) is not a CURVE key pair file (needs public-key and secret-key lines)")
        }
        return CurveKeyPair(publicKey: pub, secretKey: sec)
    }
}

/// A configuration mistake found when a server or client is set up.
public struct RPCConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Reading of key files and allow-lists.
public enum CurveKeyFile {
    static func isZ85Key(_ text: String) -> Bool {
        text.utf8.count == 40
    }

    /// Whether `text` is a 32-byte key in Z85 (40 characters of the Z85 alphabet), as a principal's key must be.
    public static func isValidZ85Key(_ text: String) -> Bool {
        isZ85Key(text) && text.utf8.allSatisfy { z85Alphabet.contains($0) }
    }

    static let z85Alphabet = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)

    static func fields(path: String) throws -> [String: String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw RPCConfigurationError("cannot read key file \(path)")
        }
        var fields: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let parts = trimmed.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 { fields[parts[0]] = parts[1] }
        }
        return fields
    }

    /// Reads one public key: a file written by `sigmactl keys generate` (`.pub` or `.key`) or a bare Z85 key.
    public static func publicKey(fileOrKey: String) throws -> String {
        if isZ85Key(fileOrKey) && !FileManager.default.fileExists(atPath: fileOrKey) { return fileOrKey }
        guard let key = try fields(path: fileOrKey)["public-key"], isZ85Key(key) else {
            throw RPCConfigurationError("\(fileOrKey) holds no public-key line")
        }
        return key
    }

    /// Reads an allow-list: a directory of `*.pub` files, or one file with one Z85 key
    /// (or `public-key = KEY`) per line.
    public static func allowList(path: String) throws -> Set<String> {
        Set(try namedAllowList(path: path).keys)
    }

    /// An allow-list with a name for each key: a `*.pub` file's name without `.pub`, or in a file of keys
    /// `NAME = KEY` (a bare key is named `key-` and its first 8 characters).
    public static func namedAllowList(path: String) throws -> [String: String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw RPCConfigurationError("allow-list \(path) does not exist")
        }
        var keys: [String: String] = [:]
        if isDirectory.boolValue {
            let names = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".pub") }.sorted()
            for name in names { keys[try publicKey(fileOrKey: path + "/" + name)] = String(name.dropLast(4)) }
            return keys
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw RPCConfigurationError("cannot read allow-list \(path)")
        }
        for line in text.split(whereSeparator: \.isNewline) {
            var trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            var name: String?
            if let eq = trimmed.firstIndex(of: "=") {
                let label = trimmed[..<eq].trimmingCharacters(in: .whitespaces)
                if label != "public-key" && !label.isEmpty { name = label }
                trimmed = trimmed[trimmed.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            }
            guard isZ85Key(trimmed) else { throw RPCConfigurationError("\(path): '\(trimmed)' is not a Z85 public key") }
            keys[trimmed] = name ?? "key-" + trimmed.prefix(8)
        }
        return keys
    }
}

/// Z85 text of a 32-byte binary key (what ZAP hands over).
func z85(_ key: [UInt8]) -> String? {
    guard key.count == 32 else { return nil }
    var out = [CChar](repeating: 0, count: 41)
    let ok = key.withUnsafeBufferPointer { zmq_z85_encode(&out, $0.baseAddress, 32) }
    return ok == nil ? nil : string(fromCBuffer: out)
}

/// Server side of CURVE: the key pair to present and the client keys to accept.
public struct CurveServerConfiguration: Sendable {
    public var keyPair: CurveKeyPair
    /// The clients allowed in; everyone else is refused at the handshake. It can change while the server
    /// runs (keys added and revoked from the database).
    public var allowList: CurveAllowList

    public init(keyPair: CurveKeyPair, allowedClientKeys: Set<String>) {
        self.init(keyPair: keyPair, allowList: CurveAllowList(allowedClientKeys))
    }

    public init(keyPair: CurveKeyPair, allowList: CurveAllowList) {
        self.keyPair = keyPair
        self.allowList = allowList
    }

    /// The keys allowed in right now.
    public var allowedClientKeys: Set<String> { allowList.keys }
}

/// The client keys a CURVE server admits at the handshake, replaceable at runtime. With
/// `admitsUnknownKeys`, any key gets in (the connection is still encrypted) and is named by its key:
/// what it may then call is decided per call (business instances prove who they are with a token).
public final class CurveAllowList: Sendable {
    private let state: Mutex<Set<String>>
    public let admitsUnknownKeys: Bool

    public init(_ keys: Set<String> = [], admitsUnknownKeys: Bool = false) {
        state = Mutex(keys)
        self.admitsUnknownKeys = admitsUnknownKeys
    }

    public var keys: Set<String> { state.withLock { $0 } }

    public func replace(with keys: Set<String>) { state.withLock { $0 = keys } }

    public func contains(_ key: String) -> Bool { state.withLock { $0.contains(key) } }

    /// Whether a client presenting `key` may connect.
    public func admits(_ key: String) -> Bool { admitsUnknownKeys || contains(key) }
}

/// Client side of CURVE: the client's own key pair and the server's public key.
public struct CurveClientConfiguration: Sendable {
    public var keyPair: CurveKeyPair
    public var serverPublicKey: String

    public init(keyPair: CurveKeyPair, serverPublicKey: String) {
        self.keyPair = keyPair
        self.serverPublicKey = serverPublicKey
    }
}

extension ZMQSocket {
    func applyCurveServer(_ curve: CurveServerConfiguration) throws {
        try set(ZMQ_CURVE_SERVER, Int32(1))
        try set(ZMQ_CURVE_SECRETKEY, curve.keyPair.secretKey)
        try set(ZMQ_ZAP_DOMAIN, "sigma")
    }

    func applyCurveClient(_ curve: CurveClientConfiguration) throws {
        try set(ZMQ_CURVE_SERVERKEY, curve.serverPublicKey)
        try set(ZMQ_CURVE_PUBLICKEY, curve.keyPair.publicKey)
        try set(ZMQ_CURVE_SECRETKEY, curve.keyPair.secretKey)
    }
}

/// Answers ZAP requests (RFC 27) on `inproc://zeromq.zap.01` of one context: accepts CURVE clients whose
/// public key is on the allow-list and names them by that key (the "User-Id" of their messages).
final class ZAPHandler {
    let socket: ZMQSocket
    let allowed: CurveAllowList
    let onDecision: (String, String, Bool) -> Void
    private var lastRefusalReport: [String: ContinuousClock.Instant] = [:]

    init(context: ZMQContext, allowed: CurveAllowList, onDecision: @escaping (_ address: String, _ key: String, _ accepted: Bool) -> Void) throws {
        socket = try ZMQSocket(context, type: ZMQ_REP)
        try socket.bind("inproc://zeromq.zap.01")
        self.allowed = allowed
        self.onDecision = onDecision
    }

    /// Handles every waiting request without blocking.
    func serve() throws {
        while let (frames, _) = try socket.receive(dontWait: true) {
            // version, request id, domain, address, identity, mechanism, credentials...
            guard frames.count >= 6 else { try reply(frames, "400", "malformed ZAP request", userId: ""); continue }
            let address = String(decoding: frames[3], as: UTF8.self)
            let mechanism = String(decoding: frames[5], as: UTF8.self)
            guard mechanism == "CURVE", frames.count >= 7, let key = z85(frames[6]) else {
                onDecision(address, "", false)
                try reply(frames, "400", "CURVE required", userId: "")
                continue
            }
            let accepted = allowed.admits(key)
            // A refused key is reported once a minute, not at every knock.
            let now = ContinuousClock.now
            if accepted || lastRefusalReport[key].map({ now - $0 > .seconds(60) }) ?? true {
                if !accepted {
                    if lastRefusalReport.count > 10_000 { lastRefusalReport = [:] }
                    lastRefusalReport[key] = now
                }
                onDecision(address, key, accepted)
            }
            try reply(frames, accepted ? "200" : "400", accepted ? "OK" : "client key not allowed", userId: accepted ? key : "")
        }
    }

    private func reply(_ request: [[UInt8]], _ code: String, _ text: String, userId: String) throws {
        let version = request.first ?? Array("1.0".utf8)
        let requestId = request.count > 1 ? request[1] : []
        try socket.send([version, requestId, Array(code.utf8), Array(text.utf8), Array(userId.utf8), []])
    }
}
