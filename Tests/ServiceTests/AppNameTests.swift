import Core
import Foundation
import Protocol
import RPC
import SwiftProtobuf
import Testing
import TestSupport

/// docs/protocol.md, "App names": every method of the scheduler, the config center and Discovery whose request
/// names an app answers a string that is no app name with INVALID_ARGUMENT, naming the field, before it looks
/// anything up; a valid name of no app is never refused so. The methods are read from the registries, so a new
/// request with an `app` field that is not checked fails here.
@Suite struct AppNameTests {
    static let services: [(kind: String, methods: [any AnyRPCMethod])] = [
        ("scheduler", SchedulerMethods.methods), ("config", ConfigMethods.methods), ("discovery", DiscoveryMethods.methods),
    ]

    /// A request of `type` with `json` in it, encoded; nil when the type has no such field.
    static func request(_ type: any SwiftProtobuf.Message.Type, _ json: String) -> [UInt8]? {
        guard let message = try? type.init(jsonString: json) else { return nil }
        return try? message.serializedBytes()
    }

    @Test func everyMethodThatNamesAnAppRefusesWhatIsNoAppName() async throws {
        try await SchedulerCluster.with(discoveries: 1, configs: 1) { cluster in
            let clients = [
                "scheduler": cluster.client, "config": try SchedulerCluster.rpcClient(cluster.configEndpoints),
                "discovery": try SchedulerCluster.rpcClient(cluster.discoveryEndpoints),
            ]
            var probed: [String] = []
            for (kind, methods) in Self.services {
                for method in methods {
                    let hasAppField = Self.request(method.requestType, #"{"app": "x"}"#) != nil
                    guard let named = method.requestType as? any NamesAnApp.Type else {
                        #expect(!hasAppField, "\(method.name): its request has an app field but is not NamesAnApp")
                        continue
                    }
                    let field = named.appField
                    for bad in ["Not_An App", "-web", "web-", String(repeating: "a", count: 64), "1web"] {
                        let body = try #require(Self.request(method.requestType, #"{"\#(field)": "\#(bad)"}"#))
                        do {
                            _ = try await clients[kind]!.callRaw(method: method.name, body: body, idempotent: true)
                            Issue.record("\(method.name) took \(bad)")
                        } catch let error as RPCError {
                            #expect(error.code == .invalidArgument && error.message.hasPrefix("\(field): \"\(bad)\" is not an app name ("),
                                    "\(method.name) \(bad): \(error)")
                        }
                    }
                    if !named.appMayBeEmpty {
                        let body = try #require(Self.request(method.requestType, #"{}"#))
                        await #expect(throws: RPCError.invalidArgument("\(field): \"\" is not an app name (\(AppSpec.nameRule))"), "\(method.name)") {
                            _ = try await clients[kind]!.callRaw(method: method.name, body: body, idempotent: true)
                        }
                    }
                    // A valid name of no app: looked up (NOT_FOUND, an empty list, ...), never refused as a name.
                    let valid = try #require(Self.request(method.requestType, #"{"\#(field)": "no-such-app"}"#))
                    do {
                        _ = try await clients[kind]!.callRaw(method: method.name, body: valid, idempotent: true)
                    } catch let error as RPCError {
                        #expect(!error.message.contains("is not an app name"), "\(method.name): \(error)")
                    }
                    probed.append(method.name)
                }
            }
            #expect(Set(probed).isSuperset(of: ["GetApp", "ScaleApp", "RolloutUndo", "ListInstances", "GetConfig", "FetchConfig", "Resolve"]), "\(probed)")
        }
    }
}
