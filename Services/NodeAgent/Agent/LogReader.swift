import Foundation
import NodeRuntime
import Protocol
import RPC

/// Serves instances' console logs (ReadLogs) and the agent's own view of its instances.
struct LogReader: Sendable {
    let runtime: InstanceRuntime
    let agent: Agent

    static let maxChunk: UInt32 = 1 << 20

    func read(_ request: Sigma_V1_ReadLogsRequest) async throws -> Sigma_V1_ReadLogsResponse {
        let id = request.instanceID.lowercased()
        guard !id.isEmpty, !id.contains("/"), !id.hasPrefix(".") else {
            throw RPCError.invalidArgument("instance_id: \"\(request.instanceID)\" is not an instance id")
        }
        let path = request.previous ? runtime.previousLogFile(of: id) : runtime.logFile(of: id)
        guard FileManager.default.fileExists(atPath: runtime.directory(of: id)) else {
            throw RPCError.notFound("no instance \(id) on this node")
        }
        if request.previous && !FileManager.default.fileExists(atPath: path) {
            throw RPCError.notFound("instance \(id) has no earlier run's log on this node")
        }
        var request = request
        if request.sinceUnixMs > 0 {
            request.offset = Self.offset(ofSecond: request.sinceUnixMs / 1000, times: path + ".times", size: Self.size(path))
        }
        let limit = Int(min(request.maxBytes == 0 ? 64 << 10 : request.maxBytes, Self.maxChunk))
        let deadline = ContinuousClock.now + .milliseconds(Int64(min(request.waitMs, 30_000)))
        while true {
            var response = Sigma_V1_ReadLogsResponse()
            let size = Self.size(path)
            var offset = request.offset < 0 ? max(0, size - Int64(limit)) : request.offset
            if offset > size {
                // The monitor rotated the file: go on from the new one's start.
                offset = 0
                response.rotated = true
            }
            response.data = Self.readChunk(path, offset: offset, limit: limit)
            response.nextOffset = offset + Int64(response.data.count)
            let ended = request.previous ? true : await runtime.ending(of: id) != nil
            response.ended = ended
            if !response.data.isEmpty || ended || ContinuousClock.now >= deadline { return response }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    func list() async -> Sigma_V1_ListLocalInstancesResponse {
        var response = Sigma_V1_ListLocalInstancesResponse()
        // Keyed by id and generation: two generations of one instance are reported while the old one stops (a
        // node declared Broken, its instance placed on it again); keyed by id alone, that crashed the agent.
        var statuses: [String: Sigma_V1_InstanceStatus] = [:]
        for status in await agent.statuses(usage: false) { statuses["\(status.instanceID)/\(status.generation)"] = status }
        for (id, instance) in await agent.snapshot().sorted(by: { $0.key < $1.key }) {
            var entry = Sigma_V1_LocalInstance()
            entry.instanceID = id
            entry.app = instance.assignment.app
            entry.generation = instance.assignment.generation
            let status = statuses["\(id)/\(instance.assignment.generation)"]
            entry.state = status?.state ?? ""
            entry.pid = instance.pid
            entry.restarts = UInt32(instance.restarts)
            entry.reason = status?.reason ?? ""
            entry.configVersion = instance.configVersion ?? 0
            if let latency = instance.startLatency {
                entry.startLatencyUs = latency.components.seconds * 1_000_000 + latency.components.attoseconds / 1_000_000_000_000
            }
            response.instances.append(entry)
        }
        return response
    }

    /// Where the output of `second` (Unix seconds) or later starts in a log, from its times file ("UNIX_MS OFFSET"
    /// for the first byte of every second with output): the first entry of that second or a later one; the
    /// log's end when there is none, its start when the log has no times file.
    static func offset(ofSecond second: Int64, times: String, size: Int64) -> Int64 {
        guard let text = FileManager.default.contents(atPath: times) else { return 0 }
        for line in text.split(separator: UInt8(ascii: "\n")) {
            let fields = line.split(separator: UInt8(ascii: " "))
            guard fields.count == 2, let ms = Int64(String(decoding: fields[0], as: UTF8.self)),
                  let offset = Int64(String(decoding: fields[1], as: UTF8.self))
            else { continue }
            if ms / 1000 >= second { return min(offset, size) }
        }
        return size
    }

    static func size(_ path: String) -> Int64 {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : 0
    }

    static func readChunk(_ path: String, offset: Int64, limit: Int) -> Data {
        guard let handle = FileHandle(forReadingAtPath: path) else { return Data() }
        defer { try? handle.close() }
        try? handle.seek(toOffset: UInt64(offset))
        return (try? handle.read(upToCount: limit)) ?? Data()
    }
}
