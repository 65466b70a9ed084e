// swift-tools-version:6.0
// tcpsplice: a Linux TCP splicing middlebox.
//
// Module map (one job each):
//   SpliceWire            packet library: IPv4/IPv6/TCP views, options, SeqNumber, checksums. No I/O.
//   SpliceCounters        the engine's counters, grouped as the status report shows them. No I/O.
//   SpliceEngine          flow table and verdict logic. No I/O.
//   SpliceRules           splice rules: what the proxy reads of a request or response, and the action it takes. No I/O.
//   SpliceControlProtocol control-socket message types and framing. No I/O.
//   SpliceDaemonCore      the daemon's logic: proxy registry, status report, flow records. No I/O.
//   SpliceKernel          the kernel edge: NFQUEUE reader, raw-socket injector, Unix control sockets.
//   spliced / splicectl / splice-proxy   the executables.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "tcpsplice",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "spliced", targets: ["spliced"]),
        .executable(name: "splicectl", targets: ["splicectl"]),
        .executable(name: "splice-proxy", targets: ["splice-proxy"]),
        .library(name: "SpliceWire", targets: ["SpliceWire"]),
        .library(name: "SpliceEngine", targets: ["SpliceEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CNetfilterQueue",
            pkgConfig: "libnetfilter_queue",
            providers: [.apt(["libnetfilter-queue-dev", "libmnl-dev"])]
        ),
        .systemLibrary(name: "CLinuxSupport"),
        .target(name: "SpliceWire", swiftSettings: strict),
        .target(name: "SpliceCounters", swiftSettings: strict),
        .target(name: "SpliceEngine", dependencies: ["SpliceWire", "SpliceCounters", "SpliceRules"], swiftSettings: strict),
        .target(name: "SpliceRules", dependencies: ["SpliceWire"], swiftSettings: strict),
        .target(name: "SpliceControlProtocol", dependencies: ["SpliceWire", "SpliceCounters", "SpliceRules"], swiftSettings: strict),
        .target(name: "SpliceDaemonCore", dependencies: ["SpliceEngine", "SpliceControlProtocol", "SpliceRules"], swiftSettings: strict),
        .target(
            name: "SpliceKernel",
            dependencies: [
                "CNetfilterQueue", "SpliceWire", "SpliceEngine", "SpliceControlProtocol",
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "spliced",
            dependencies: [
                "CLinuxSupport", "SpliceWire", "SpliceEngine", "SpliceKernel", "SpliceControlProtocol", "SpliceDaemonCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "splicectl",
            dependencies: [
                "SpliceKernel", "SpliceEngine", "SpliceControlProtocol", "SpliceRules", "SpliceWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "splice-proxy",
            dependencies: [
                "CLinuxSupport", "SpliceKernel", "SpliceWire", "SpliceControlProtocol", "SpliceRules",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The seeded generator and the environment's seed and counts, shared by the test targets.
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "SpliceRulesTests", dependencies: ["SpliceRules", "SpliceWire", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "SpliceWireTests", dependencies: ["SpliceWire", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "SpliceEngineTests", dependencies: ["SpliceEngine", "SpliceWire", "SpliceRules", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "SpliceDaemonCoreTests", dependencies: ["SpliceDaemonCore", "SpliceEngine", "SpliceControlProtocol", "SpliceWire", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "SpliceKernelTests", dependencies: ["SpliceKernel", "SpliceControlProtocol"], swiftSettings: strict),
    ]
)
