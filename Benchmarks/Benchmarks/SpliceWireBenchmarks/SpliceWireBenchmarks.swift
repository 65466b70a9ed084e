import Benchmark
import SpliceEngine
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

    // The engine itself: one packet of an established flow through `Engine.process` (lookup,
    // tracking, verdict). Bypass: a 64-byte ACK. Resilient: a client's 1448-byte segment
    // translated for the proxy (ACK, TSecr, full checksum as for a CSUMNOTREADY packet).
    let bypass = EngineWorkload(resilient: false)
    Benchmark("engine bypass: 64B ACK of an established flow",
              configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(bypass.run()) }
    }
    let resilient = EngineWorkload(resilient: true)
    Benchmark("engine resilient: 1448B client segment toward the proxy",
              configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(resilient.run()) }
    }
    // The balancer: a backend's 1448-byte segment of a joined flow, translated onto the
    // client's connection (addresses, ports, sequence and acknowledgement numbers, window
    // scale, timestamps; a full checksum as for a CSUMNOTREADY packet) and tracked on both
    // connections' entries.
    let joined = JoinWorkload()
    Benchmark("engine joined: 1448B backend segment onto the client's connection",
              configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(joined.run()) }
    }
}

/// An engine, and one packet fed through it again and again (copied in first each time: the
/// engine rewrites it in place). The workloads below set up the flow the packet belongs to.
class EngineLoop: PacketInjector, @unchecked Sendable {
    let engine = Engine(table: FlowTable(capacity: 1 << 16, seed: 1))
    var packet: [UInt8] = []
    var info = PacketInfo()
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Engine.scratchBytes, alignment: 16)

    func inject(_ packet: UnsafeRawBufferPointer, to destination: IPAddress, toLocalSocket: Bool) {}
    func injectSplicing(_ packet: UnsafeRawBufferPointer, to destination: IPAddress) {}

    static let synOptions = SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                                       timestamps: TCPTimestamps(value: 1, echo: 0))

    /// A segment: with `syn`'s options, or else a timestamps option.
    static func segment(_ src: IPAddress, _ sport: UInt16, _ dst: IPAddress, _ dport: UInt16, _ flags: TCPFlags,
                        _ seq: UInt32, _ ack: UInt32, _ len: Int = 0, syn: SynOptions? = nil) -> [UInt8] {
        var spec = TCPPacketSpec(source: src, destination: dst, sourcePort: sport, destinationPort: dport,
                                 sequenceNumber: SeqNumber(seq), acknowledgmentNumber: SeqNumber(ack), flags: flags,
                                 payload: [UInt8](repeating: 7, count: len))
        if let syn { spec.setSynOptions(syn) } else { spec.options = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7] }
        return spec.bytes()
    }

    /// The set-up packets, through the engine once each.
    func feed(_ packets: [([UInt8], PacketInfo)]) {
        for (p, i) in packets {
            var b = p
            _ = b.withUnsafeMutableBytes { engine.process($0, scratch: scratch, info: i, now: Timestamp(deciseconds: 1)) }
        }
    }

    @inline(never)
    func run() -> Verdict {
        packet.withUnsafeBytes { buffer.copyMemory(from: $0) }
        let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<packet.count])
        let v = engine.process(bytes, scratch: scratch, info: info, now: Timestamp(deciseconds: 2))
        _ = v.finish(packet: bytes, scratch: scratch)
        return v
    }
}

/// Two balancer connections joined in an engine, and a backend's segment fed again and again.
final class JoinWorkload: EngineLoop, @unchecked Sendable {
    override init() {
        super.init()
        let client = IPAddress("10.0.1.2")!, vip = IPAddress("10.0.9.1")!
        let local = IPAddress("10.0.2.1")!, backend = IPAddress("10.0.2.2")!
        let pkt = EngineLoop.segment, opts = EngineLoop.synOptions
        engine.services = [ServiceAddress(address: vip, port: 80)]
        let pre = PacketInfo(hook: Engine.Hook.preRouting)
        let out = PacketInfo(hook: Engine.Hook.localOut, mark: SpliceMarks().balancer)
        feed([
            (pkt(client, 40000, vip, 80, .syn, 100, 0, 0, opts), pre),
            (pkt(vip, 80, client, 40000, [.syn, .ack], 5000, 101, 0, opts), out),
            (pkt(client, 40000, vip, 80, .ack, 101, 5001, 0, nil), pre),
            (pkt(local, 61000, backend, 80, .syn, 7000, 0, 0, opts), out),
            (pkt(backend, 80, local, 61000, [.syn, .ack], 900, 7001, 0, opts), pre),
            (pkt(local, 61000, backend, 80, .ack, 7001, 901, 0, nil), out),
        ])
        let r = JoinRequest(client: client, clientPort: 40000, service: vip, servicePort: 80,
                            local: local, localPort: 61000, backend: backend, backendPort: 80)
        precondition(engine.prepareJoin(r) == .accepted && engine.join(r, now: Timestamp(deciseconds: 1)) == .accepted,
                     "the join workload's connections did not join")
        packet = pkt(backend, 80, local, 61000, .ack, 901, 7001, 1448, nil)
        info = PacketInfo(hook: Engine.Hook.preRouting, checksumPartial: true)
        engine.injector = self
    }
}

/// A flow established in an engine, and one of its packets fed again and again.
final class EngineWorkload: EngineLoop, @unchecked Sendable {
    init(resilient: Bool) {
        super.init()
        let c = IPAddress("10.0.1.2")!, s = IPAddress("10.0.2.2")!
        let opts = EngineLoop.synOptions
        func pkt(_ fromClient: Bool, _ flags: TCPFlags, _ seq: UInt32, _ ack: UInt32, _ len: Int = 0,
                 syn: SynOptions? = nil) -> [UInt8] {
            fromClient ? EngineLoop.segment(c, 40000, s, 80, flags, seq, ack, len, syn: syn)
                : EngineLoop.segment(s, 80, c, 40000, flags, seq, ack, len, syn: syn)
        }
        if resilient {
            engine.policy = SplicePolicy(ports: [80], enabled: true)
            engine.proxyRegistered(id: 1)
        }
        let pre = PacketInfo(hook: Engine.Hook.preRouting), out = PacketInfo(hook: Engine.Hook.localOut)
        var setup = [(pkt(true, .syn, 100, 0, syn: opts), pre), (pkt(false, [.syn, .ack], 900, 101, syn: opts), pre),
                     (pkt(true, .ack, 101, 901), pre)]                                  // client ACK
        if resilient {
            // The validated handshake: the client's ACK becomes the SYN to the proxy, which answers.
            setup += [(pkt(false, [.syn, .ack], 5000, 101, syn: opts), out),        // proxy SYN-ACK
                      (pkt(true, .syn, 7000, 0, syn: opts), out),                   // proxy SYN up
                      (pkt(true, .ack, 7001, 901), out)]                            // proxy ACK up
        }
        feed(setup)
        info = PacketInfo(hook: Engine.Hook.preRouting, checksumPartial: resilient)
        packet = resilient ? pkt(true, .ack, 101, 901, 1448) : pkt(true, .ack, 101, 901)
        engine.injector = self
        precondition(!resilient || engine.flows(now: Timestamp(deciseconds: 1)).first?.phase == .established,
                     "the resilient workload's flow did not reach the established phase")
    }
}
