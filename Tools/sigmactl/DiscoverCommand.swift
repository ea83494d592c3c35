import ArgumentParser
import DiscoveryClient
import Foundation
import Protocol
import RPC
import ClientKit
import SwiftProtobuf

/// `sigmactl discover APP [--wait]`: an app's endpoints as Discovery serves them to its peers.
struct DiscoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "discover", abstract: "Show an app's endpoints (instance IP, ports, host IP:port, state) from Discovery.",
        discussion: Examples.discussion("discover"))
    @Argument(help: "App name.", completion: NameCompletion.apps) var app: String
    @Flag(help: "Only Running instances whose readiness check passes.") var ready = false
    @Option(help: "Only this state.") var state: String = ""
    @Option(help: "Only this IDC.") var idc: String = ""
    @Flag(help: "Wait for the next change of the app's endpoints (past --index, default the current one), then show them.") var wait = false
    @Option(help: "With --wait: the index to wait past.") var index: UInt64?
    @Option(help: "With --wait: seconds to wait at most.") var waitTimeout: Double = 60
    @Option(name: .shortAndLong, help: "Output: table, wide, json or yaml.") var output: OutputFormat = .table
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let client = try DiscoveryClient(
            endpoints: endpoints.endpoints(.discovery).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) },
            curve: try endpoints.keys.curve(file: endpoints.settings), timeout: .milliseconds(Int(endpoints.timeout * 1000)))
        defer { client.close() }
        let filter = DiscoveryClient.Filter(readyOnly: ready, state: state, idc: idc)
        var answer = try await client.resolve(app, filter: filter)
        if wait {
            answer = try await client.waitForChange(app, after: index ?? answer.index, filter: filter, timeout: .milliseconds(Int(waitTimeout * 1000)))
        }
        if output.isStructured {
            var response = Sigma_V1_ResolveResponse()
            response.app = app
            response.index = answer.index
            response.endpoints = answer.endpoints
            return try printMessage(response, as: output)
        }
        print("app/\(app) index \(answer.index)\(answer.fromCache ? " (from the cache file)" : "")")
        printTable(["ORDINAL", "STATE", "READY", "IP", "PORTS", "HOST"] + (output == .wide ? ["NODE", "IDC", "ID"] : []),
                   answer.endpoints.map { endpoint in
                       let ports = endpoint.ports.map { port in
                           "\(port.name):\(port.containerPort)" + (port.hostPort > 0 ? "->\(endpoint.hostIp):\(port.hostPort)" : "")
                       }.joined(separator: ",")
                       return ["\(endpoint.ordinal)", endpoint.state, endpoint.ready ? "yes" : "no", endpoint.ip.isEmpty ? "-" : endpoint.ip,
                               ports.isEmpty ? "-" : ports, endpoint.hostIp.isEmpty ? "-" : endpoint.hostIp]
                           + (output == .wide ? [endpoint.node.isEmpty ? "-" : endpoint.node, endpoint.idc.isEmpty ? "-" : endpoint.idc, endpoint.instanceID] : [])
                   })
    }
}
