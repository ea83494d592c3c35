import Core
import Protocol

/// The "super server": capacity, requests, limits and usage summed over every node, grouped by region, IDC,
/// ISP or any label, and per node.
enum Pool {
    static func summary(nodes: [Sigma_V1_Node], groupBy: [String]) -> Sigma_V1_GetPoolResponse {
        var response = Sigma_V1_GetPoolResponse()
        response.total = figures(nodes)
        let keys = groupBy.isEmpty ? ["region", "idc", "isp"] : groupBy
        for key in keys {
            let groups = Dictionary(grouping: nodes) { $0.value(forKey: key) ?? "" }
            for name in groups.keys.sorted() {
                var group = Sigma_V1_PoolGroup()
                group.key = key
                group.value = name
                group.figures = figures(groups[name]!)
                response.groups.append(group)
            }
        }
        response.nodes = nodes.map { node in
            var figures = Sigma_V1_NodeFigures()
            figures.node = node.name
            figures.health = node.health
            figures.figures = self.figures([node])
            return figures
        }
        return response
    }


    static func figures(_ nodes: [Sigma_V1_Node]) -> Sigma_V1_PoolFigures {
        var figures = Sigma_V1_PoolFigures()
        var capacity = Resources.zero, requested = Resources.zero, limits = Resources.zero
        for node in nodes {
            figures.nodes += 1
            if node.health == NodeHealth.ready.rawValue && !node.cordoned { figures.readyNodes += 1 }
            capacity += Resources(wire: node.capacity)
            requested += Resources(wire: node.requested)
            limits += Resources(wire: node.limits)
            figures.usage.cpuMillis += node.usage.cpuMillis
            figures.usage.memoryBytes += node.usage.memoryBytes
            figures.usage.diskBytes += node.usage.diskBytes
            figures.diskBytes += node.diskBytes
            figures.instances += node.instances
        }
        figures.capacity = capacity.wire
        figures.requested = requested.wire
        figures.limits = limits.wire
        return figures
    }
}
