import ArgumentParser
import Dispatch
import Foundation
import Logging
import Protocol
import RPC
import Store

/// `sigma-bench config`: `FetchConfig` (a template with the app's peers, rendered for one instance) per second
/// with 64 callers, its p50 with one caller, and publish → subscriber notified latency, against a real
/// sigma-config, next to a raw libzmq round trip with a payload of the same size, in the same run.
struct ConfigBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Config fetches/s (64 callers), fetch p50, publish → notified p99, vs raw libzmq.")

    @Option(help: "PostgreSQL to use (a scratch database is made and dropped). [SIGMA_DATABASE_URL]") var databaseURL: String?
    @Option(help: "Fetches timed with one caller.") var calls = 10_000
    @Option(help: "Concurrent callers for the throughput figure.") var callers = 64
    @Option(help: "Seconds the throughput run lasts.") var seconds = 3.0
    @Option(help: "Publishes timed until a subscriber is notified.") var publishes = 200
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try output.emit(try await measure())
    }

    func measure() async throws -> Report {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        return try await withScratchDatabase(databaseURL, logger: logger) { url in
            try await measure(url: url, logger: logger)
        }
    }

    func measure(url: String, logger: Logger) async throws -> Report {
        let store = Store(configuration: StoreConfiguration(url: url), logger: logger)
        defer { store.shutdown() }
        try await store.migrate()
        try await DiscoveryBench.parse([]).seed(store)
        let instance = try await store.query("SELECT id::text AS id FROM instances WHERE ordinal = 0")[0].decode(String.self, "id")

        let config = try BenchProcess("sigma-config", [
            "--listen", "tcp://127.0.0.1:*", "--events-listen", "tcp://127.0.0.1:*", "--database-url", url, "--log-level", "error",
        ])
        defer { config.stop() }
        var configuration = RPCClientConfiguration(endpoints: [try await config.endpoint()])
        configuration.defaultTimeout = .seconds(30)
        let client = try RPCClient(configuration: configuration, logger: logger)
        defer { client.close() }

        var publish = Sigma_V1_PublishConfigRequest()
        publish.app = "bench"
        var file = Sigma_V1_ConfigFile()
        file.path = "/etc/bench.conf"
        file.content = Data("""
            listen={{instance.ip}}:8080
            {{#peers}}peer.{{ordinal}}={{ip}}:8080
            {{/peers}}
            """.utf8)
        publish.files = [file]
        publish.script = "exec /bin/bench --id {{instance.ordinal}}"
        _ = try await client.call(ConfigMethods.publish, publish)

        var fetch = Sigma_V1_FetchConfigRequest()
        fetch.app = "bench"
        fetch.instanceID = instance
        let answerBytes = (try await client.call(ConfigMethods.fetch, fetch).serializedBytes() as [UInt8]).count
        let raw = RawBaseline.roundTrips(count: calls, payloadBytes: answerBytes)
        for _ in 0..<(calls / 10) { _ = try await client.call(ConfigMethods.fetch, fetch) }
        let samples = try await sampleMicroseconds(calls) { _ = try await client.call(ConfigMethods.fetch, fetch) }
        let rawRate = 1e6 / (raw.reduce(0, +) / Double(raw.count))

        let request = fetch
        let rate = try await callsPerSecond(callers: callers, seconds: seconds) { _ in
            _ = try await client.call(ConfigMethods.fetch, request)
        }

        // Publish → notified: one publish at a time, timed until the subscriber sees that version.
        var get = Sigma_V1_GetConfigRequest()
        get.app = "bench"
        let snapshotRequest = get
        let events = try await client.call(ConfigMethods.get, get).eventsEndpoint
        let subscriber = try Subscriber(endpoints: [events], topics: [FeedTopics.config("bench")], logger: logger) { _ in
            let snapshot = try await client.call(ConfigMethods.get, snapshotRequest)
            var change = Sigma_V1_ConfigChange()
            change.release = snapshot.release
            return EventSnapshot(sequence: snapshot.sequence, epoch: snapshot.feedEpoch, payload: try change.serializedBytes())
        }
        defer { subscriber.close() }
        var iterator = subscriber.events.makeAsyncIterator()
        _ = await iterator.next()  // the snapshot
        var notified: [Double] = []
        for index in 0..<publishes {
            publish.message = "bench \(index)"
            let started = DispatchTime.now().uptimeNanoseconds
            let version = try await client.call(ConfigMethods.publish, publish).version.version
            // An update, or a fresh snapshot after a resync, that has this version.
            while let event = await iterator.next() {
                let payload: [UInt8]
                switch event {
                case .update(_, _, let bytes), .snapshot(_, _, let bytes): payload = bytes
                }
                if try Sigma_V1_ConfigChange(serializedBytes: payload).release.current >= version { break }
            }
            notified.append(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)
        }
        notified.sort()

        var report = Report(title: "sigma-bench config")
        report.figures = [
            Figure(name: "config_fetch_p50_1_caller", value: percentile(samples, 0.5), unit: "µs", baseline: percentile(raw, 0.5), target: .none),
            Figure(name: "config_fetches_\(callers)_callers", value: rate, unit: "fetches/s", baseline: rawRate, target: .minValue(15_000)),
            Figure(name: "config_publish_notified_p99", value: percentile(notified, 0.99), unit: "ms",
                   baseline: percentile(raw, 0.99) / 1000, target: .maxValue(20)),
        ]
        report.notes = [
            "FetchConfig of a template with the peers of a 10-instance app, rendered for one instance (answer \(answerBytes) bytes); baseline: raw libzmq REQ/REP with that payload",
            "publish → notified: \(publishes) publishes one at a time, each timed until a subscriber of config/bench receives it (p50 \(String(format: "%.2f", percentile(notified, 0.5))) ms); its baseline is the raw p99 round trip",
        ]
        return report
    }
}
