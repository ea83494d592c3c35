import ArgumentParser
import Foundation
import Logging
import Protocol
import RPC
import Synchronization

/// `sigma-bench`: every performance figure of Sigma, each next to a baseline measured in the same run.
@main
struct SigmaBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma-bench", abstract: "Measure Sigma's performance figures.", subcommands: [RPCBench.self, AllocBench.self, ScheduleBench.self, BindBench.self, DiscoveryBench.self, ConfigBench.self, AgentBench.self, NetBench.self, FailoverBench.self, HollowBench.self, AllBench.self])
}

struct OutputOptions: ParsableArguments {
    @Flag(help: "Print one JSON object {\"figures\": [...]} instead of the table.") var json = false
    @Option(help: "Also write the JSON to this file.") var jsonOut: String?
    @Option(help: "Also write a markdown table to this file.") var markdownOut: String?

    func emit(_ report: Report) throws {
        let data = try report.jsonData()
        if json {
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(report.title)
            print(report.table)
            report.notes.forEach { print("  " + $0) }
        }
        if let jsonOut { try data.write(to: URL(fileURLWithPath: jsonOut)) }
        if let markdownOut { try ("## \(report.title)\n\n" + report.markdown).write(toFile: markdownOut, atomically: true, encoding: .utf8) }
    }
}

/// `sigma-bench rpc`: round trip and throughput of an empty handler, against raw libzmq REQ/REP.
struct RPCBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpc", abstract: "RPC round trip (1 caller) and throughput (64 callers) vs raw libzmq.")

    @Option(help: "Round trips measured with one caller (after a warm-up of a tenth as many).") var calls = 20_000
    @Option(help: "Concurrent callers for the throughput figure.") var callers = 64
    @Option(help: "Seconds the throughput run lasts.") var seconds = 3.0
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try output.emit(try await measure())
    }

    static let ping = RPCMethod<Sigma_V1_HealthRequest, Sigma_V1_HealthRequest>("Ping", idempotent: true)

    func measure() async throws -> Report {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        var handlers = RPCHandlers()
        handlers.register(Self.ping) { request, _ in request }
        let server = RPCServer(configuration: .init(endpoint: "tcp://127.0.0.1:*"), handlers: handlers, logger: logger)
        let endpoint = try await server.start()
        let client = try RPCClient(configuration: .init(endpoints: [endpoint]), logger: logger)

        // Baseline first, on an idle machine, then Sigma's path.
        let raw = RawBaseline.roundTrips(count: calls, payloadBytes: 16)
        for _ in 0..<(calls / 10) { _ = try await client.call(Self.ping, .init()) }
        let samples = try await withTaskExecutorPreference(client.executor) {
            try await sampleMicroseconds(calls) { _ = try await client.call(Self.ping, .init()) }
        }
        let fromPool = try await sampleMicroseconds(calls) { _ = try await client.call(Self.ping, .init()) }
        var header = Sigma_V1_RequestHeader()
        header.protocolVersion = sigmaProtocolVersion
        header.method = Self.ping.name
        let serverOnly = RawBaseline.roundTrips(to: endpoint, frames: [try header.serializedBytes(), []], count: calls)
        let rawRate = 1e6 / (raw.reduce(0, +) / Double(raw.count))

        let rate = try await callsPerSecond(callers: callers, seconds: seconds) { _ in _ = try await client.call(Self.ping, .init()) }
        client.close()
        await server.stop()

        var report = Report(title: "sigma-bench rpc (\(ProcessInfo.processInfo.activeProcessorCount) cores)")
        report.figures = [
            Figure(name: "rpc_round_trip_p50_1_caller", value: percentile(samples, 0.5), unit: "µs",
                   baseline: percentile(raw, 0.5), target: .maxRatio(1.5)),
            Figure(name: "rpc_round_trip_p50_1_caller_from_pool", value: percentile(fromPool, 0.5), unit: "µs",
                   baseline: percentile(raw, 0.5), target: .none),
            Figure(name: "rpc_round_trip_p99_1_caller", value: percentile(samples, 0.99), unit: "µs",
                   baseline: percentile(raw, 0.99), target: .none),
            Figure(name: "rpc_server_round_trip_p50_raw_req_client", value: percentile(serverOnly, 0.5), unit: "µs",
                   baseline: percentile(raw, 0.5), target: .none),
            Figure(name: "rpc_throughput_\(callers)_callers", value: rate, unit: "calls/s", baseline: rawRate,
                   target: .minValue(30_000)),
        ]
        report.notes = [
            "baseline: raw libzmq REQ/REP over loopback TCP, client and server each with its own context, \(calls) round trips, 16-byte payload",
            "throughput baseline is that raw loop's rate with one caller",
            "1 caller: a loop of calls on the client's executor (withTaskExecutorPreference(client.executor)); _from_pool: the same loop resumed on Swift's cooperative pool",
            "rpc_server_round_trip_p50_raw_req_client: a bare REQ socket calling Sigma's server (the server's share)",
        ]
        return report
    }
}

final class Counter: Sendable {
    private let count = Atomic<Int>(0)
    func increment() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

/// `sigma-bench all`: every figure, one report (what `make bench` runs).
struct AllBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "all", abstract: "Run every figure; one report.")
    @Option(help: "PostgreSQL for the allocator figures. [SIGMA_DATABASE_URL]") var databaseURL: String?
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let rpc = try await RPCBench.parse([]).measure()
        var alloc = try AllocBench.parse([])
        alloc.databaseURL = databaseURL
        let allocation = try await alloc.measure()
        let schedule = try ScheduleBench.parse([]).measure()
        var bind = try BindBench.parse([])
        bind.databaseURL = databaseURL
        let binding = try await bind.measure()
        var lookups = try DiscoveryBench.parse([])
        lookups.databaseURL = databaseURL
        let discovery = try await lookups.measure()
        var configs = try ConfigBench.parse([])
        configs.databaseURL = databaseURL
        let config = try await configs.measure()
        var agents = try AgentBench.parse([])
        agents.databaseURL = databaseURL
        let agent = try await agents.measure()
        var nets = try NetBench.parse([])
        nets.databaseURL = databaseURL
        let net = try await nets.measure()
        var failovers = try FailoverBench.parse([])
        failovers.databaseURL = databaseURL
        let failover = try await failovers.measure()
        var hollows = try HollowBench.parse(["--nodes", "1000", "--instances", "10"])
        hollows.databaseURL = databaseURL
        let hollow = try await hollows.measure()
        let all = [rpc, allocation, schedule, binding, discovery, config, agent, net, failover, hollow]
        var report = Report(title: "sigma-bench all (\(ProcessInfo.processInfo.activeProcessorCount) cores)")
        report.figures = all.flatMap(\.figures)
        report.notes = all.flatMap(\.notes)
        try output.emit(report)
    }
}
