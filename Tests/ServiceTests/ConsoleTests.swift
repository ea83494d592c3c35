import Foundation
import Testing
import TestSupport

/// sigma-console's own rules (the page against a running demo, in Chromium, is `scripts/demo check`).
@Suite struct ConsoleTests {
    /// GET url with an optional Authorization header: (status code, body), by python3's urllib.
    static func get(_ url: String, authorization: String? = nil) async throws -> (Int, String) {
        let script = """
            import sys, urllib.request, urllib.error
            request = urllib.request.Request(sys.argv[1])
            if len(sys.argv) > 2: request.add_header("Authorization", sys.argv[2])
            try:
                response = urllib.request.urlopen(request, timeout=60); print(response.status); print(response.read().decode())
            except urllib.error.HTTPError as e:
                print(e.code); print(e.headers.get("WWW-Authenticate", "")); print(e.read().decode())
            """
        let output = try await runProgram("/usr/bin/python3", ["-c", script, url] + (authorization.map { [$0] } ?? []))
        let lines = output.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        return (Int(lines.first ?? "") ?? 0, lines.count > 1 ? String(lines[1]) : "")
    }

    @Test func beyondTheLoopbackItAsksForTheOperatorCredential() async throws {
        let file = NSTemporaryDirectory() + "sigma-console-\(UUID().uuidString.prefix(8))"
        try "a-long-operator-secret\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        // Beyond the loopback without a credential: refused at start, saying why.
        let refused = try await runProgramStatus(ServiceProcess.binDirectory + "/sigma-console", ["--http", "0.0.0.0:0"])
        #expect(refused.status != 0)
        #expect(refused.output.contains("credential"))

        // No scheduler answers at this endpoint: the data call says so (502), the page still loads.
        let console = try ServiceProcess("sigma-console", ["--http", "127.0.0.1:0", "--credential-file", file, "--scheduler", "tcp://127.0.0.1:1", "--timeout", "1"])
        defer { console.crash() }
        let url = try await console.endpoint()
        let (status, challenge) = try await Self.get(url)
        #expect(status == 401)
        #expect(challenge.contains("Basic realm"))
        #expect(try await Self.get(url, authorization: "Bearer wrong-secret-of-length").0 == 401)
        let basic = "Basic " + Data("ann:a-long-operator-secret".utf8).base64EncodedString()
        let (ok, page) = try await Self.get(url, authorization: basic)
        #expect(ok == 200)
        #expect(page.contains("Sigma console") && page.contains("api/overview"))
        // Every asset is in the page itself: no script, style or image from elsewhere.
        #expect(!page.contains("src=\"http") && !page.contains("href=\"http") && !page.contains("src=\"//"))
        let (unavailable, error) = try await Self.get(url + "api/overview", authorization: "Bearer a-long-operator-secret")
        #expect(unavailable == 502)
        #expect(error.contains("\"error\"") && error.contains("UNAVAILABLE"))
    }
}
