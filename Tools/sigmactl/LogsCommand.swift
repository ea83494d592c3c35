import ArgumentParser
import Foundation
import Protocol
import RPC
import ClientKit

/// `sigmactl logs INSTANCE [-f]`: an instance's console log (stdout and stderr), read from the agent of the
/// node it runs on (found through the scheduler, or given with --agent).
struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print an instance's stdout and stderr.")
    @Argument(help: "The instance: APP-ORDINAL or its id.") var instance: String
    @Flag(name: .shortAndLong, help: "Keep printing new output until the instance ends (or Ctrl-C).") var follow = false
    @Option(help: "Start with the last this many bytes (default: the whole current file).") var tail: Int64?
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let scheduler = try endpoints.client(.scheduler)
        let found = try await resolveInstance(scheduler, instance)
        guard !found.node.isEmpty else { throw RPCError.failedPrecondition("\(instance) is not on a node (\(found.state))") }
        let agentEndpoint: String
        if let given = endpoints.agent {
            agentEndpoint = given
        } else {
            guard let node = try await scheduler.call(SchedulerMethods.listNodes, .init()).nodes.first(where: { $0.name == found.node }),
                  !node.agentEndpoint.isEmpty
            else { throw RPCError.notFound("node \(found.node) has no agent endpoint; pass --agent") }
            agentEndpoint = node.agentEndpoint
        }
        var options = endpoints
        options.agent = agentEndpoint
        // A follow waits up to 10 s per call on the agent: the per-call timeout must cover that.
        if follow { options.timeout = max(options.timeout, 15) }
        let agent = try options.client(.agent)
        var request = Sigma_V1_ReadLogsRequest()
        request.instanceID = found.id
        request.offset = tail.map { _ in -1 } ?? 0
        request.maxBytes = UInt32(clamping: tail ?? Int64(1 << 20))
        while true {
            let answer = try await agent.call(AgentMethods.readLogs, request)
            FileHandle.standardOutput.write(answer.data)
            let more = answer.data.count == Int(request.maxBytes)  // a full chunk: more is there already
            request.offset = answer.nextOffset
            request.maxBytes = 1 << 20
            if more { continue }
            if !follow || answer.ended { return }
            request.waitMs = 10_000
        }
    }
}
