import Core
import Foundation
import Manifest
import Testing

/// SQL reads a few paths of the stored spec JSON; they are named once (`AppSpec.StoredPath`, from the coding
/// keys) and the views of migration 20 read `ports`, `image` and `config`. A property renamed keeps its key,
/// and a key renamed fails here.
@Suite struct AppSpecStorageTests {
    static func stored() throws -> [String: Any] {
        let spec = try #require(try AppManifest.parse(ManifestFuzzTests.manifest).first)
        return try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(spec)) as? [String: Any])
    }

    @Test func everyPathSQLReadsIsInTheStoredJSON() throws {
        let json = try Self.stored()
        for path in AppSpec.StoredPath.all {
            var value: Any? = json
            for key in path.keys { value = (value as? [String: Any])?[key] }
            #expect(value is Int || value is String, "\(path) is not in the stored spec")
        }
        #expect(json["ports"] is [[String: Any]] && json["image"] is String && json["config"] is [String: Any],
                "the views of 0020_ContractViews.swift read ports, image and config")
        let port = try #require((json["ports"] as? [[String: Any]])?.first)
        #expect(Set(port.keys) == ["name", "containerPort", "protocol"], "Discovery decodes these from the ports column")
        #expect(AppSpec.StoredPath.requestCPU.description == "'{resources,request,cpuMillis}'")
    }
}
