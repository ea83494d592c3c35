import Core
import Logging
import Protocol
import RPC
import ClientKit
import ControlPlane
import Hosting

/// `Resolve`: an app's endpoints, filtered, with its index; a blocking query when `wait_index` is set.
struct Resolver: Sendable {
    let cache: EndpointCache
    let eventsEndpoint: String
    static let longestWait: Duration = .seconds(300)

    /// The answer, encoded: the unfiltered one comes from the cache as it is. The app's name was checked where
    /// the method is registered (ControlPlane's `registerEncoded` for requests that name an app).
    func resolveEncoded(_ request: Sigma_V1_ResolveRequest, context: RequestContext) async throws -> [UInt8] {
        if request.waitIndex == 0 && !request.readyOnly && request.state.isEmpty && request.idc.isEmpty {
            return try await cache.entry(request.app).encoded
        }
        return try await resolve(request, context: context).serializedBytes()
    }

    func resolve(_ request: Sigma_V1_ResolveRequest, context: RequestContext) async throws -> Sigma_V1_ResolveResponse {
        if !request.state.isEmpty && InstanceState(rawValue: request.state) == nil {
            throw RPCError.invalidArgument("state: \"\(request.state)\" is not one of \(InstanceState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let sequence = cache.publisher.sequence(of: FeedTopics.app(request.app))
        var entry = try await cache.entry(request.app)
        if request.waitIndex > 0 {
            if request.waitIndex > entry.index {
                // This replica may lag behind the database; an index still ahead after a reload is made up.
                entry = try await cache.reload(request.app)
                guard request.waitIndex <= entry.index else {
                    throw RPCError.invalidArgument(
                        "wait_index: \(request.waitIndex) is ahead of app \(request.app)'s index \(entry.index); use an index a Resolve returned, or 0")
                }
            }
            if request.waitIndex == entry.index {
                let timeout = context.longPollBudget(
                    request.waitTimeoutMs == 0 ? Self.longestWait : .milliseconds(Int(request.waitTimeoutMs)), cap: Self.longestWait)
                if timeout > .zero { await cache.wait(request.app, above: request.waitIndex, timeout: timeout) }
                entry = try await cache.entry(request.app)
            }
        }
        var response = Sigma_V1_ResolveResponse()
        response.app = request.app
        response.index = entry.index
        response.sequence = sequence
        response.feedEpoch = cache.publisher.epoch
        response.eventsEndpoint = eventsEndpoint
        response.endpoints = entry.endpoints.filter { endpoint in
            (!request.readyOnly || endpoint.ready)
                && (request.state.isEmpty || endpoint.state == request.state)
                && (request.idc.isEmpty || endpoint.idc == request.idc)
        }
        return response
    }
}
