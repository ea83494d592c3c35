import ArgumentParser
import ClientKit
import Foundation
import Protocol
import RPC

/// Shell completion of names (`sigmactl --generate-completion-script bash|zsh|fish`): apps, nodes and instances
/// as the scheduler knows them now, found where every call finds it (SIGMA_SCHEDULER, ~/.sigma/config and its
/// context, the default) within a second; nothing when it does not answer.
enum NameCompletion {
    enum Kind { case apps, nodes, instances }

    static func names(_ kind: Kind, prefix: String) async -> [String] {
        guard let options = try? EndpointOptions.parse(["--timeout", "1"]), let client = try? options.client(.scheduler) else { return [] }
        let names: [String]
        switch kind {
        case .apps: names = (try? await client.call(SchedulerMethods.listApps, .init()).apps.map(\.spec.name)) ?? []
        case .nodes: names = (try? await client.call(SchedulerMethods.listNodes, .init()).nodes.map(\.name)) ?? []
        case .instances: names = (try? await client.call(SchedulerMethods.listInstances, .init()).instances.map(instanceName)) ?? []
        }
        return names.filter { $0.hasPrefix(prefix) }.sorted()
    }

    static let apps = CompletionKind.custom { _, _, prefix in await names(.apps, prefix: prefix) }
    static let nodes = CompletionKind.custom { _, _, prefix in await names(.nodes, prefix: prefix) }
    static let instances = CompletionKind.custom { _, _, prefix in await names(.instances, prefix: prefix) }

    /// `get KIND NAME` / `describe KIND NAME`: the names of the kind given before it.
    static let ofKind = CompletionKind.custom { words, index, prefix in
        let before = words.prefix(index)
        if before.contains(where: { ["node", "nodes", "no"].contains($0) }) { return await names(.nodes, prefix: prefix) }
        if before.contains(where: { ["instance", "instances", "inst"].contains($0) }) { return await names(.instances, prefix: prefix) }
        if before.contains(where: { ["app", "apps"].contains($0) }) { return await names(.apps, prefix: prefix) }
        return []
    }
}
