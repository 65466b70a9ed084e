import Benchmark
import SpliceWire
import SpliceWireWorkloads

/// Per-operation figures: wall clock per iteration (one checksum or one packet), throughput,
/// and mallocs (which must be 0 on the per-packet paths).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 100,
        scalingFactor: .one,
        maxDuration: .seconds(3),
        maxIterations: 1_000_000
    )

    let data = UnsafeRawBufferPointer(Workloads.randomBytes(Workloads.checksumBytes))
    let fast = Workloads.fastSum(data)
    precondition(fast == Workloads.referenceSum(data) && fast == Workloads.cLoopSum(data)
                 && fast == Workloads.swiftWordLoopSum(data), "checksum implementations disagree")

    // (a) The full checksum over 64 KiB: one iteration is one 64 KiB sum.
    Benchmark("checksum 64KiB: Checksum.sum") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Workloads.fastSum(data)) }
    }
    Benchmark("checksum 64KiB: Checksum.referenceSum") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Workloads.referenceSum(data)) }
    }
    Benchmark("checksum 64KiB: plain C 16-bit loop") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Workloads.cLoopSum(data)) }
    }
    Benchmark("checksum 64KiB: plain Swift 16-bit loop") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Workloads.swiftWordLoopSum(data)) }
    }

    // (b) A 64-byte ACK: parse + rewrite (seq, ack, SACK, timestamps) + checksum. One
    // iteration is one packet; 1000 packets per sample so the clock's resolution does not count.
    let ack = Workloads.makeACK()
    Benchmark("ACK 64B: parse+rewrite, incremental checksum",
              configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Workloads.rewriteACK(ack)) }
    }
    Benchmark("ACK 64B: parse+rewrite, full checksum",
              configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Workloads.rewriteACKFullChecksum(ack)) }
    }

    // Both addresses of an IPv6 ACK (four 32-bit pseudo-header words each), incremental.
    let ack6 = Workloads.makeACKv6()
    Benchmark("ACK v6: source and destination rewrite",
              configuration: .init(scalingFactor: .kilo)) { benchmark in
        var flip = false
        for _ in benchmark.scaledIterations {
            flip.toggle()
            blackHole(Workloads.rewriteV6Addresses(ack6, flip: flip))
        }
    }

    // (c) A 64 KiB GSO packet, CSUMNOTREADY: parse + rewrite + full checksum.
    let gso = Workloads.makeGSO()
    Benchmark("GSO 64KiB: parse+rewrite, full checksum") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Workloads.rewriteGSOFullChecksum(gso)) }
    }
}
