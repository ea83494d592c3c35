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
        let path = runtime.logFile(of: id)
        guard FileManager.default.fileExists(atPath: runtime.directory(of: id)) else {
            throw RPCError.notFound("no instance \(id) on this node")
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
            let ended = await runtime.ending(of: id) != nil
            response.ended = ended
            if !response.data.isEmpty || ended || ContinuousClock.now >= deadline { return response }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    func list() async -> Sigma_V1_ListLocalInstancesResponse {
        var response = Sigma_V1_ListLocalInstancesResponse()
        let statuses = Dictionary(uniqueKeysWithValues: await agent.statuses(usage: false).map { ($0.instanceID, $0) })
        for (id, instance) in await agent.snapshot().sorted(by: { $0.key < $1.key }) {
            var entry = Sigma_V1_LocalInstance()
            entry.instanceID = id
            entry.app = instance.assignment.app
            entry.generation = instance.assignment.generation
            entry.state = statuses[id]?.state ?? ""
            entry.pid = instance.pid
            entry.restarts = UInt32(instance.restarts)
            entry.reason = statuses[id]?.reason ?? ""
            entry.configVersion = instance.configVersion ?? 0
            if let latency = instance.startLatency {
                entry.startLatencyUs = latency.components.seconds * 1_000_000 + latency.components.attoseconds / 1_000_000_000_000
            }
            response.instances.append(entry)
        }
        return response
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
