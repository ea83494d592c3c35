import Protocol
import Store

extension Placement {
    /// Every ordinal holds its IP from the start (docs/protocol.md, "Peers known before start"): instances the
    /// pass leaves Pending get theirs from the Allocator now, before any instance of the page is bound, so an
    /// ordinal that starts finds every peer's address in Discovery and in its config. Those the pool cannot
    /// serve stay without one, and are asked for again at the next pass. Binding later hands out the same IP.
    func addressAhead(_ ids: [String]) async throws {
        for start in stride(from: 0, to: ids.count, by: bindBatch) {
            var ips: [String: Sigma_V1_IPAllocation] = [:]
            _ = try await allocateIPs(Array(ids[start..<min(start + bindBatch, ids.count)]), into: &ips)
            guard !ips.isEmpty else { continue }
            let given = Array(ips.values)
            try await lease.renewIfDue()
            let written = try await store.transaction(isolation: .readCommitted) { tx in
                try await lease.check(tx)
                return try await InstancesTable.address(
                    tx, ids: given.map(\.instanceID), ips: given.map(\.address), prefixes: given.map { Int($0.prefixLength) },
                    gateways: given.map(\.gateway))
            }
            logger.debug("addresses given ahead", metadata: ["count": "\(written)"])
        }
    }
}
