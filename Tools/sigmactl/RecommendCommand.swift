import ArgumentParser
import ClientKit
import Core
import Foundation
import Protocol
import RPC

/// `sigmactl recommend APP [--window H] [--headroom P] [--apply]`: requests and limits from the usage history.
struct RecommendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recommend", abstract: "Propose requests and limits for an app from its usage history; --apply sets them live.",
        discussion: Examples.discussion("recommend", """
            The method (docs/operations.md, "Usage history and right-sizing"): request = p95 × (100 + headroom)%, \
            limit = peak × (100 + 2 × headroom)%, never below the request; CPU rounded up to 10m, memory to 1Mi. \
            --apply sets the proposal live: a new revision, no instance restarts.
            """))
    @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
    @Option(help: "Hours of history to read (default 168: the week kept).") var window: Int32 = 0
    @Option(help: "Headroom in percent over the p95 for requests; limits get twice this over the peak (default 15).")
    var headroom: Int32 = 0
    @Flag(help: "Set the proposed requests and limits live (UpdateResources).") var apply = false
    @Option(name: .shortAndLong, help: "Output: table, json or yaml.") var output: OutputFormat = .table
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let client = try endpoints.client(.scheduler)
        var request = Sigma_V1_RecommendResourcesRequest()
        request.app = app
        request.windowHours = window
        request.headroomPercent = headroom
        let answer = try await client.call(SchedulerMethods.recommendResources, request)
        if output.isStructured {
            try printMessage(answer, as: output)
        } else {
            print("app \(answer.app): \(answer.readings) reading(s) of \(answer.instances) instance(s), \(timestamp(answer.fromUnixMs)) to \(timestamp(answer.toUnixMs))")
            print("used: CPU p95 \(Quantity.formatCPU(answer.cpuP95Millis)), peak \(Quantity.formatCPU(answer.cpuPeakMillis)); "
                  + "memory p95 \(Quantity.formatBytesRounded(answer.memoryP95Bytes)), peak \(Quantity.formatBytesRounded(answer.memoryPeakBytes))")
            func cells(_ name: String, _ resources: Sigma_V1_ResourceRequirements) -> [String] {
                [name, Quantity.formatCPU(resources.request.cpuMillis), limitText(resources.limit.cpuMillis, Quantity.formatCPU),
                 Quantity.formatBytesRounded(resources.request.memoryBytes), limitText(resources.limit.memoryBytes, Quantity.formatBytesRounded)]
            }
            printTable(["", "CPU REQ", "CPU LIMIT", "MEM REQ", "MEM LIMIT"], [cells("current", answer.current), cells("proposed", answer.recommended)])
            print("method: \(answer.method)")
        }
        guard apply else { return }
        var update = Sigma_V1_UpdateResourcesRequest()
        update.app = app
        update.resources = answer.recommended
        let updated = try await client.call(SchedulerMethods.updateResources, update)
        if !output.isStructured { print("app/\(app) resources set live on \(updated.instances.count) instance(s)") }
    }
}
