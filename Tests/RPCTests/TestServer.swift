import Foundation
import Logging
import Protocol
import RPC
import SwiftProtobuf

typealias Text = Google_Protobuf_StringValue

/// Methods of the test service.
enum TestMethods {
    static let echo = RPCMethod<Text, Text>("Echo", idempotent: true)
    /// Sleeps the number of milliseconds in the request, then answers it.
    static let sleep = RPCMethod<Text, Text>("Sleep", idempotent: true)
    /// Throws the status named in the request.
    static let fail = RPCMethod<Text, Text>("Fail", idempotent: false)
    /// Throws an error that is no RPCError.
    static let crash = RPCMethod<Text, Text>("Crash", idempotent: false)
    static let whoami = RPCMethod<Text, Text>("WhoAmI", idempotent: true)
}

struct UnexpectedFailure: Error {}

func text(_ value: String) -> Text {
    var message = Text()
    message.value = value
    return message
}

/// `sleeps: false` makes Sleep answer at once; `sleepStarted` is told when a Sleep call arrives.
func testHandlers(name: String = "server", sleeps: Bool = true, sleepStarted: (@Sendable () -> Void)? = nil) -> RPCHandlers {
    var handlers = RPCHandlers()
    handlers.register(TestMethods.echo) { request, _ in text(request.value) }
    handlers.register(TestMethods.sleep) { request, _ in
        sleepStarted?()
        if sleeps { try await Task.sleep(for: .milliseconds(Int(request.value) ?? 0)) }
        return text(name)
    }
    handlers.register(TestMethods.fail) { request, _ in
        throw RPCError(.notFound, "no such thing: \(request.value)")
    }
    handlers.register(TestMethods.crash) { _, _ in throw UnexpectedFailure() }
    handlers.register(TestMethods.whoami) { _, context in text(context.peerKey ?? "") }
    return handlers
}

let testLogger: Logger = {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
}()

/// Starts a server on a free loopback port, runs `body`, and stops the server even when `body` throws.
func withServer<T>(
    _ configure: (inout RPCServerConfiguration) -> Void = { _ in },
    handlers: RPCHandlers = testHandlers(),
    _ body: (RPCServer, String) async throws -> T
) async throws -> T {
    var configuration = RPCServerConfiguration(endpoint: "tcp://127.0.0.1:*")
    configure(&configuration)
    let server = RPCServer(configuration: configuration, handlers: handlers, logger: testLogger)
    let endpoint = try await server.start()
    do {
        let result = try await body(server, endpoint)
        await server.stop()
        return result
    } catch {
        await server.stop()
        throw error
    }
}

func client(_ endpoints: String..., timeout: Duration = .seconds(5)) throws -> RPCClient {
    var configuration = RPCClientConfiguration(endpoints: endpoints)
    configuration.defaultTimeout = timeout
    return try RPCClient(configuration: configuration, logger: testLogger)
}

func header(method: String, id: UInt64 = 7, version: UInt32 = sigmaProtocolVersion, timeoutMs: UInt64 = 0) throws -> [UInt8] {
    var header = Sigma_V1_RequestHeader()
    header.protocolVersion = version
    header.method = method
    header.requestID = id
    header.timeoutMs = timeoutMs
    return try header.serializedBytes()
}

func replyHeader(_ frames: [[UInt8]]?) throws -> Sigma_V1_ReplyHeader? {
    guard let frames, frames.count == 3, frames[0].isEmpty else { return nil }
    return try Sigma_V1_ReplyHeader(serializedBytes: frames[1])
}
