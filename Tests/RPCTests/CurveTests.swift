import Foundation
import Protocol
import RPC
import Testing

@Suite struct CurveTests {
    @Test func allowListedClientIsAdmittedAndNamedByItsKey() async throws {
        let serverKeys = try CurveKeyPair.generate()
        let allowed = try CurveKeyPair.generate()
        let stranger = try CurveKeyPair.generate()
        let curve = CurveServerConfiguration(keyPair: serverKeys, allowedClientKeys: [allowed.publicKey])
        try await withServer({ $0.curve = curve }) { _, endpoint in
            var good = RPCClientConfiguration(endpoints: [endpoint])
            good.curve = CurveClientConfiguration(keyPair: allowed, serverPublicKey: serverKeys.publicKey)
            let admitted = try RPCClient(configuration: good, logger: testLogger)
            #expect(try await admitted.call(TestMethods.whoami, text("")).value == allowed.publicKey)

            var bad = RPCClientConfiguration(endpoints: [endpoint])
            bad.curve = CurveClientConfiguration(keyPair: stranger, serverPublicKey: serverKeys.publicKey)
            bad.defaultTimeout = .seconds(5)
            let refused = try RPCClient(configuration: bad, logger: testLogger)
            let error = await #expect(throws: RPCError.self) { _ = try await refused.call(TestMethods.echo, text("let me in")) }
            #expect(error?.code == .unauthenticated)

            // A client without CURVE gets nowhere either (the handshake never completes).
            let plain = try client(endpoint, timeout: .milliseconds(500))
            let plainError = await #expect(throws: RPCError.self) { _ = try await plain.call(TestMethods.echo, text("hi")) }
            #expect(plainError?.code == .unavailable)
        }
    }

    @Test func keyFilesRoundTrip() throws {
        let pair = try CurveKeyPair.generate()
        let folder = NSTemporaryDirectory() + "sigma-keys-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try pair.secretFileText.write(toFile: folder + "/a.key", atomically: true, encoding: .utf8)
        try pair.publicFileText.write(toFile: folder + "/a.pub", atomically: true, encoding: .utf8)
        #expect(try CurveKeyPair.load(path: folder + "/a.key") == pair)
        #expect(try CurveKeyFile.allowList(path: folder) == [pair.publicKey])
        #expect(try CurveKeyFile.publicKey(fileOrKey: folder + "/a.pub") == pair.publicKey)
        #expect(throws: RPCConfigurationError.self) { try CurveKeyPair.load(path: folder + "/a.pub") }
    }
}
