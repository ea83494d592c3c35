import Foundation
import Logging

/// Removes everything an agent made on its node: every instance (killed at once), their cgroups, overlay
/// mounts, namespaces and veth pairs, the bridge, the agent's cgroup parent and (with `removeState`) its state
/// folder. For taking a node out of service, and for tests and benchmarks that run agents of their own.
public enum NodeDecommission {
    public static func removeEverything(
        stateDirectory: String, bridge: String, node: String = "", cgroupParent: String, runtime: String, monitor: String,
        logger: Logger, removeState: Bool = true
    ) async {
        let configuration = RuntimeConfiguration(
            runtime: runtime, monitor: monitor, stateDirectory: stateDirectory, cgroupParent: cgroupParent)
        if let instances = try? InstanceRuntime(configuration: configuration, logger: logger) {
            let network = try? NodeNetwork(bridge: bridge, node: node)
            for id in (try? FileManager.default.contentsOfDirectory(atPath: stateDirectory + "/instances")) ?? [] {
                await instances.cleanUp(id, removeFolder: true)
                await network?.detach(id)
            }
            VolumeStore(stateDirectory: stateDirectory).releaseAll()
            await network?.removeBridge()
            await HostPorts(bridge: bridge, hostIP: "").removeTable()
        }
        // The parent and its ancestors as far as they are empty ("sigma/node-1", then "sigma").
        var path = cgroupParent.split(separator: "/").map(String.init)
        while !path.isEmpty {
            Cgroup(root: configuration.cgroupRoot, version: configuration.cgroupVersion, path: path.joined(separator: "/")).remove()
            path.removeLast()
        }
        if removeState { try? FileManager.default.removeItem(atPath: stateDirectory) }
    }
}
