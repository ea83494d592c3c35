// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Sigma",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sigma-scheduler", targets: ["Scheduler"]),
        .executable(name: "sigma-allocator", targets: ["Allocator"]),
        .executable(name: "sigma-agent", targets: ["NodeAgent"]),
        .executable(name: "sigma-monitor", targets: ["AgentMonitor"]),
        .executable(name: "sigma-config", targets: ["ConfigCenter"]),
        .executable(name: "sigma-discovery", targets: ["Discovery"]),
        .executable(name: "sigmactl", targets: ["sigmactl"]),
        .executable(name: "sigma-bench", targets: ["SigmaBench"]),
        .executable(name: "sigma-console", targets: ["Console"]),
        .executable(name: "sigma-fuzz", targets: ["SigmaFuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // C libraries. Only RPC may import CZeroMQ and only Store may import CLibPQ
        // (the benchmark's raw-libzmq baseline is the one documented exception).
        .systemLibrary(
            name: "CZeroMQ", path: "Shared/CZeroMQ", pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(
            name: "CLibPQ", path: "Shared/CLibPQ", pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]),

        // Shared libraries.
        .target(name: "Core", path: "Shared/Core"),
        // App specs from YAML (sigmactl apply -f); its own target so only the tools link Yams.
        .target(name: "Manifest", dependencies: ["Core", .product(name: "Yams", package: "Yams")], path: "Shared/Manifest"),
        .target(
            name: "Protocol",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            path: "Shared/Protocol", exclude: ["proto"]),
        .target(
            name: "RPC",
            dependencies: [
                "CZeroMQ", "Protocol",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Shared/RPC"),
        .target(
            name: "Store",
            dependencies: [
                "CLibPQ", "Protocol",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Shared/Store"),
        // What business code links to find its peers (Resolve, blocking waits, a cache file to fall back to).
        .target(
            name: "DiscoveryClient",
            dependencies: ["Protocol", "RPC", .product(name: "Logging", package: "swift-log")],
            path: "Shared/DiscoveryClient"),
        // What every client of the services links (sigmactl, the console, the agent): where the services are,
        // CURVE keys, the spec and state converters between Core and the wire, log format. No store.
        .target(
            name: "ClientKit",
            dependencies: [
                "Core", "Protocol", "RPC",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Shared/ClientKit"),
        // What every service that serves is made of (the agent too): the RPC server, Health, Metrics, shutdown.
        .target(
            name: "Hosting",
            dependencies: [
                "ClientKit", "Protocol", "RPC",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Shared/Hosting"),
        // The control-plane host: Hosting plus the store (required), migrations, access control and the audit log.
        // Only the four control-plane services link it, and with it libpq.
        .target(
            name: "ControlPlane",
            dependencies: [
                "ClientKit", "Core", "Hosting", "Protocol", "RPC", "Store",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Shared/ControlPlane"),

        // Services: each imports the shared libraries, never another service.
        .executableTarget(
            name: "Scheduler",
            dependencies: ["ControlPlane", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            path: "Services/Scheduler"),
        .executableTarget(
            name: "Allocator",
            dependencies: ["ControlPlane", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            path: "Services/Allocator"),
        .executableTarget(name: "NodeAgent", dependencies: ["ClientKit", "Hosting", "NodeRuntime"], path: "Services/NodeAgent/Agent"),
        // The agent's runtime (runc, cgroups, images, the node's network); a library so tests drive it directly.
        .target(
            name: "NodeRuntime", dependencies: ["Core", "CRootedFS", .product(name: "Logging", package: "swift-log")],
            path: "Services/NodeAgent/Runtime"),
        // openat2(2) for the runtime: files written into an instance are resolved inside its root.
        .target(name: "CRootedFS", path: "Services/NodeAgent/CRootedFS"),
        // sigma-monitor, in C: one small process per instance that holds its stdio and records its exit.
        .executableTarget(name: "AgentMonitor", path: "Services/NodeAgent/Monitor"),
        .executableTarget(
            name: "ConfigCenter",
            dependencies: [
                "ControlPlane", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Mustache", package: "swift-mustache"),
            ],
            path: "Services/ConfigCenter"),
        .executableTarget(
            name: "Discovery",
            dependencies: ["ControlPlane", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            path: "Services/Discovery"),
        .executableTarget(
            name: "sigmactl",
            dependencies: [
                "ClientKit", "Manifest", "DiscoveryClient", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Yams", package: "Yams"),
            ],
            path: "Tools/sigmactl"),
        // The web console: reads through the same RPCs as sigmactl and serves the page, its data and /metrics.
        .executableTarget(
            name: "Console",
            dependencies: [
                "ClientKit", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tools/console"),
        // Seeded hostile requests (sigma-fuzz, make fuzz, and the fuzz smoke test).
        .target(name: "Fuzzing", dependencies: ["Core", "Protocol", "RPC"], path: "Tools/fuzzing"),
        .executableTarget(
            name: "SigmaFuzz", dependencies: ["Fuzzing", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Tools/fuzz"),
        .executableTarget(
            name: "SigmaBench",
            dependencies: [
                "Core", "Store", "DiscoveryClient", "NodeRuntime", "CZeroMQ",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/sigma-bench"),

        // Tests (Swift Testing).
        .testTarget(name: "CoreTests", dependencies: ["Core", "Manifest"], path: "Tests/CoreTests"),
        .testTarget(name: "RPCTests", dependencies: ["RPC", "Protocol"], path: "Tests/RPCTests"),
        .testTarget(name: "StoreTests", dependencies: ["Core", "Store", "TestSupport"], path: "Tests/StoreTests"),
        .testTarget(
            name: "ServiceTests", dependencies: ["ControlPlane", "Manifest", "DiscoveryClient", "NodeRuntime", "TestSupport", "Fuzzing"],
            path: "Tests/ServiceTests"),
        .testTarget(name: "AgentTests", dependencies: ["NodeRuntime", "TestSupport"], path: "Tests/AgentTests"),
        .target(name: "TestSupport", dependencies: ["Store"], path: "Tests/TestSupport"),
    ]
)
