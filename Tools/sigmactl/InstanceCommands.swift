import ArgumentParser
import Core
import Protocol
import RPC
import ClientKit

/// `sigmactl migrate INSTANCE [--to NODE]`.
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate", abstract: "Move one instance to another node, keeping its IP.",
        discussion: Examples.discussion("migrate"))
    @Argument(help: "APP-ORDINAL or instance id.", completion: NameCompletion.instances) var instance: String
    @Option(help: "Target node (default: wherever placement says).") var to: String = ""
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let client = try endpoints.client(.scheduler)
        var request = Sigma_V1_MigrateInstanceRequest()
        request.instanceID = try await resolveInstance(client, instance).id
        request.toNode = to
        let answer = try await client.call(SchedulerMethods.migrateInstance, request)
        print("instance \(instanceName(answer.instance)) needs migration off \(answer.instance.node)\(to.isEmpty ? "" : " to \(to)")")
    }
}

/// `sigmactl restart APP-N`: a new generation of one instance (`RestartInstance`).
struct RestartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart", abstract: "Restart one instance: a new generation, on its node; one that ended is placed again.",
        discussion: Examples.discussion(
            "restart", "Every instance of an app, one after another under its update strategy: sigmactl rollout restart APP."))
    @Argument(help: "APP-ORDINAL or instance id.", completion: NameCompletion.instances) var instance: String
    @OptionGroup var endpoints: EndpointOptions

    func run() async throws {
        let client = try endpoints.client(.scheduler)
        var request = Sigma_V1_GetInstanceRequest()
        request.id = try await resolveInstance(client, instance).id
        let answer = try await client.call(SchedulerMethods.restartInstance, request).instance
        let whereTo = answer.state == InstanceState.needMigration.rawValue ? "to be placed again" : "generation \(answer.generation) on \(answer.node)"
        print("instance \(instanceName(answer)) restarted: \(whereTo)")
    }
}
