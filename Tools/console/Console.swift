import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore
import Protocol
import RPC
import ClientKit
import SwiftProtobuf

/// `sigma-console`: the operators' web page. It reads the cluster through the same RPCs as sigmactl and serves
/// the page (every asset from this binary), its data (`/api/overview`) and `/metrics` for every service.
@main
struct ConsoleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-console",
        abstract: "Serve Sigma's web console: pool capacity, node heat map, apps and instances, events, /metrics.")

    @Option(help: "Address to serve HTTP on, HOST:PORT (port 0 picks a free one). [SIGMA_CONSOLE_LISTEN]")
    var http: String?

    @Option(help: "File holding the operator credential; required unless the console binds to the loopback. Browsers are asked for it (any user name, the credential as password); scripts send `Authorization: Bearer CREDENTIAL`. [SIGMA_CONSOLE_CREDENTIAL_FILE]")
    var credentialFile: String?

    @Option(help: "Write the console's URL here once it serves.")
    var readyFile: String?

    @Option(help: "Log level. [SIGMA_LOG_LEVEL]")
    var logLevel: String?

    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        var logger = Logger(label: "sigma.console")
        logger.logLevel = Logger.Level(rawValue: logLevel ?? environmentValue("SIGMA_LOG_LEVEL") ?? "info") ?? .info
        let address = http ?? environmentValue("SIGMA_CONSOLE_LISTEN") ?? "127.0.0.1:8080"
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("--http \"\(address)\": expected HOST:PORT")
        }
        let host = String(address[..<colon])
        let credential = try Self.credential(credentialFile ?? environmentValue("SIGMA_CONSOLE_CREDENTIAL_FILE"))
        guard credential != nil || Self.isLoopback(host) else {
            throw ValidationError("the console binds \(host), beyond the loopback: give it an operator credential (--credential-file)")
        }
        let reader = try ClusterReader(endpoints: endpoints, logger: logger)
        let router = Router()
        router.add(middleware: OperatorCredential(credential: credential))
        router.get("/") { _, _ in Self.response(Page.html, type: "text/html; charset=utf-8") }
        router.get("/api/overview") { _, _ in
            do {
                return Self.response(try await reader.overview(), type: "application/json")
            } catch {
                let body = (try? JSONSerialization.data(withJSONObject: ["error": "\(error)"])) ?? Data("{}".utf8)
                return Self.response(String(decoding: body, as: UTF8.self), type: "application/json", status: .badGateway)
            }
        }
        router.get("/metrics") { _, _ in Self.response(await reader.prometheus(), type: "text/plain; version=0.0.4") }
        router.get("/healthz") { _, _ in Self.response("ok\n", type: "text/plain") }
        let readyFile = readyFile
        let serving = logger
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "sigma-console"),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                let url = "http://\(host):\(bound)/"
                serving.info("serving", metadata: ["url": "\(url)", "credential": "\(credential == nil ? "none (loopback)" : "required")"])
                if let readyFile { try? Data((url + "\n").utf8).write(to: URL(fileURLWithPath: readyFile), options: .atomic) }
            },
            logger: logger)
        try await app.runService()
    }

    static func response(_ text: String, type: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: type, .cacheControl: "no-store"],
                 body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    static func credential(_ path: String?) throws -> String? {
        guard let path else { return nil }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("--credential-file \(path): cannot be read")
        }
        let secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard secret.count >= 12 else { throw ValidationError("--credential-file \(path): the credential needs 12 characters or more") }
        return secret
    }
}

/// Every request needs the operator credential when one is set: HTTP Basic (the browser asks; any user name) or
/// a bearer token.
struct OperatorCredential<Context: Hummingbird.RequestContext>: RouterMiddleware {
    let credential: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let credential else { return try await next(request, context) }
        if let header = request.headers[.authorization], Self.matches(header, credential) {
            return try await next(request, context)
        }
        return Response(status: .unauthorized, headers: [.wwwAuthenticate: #"Basic realm="Sigma console", charset="UTF-8""#])
    }

    static func matches(_ header: String, _ credential: String) -> Bool {
        if header.hasPrefix("Bearer ") { return constantTimeEqual(String(header.dropFirst(7)), credential) }
        if header.hasPrefix("Basic "), let data = Data(base64Encoded: String(header.dropFirst(6))),
           let pair = String(data: data, encoding: .utf8), let colon = pair.firstIndex(of: ":")
        {
            return constantTimeEqual(String(pair[pair.index(after: colon)...]), credential)
        }
        return false
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var difference = UInt8(x.count == y.count ? 0 : 1)
        for index in 0..<min(x.count, y.count) { difference |= x[index] ^ y[index] }
        return difference == 0
    }
}
