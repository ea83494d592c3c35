import ArgumentParser
import Foundation
import Protocol
import RPC
import ClientKit

/// `sigmactl logs INSTANCE [-f] [-p] [--since] [--tail]`: an instance's console log (stdout and stderr), read
/// from the agent of the node it runs on (found through the scheduler, or given with --agent).
struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs", abstract: "Print an instance's stdout and stderr.",
        discussion: Examples.discussion("logs", """
            The current run's output; -p the run's before it (after a restart or a new generation), which the \
            node keeps one of. --since, --tail and --limit-bytes choose from the end; -f then keeps printing.
            """))
    @Argument(help: "The instance: APP-ORDINAL or its id.", completion: NameCompletion.instances) var instance: String
    @Flag(name: .shortAndLong, help: "Keep printing new output until the instance ends (or Ctrl-C).") var follow = false
    @Flag(name: .shortAndLong, help: "The log of the run before the current one (it restarted, or its generation changed).") var previous = false
    @Option(help: ArgumentHelp("Only output written since then, to the second: \(Since.help).", valueName: "time"))
    var since: String?
    @Option(help: "Start with the last this many lines (default: the whole current file).") var tail: Int?
    @Option(help: "Start with at most the last this many bytes.") var limitBytes: Int64?
    @OptionGroup var endpoints: EndpointOptions

    static let chunk: UInt32 = 1 << 20

    func validate() throws {
        if let tail, tail < 0 { throw ValidationError("--tail \(tail): a number of lines, 0 or more") }
        if let limitBytes, limitBytes < 1 { throw ValidationError("--limit-bytes \(limitBytes): 1 or more") }
        if let since, Since.unixMs(since) == nil { throw ValidationError("--since \(since): expected \(Since.help)") }
    }

    func run() async throws {
        let (agent, id) = try await agentOfInstance()
        var request = Sigma_V1_ReadLogsRequest()
        request.instanceID = id
        request.previous = previous
        var answer: Sigma_V1_ReadLogsResponse
        if let moment = since.flatMap({ Since.unixMs($0) }) {
            request.sinceUnixMs = moment
            request.maxBytes = Self.chunk
            var data = Data()
            repeat {
                answer = try await agent.call(AgentMethods.readLogs, request)
                data.append(answer.data)
                (request.offset, request.sinceUnixMs) = (answer.nextOffset, 0)
            } while answer.data.count == Int(Self.chunk)
            FileHandle.standardOutput.write(Self.lastLines(tail, of: Self.lastBytes(limitBytes, of: data)))
        } else if let tail {
            answer = try await readTail(agent, request, lines: tail)
        } else {
            request.offset = limitBytes.map { _ in -1 } ?? 0
            request.maxBytes = UInt32(clamping: limitBytes ?? Int64(Self.chunk))
            answer = try await agent.call(AgentMethods.readLogs, request)
            FileHandle.standardOutput.write(answer.data)
        }
        request.offset = answer.nextOffset
        request.maxBytes = Self.chunk
        // A full chunk: more is there already; else with -f wait for new output.
        var more = answer.data.count == Int(Self.chunk)
        while more || follow && !answer.ended {
            request.waitMs = more ? 0 : 10_000
            answer = try await agent.call(AgentMethods.readLogs, request)
            FileHandle.standardOutput.write(answer.data)
            request.offset = answer.nextOffset
            more = answer.data.count == Int(Self.chunk)
        }
    }

    /// The agent serving the instance (from its node's registration, or --agent) and the instance's id.
    private func agentOfInstance() async throws -> (RPCClient, String) {
        let scheduler = try endpoints.client(.scheduler)
        let found = try await resolveInstance(scheduler, instance)
        guard !found.node.isEmpty else { throw RPCError.failedPrecondition("\(instance) is not on a node (\(found.state))") }
        var options = endpoints
        if options.agent == nil {
            guard let node = try await scheduler.call(SchedulerMethods.listNodes, .init()).nodes.first(where: { $0.name == found.node }),
                  !node.agentEndpoint.isEmpty
            else { throw RPCError.notFound("node \(found.node) has no agent endpoint; pass --agent") }
            options.agent = node.agentEndpoint
        }
        // A follow waits up to 10 s per call on the agent: the per-call timeout must cover that.
        if follow { options.timeout = max(options.timeout, 15) }
        return (try options.client(.agent), found.id)
    }

    /// Prints the last `lines` lines (within --limit-bytes): the end of the file, read back further until it
    /// holds that many whole lines or is all of it. Returns the last answer (its next_offset is the file's end).
    private func readTail(_ agent: RPCClient, _ request: Sigma_V1_ReadLogsRequest, lines: Int) async throws -> Sigma_V1_ReadLogsResponse {
        var request = request
        var window: UInt32 = UInt32(clamping: max(4096, lines * 160))
        while true {
            request.offset = -1
            request.maxBytes = min(window, UInt32(clamping: limitBytes ?? Int64(UInt32.max)))
            let answer = try await agent.call(AgentMethods.readLogs, request)
            let found = Self.lines(of: answer.data).lines.count
            // All of the file, or as far back as allowed; else enough lines that the first kept one is whole.
            let complete = answer.data.count < Int(request.maxBytes) || request.maxBytes < window || window >= 64 << 20
            if found > lines || complete {
                FileHandle.standardOutput.write(Self.lastLines(lines, of: answer.data))
                var last = answer
                last.data = Data()
                return last
            }
            window *= 4
        }
    }

    /// The lines of `data` without their newlines (a last line without one counts), and whether it ends in one.
    static func lines(of data: Data) -> (lines: [Data.SubSequence], endsWithNewline: Bool) {
        var lines = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        let endsWithNewline = lines.last?.isEmpty ?? true
        if endsWithNewline { lines.removeLast() }
        return (lines, endsWithNewline)
    }

    /// The last `count` lines of `data` (all of it without a count).
    static func lastLines(_ count: Int?, of data: Data) -> Data {
        guard let count else { return data }
        let (lines, endsWithNewline) = Self.lines(of: data)
        let kept = lines.suffix(count)
        var text = Data(kept.joined(separator: [UInt8(ascii: "\n")]))
        if endsWithNewline && !kept.isEmpty { text.append(UInt8(ascii: "\n")) }
        return text
    }

    static func lastBytes(_ count: Int64?, of data: Data) -> Data {
        guard let count, data.count > count else { return data }
        return data.suffix(Int(count))
    }
}
