import ArgumentParser
import Foundation
import Protocol
import RPC
import ClientKit

/// `sigmactl logs INSTANCE [-f]`: an instance's console log (stdout and stderr), read from the agent of the
/// node it runs on (found through the scheduler, or given with --agent).
struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print an instance's stdout and stderr.")
    @Argument(help: "The instance: APP-ORDINAL or its id.", completion: NameCompletion.instances) var instance: String
    @Flag(name: .shortAndLong, help: "Keep printing new output until the instance ends (or Ctrl-C).") var follow = false
    @Option(help: "Start with the last this many lines (default: the whole current file).") var tail: Int?
    @Option(help: "Start with at most the last this many bytes.") var limitBytes: Int64?

    func validate() throws {
        if let tail, tail < 0 { throw ValidationError("--tail \(tail): a number of lines, 0 or more") }
        if let limitBytes, limitBytes < 1 { throw ValidationError("--limit-bytes \(limitBytes): 1 or more") }
    }
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
        if let tail {
            // The end of the file, read back further until it holds `tail` whole lines (or is all of it).
            var window: UInt32 = UInt32(clamping: max(4096, tail * 160))
            while true {
                request.offset = -1
                request.maxBytes = min(window, UInt32(clamping: limitBytes ?? Int64(UInt32.max)))
                let answer = try await agent.call(AgentMethods.readLogs, request)
                var lines = answer.data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
                let endsWithNewline = lines.last?.isEmpty ?? true
                if endsWithNewline { lines.removeLast() }
                // All of the file, or as far back as allowed; else enough lines that the first kept one is whole.
                let complete = answer.data.count < Int(request.maxBytes) || request.maxBytes < window || window >= 64 << 20
                if lines.count > tail || complete {
                    let kept = lines.suffix(tail)
                    var text = Data(kept.joined(separator: [UInt8(ascii: "\n")]))
                    if endsWithNewline && !kept.isEmpty { text.append(UInt8(ascii: "\n")) }
                    FileHandle.standardOutput.write(text)
                    request.offset = answer.nextOffset
                    if !follow || answer.ended { return }
                    break
                }
                window *= 4
            }
            request.maxBytes = 1 << 20
            request.waitMs = 10_000
        } else {
            request.offset = limitBytes.map { _ in -1 } ?? 0
            request.maxBytes = UInt32(clamping: limitBytes ?? Int64(1 << 20))
        }
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
