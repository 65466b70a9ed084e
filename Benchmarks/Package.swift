// swift-tools-version:6.1
// Microbenchmarks of the packet library (SpliceWire), kept out of the root package so that
// its users and CI never resolve package-benchmark. Run: see README.md.
import PackageDescription

// The root package is `..`; SwiftPM names a path dependency after its folder, which is not
// the same in every clone, so the name is taken from where this manifest is.
let rootPackage = Context.packageDirectory.split(separator: "/").dropLast().last.map(String.init) ?? "main"

let package = Package(
    name: "tcpsplice-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The baseline a fast checksum must beat: a plain C loop over 16-bit words.
        .target(name: "CChecksumBaseline"),
        // The measured work, shared by the benchmark suite and the stand-alone harness.
        .target(
            name: "SpliceWireWorkloads",
            dependencies: ["CChecksumBaseline", .product(name: "SpliceWire", package: rootPackage)]
        ),
        // Bytes per flow of the flow table, from resident memory (see README.md).
        .executableTarget(
            name: "FlowTableMemory",
            dependencies: [
                .product(name: "SpliceEngine", package: rootPackage),
                .product(name: "SpliceWire", package: rootPackage),
            ]
        ),
        .executableTarget(
            name: "SpliceWireBenchmarks",
            dependencies: [
                "SpliceWireWorkloads",
                .product(name: "SpliceWire", package: rootPackage),
                .product(name: "SpliceEngine", package: rootPackage),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/SpliceWireBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
