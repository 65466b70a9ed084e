import Foundation
import Testing
@testable import SpliceWire
import TestSupport

/// No-trap fuzzing of `TCPPacket.parse` and of everything that can be done to a packet that
/// parses. Feeds `SPLICE_FUZZ_PACKETS` (default 10 million) random and mutated packets through
/// one reused buffer; any trap fails the run. For the packets that parse it also checks that
/// incremental rewrites keep a valid checksum valid and that a SYN option rebuild parses.
///
/// 10 million takes a few seconds in a release build (`swift test -c release`) and several
/// times longer in a debug build (~115 s on one core); see `Benchmarks/README.md` for the
/// measured figures. The packets are fed in `shards` parallel cases of the test (shard k:
/// its own generator, seeded with the run's seed + k, and an equal share of the packets), so
/// that the suite's cores share them.
@Suite("Parse fuzz: no traps")
struct ParseFuzzTests {
    /// A well-formed packet to mutate, with where its TCP header and IPv6 extension headers are.
    struct Seed {
        var bytes: [UInt8]
        var tcpOffset: Int
        var extensionOffsets: [Int]
    }

    static func makeCorpus(_ rng: inout SplitMix64) -> [Seed] {
        var corpus: [Seed] = []
        func add(_ spec: TCPPacketSpec, chain: [Fixtures.ExtensionHeader] = []) {
            var bytes = spec.bytes()
            var offsets: [Int] = []
            var tcpOffset = spec.ipHeaderLength
            if !chain.isEmpty {
                bytes = Fixtures.withExtensionHeaders(bytes, chain)
                var o = 40
                for h in chain {
                    offsets.append(o)
                    o += h.encode(next: 0).count
                }
                tcpOffset = o
            }
            corpus.append(Seed(bytes: bytes, tcpOffset: tcpOffset, extensionOffsets: offsets))
        }
        for v6 in [false, true] {
            add(Fixtures.synSpec(v6: v6))
            add(Fixtures.dataSpec(v6: v6))
            var sack = Fixtures.dataSpec(v6: v6, payload: [])
            sack.options = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 26] + rng.bytes(24)
            add(sack)
        }
        add(Fixtures.dataSpec(v6: true), chain: [.hopByHop(units: 0), .routing(units: 1), .fragment(offset: 0, more: false),
                                                .authentication(icvWords: 3), .destinationOptions(units: 0)])
        add(Fixtures.synSpec(v6: true), chain: [.destinationOptions(units: 1)])
        add(Fixtures.dataSpec(v6: true), chain: [.fragment(offset: 0, more: true)])
        // Path MTU errors quoting a segment (Engine.tooBigFromHop parses them from the ends' queue).
        for v6 in [false, true] {
            let hop = v6 ? IPAddress("2001:db8:ff::1")! : IPAddress("203.0.113.1")!
            let ip = v6 ? 40 : 20
            if let error = ICMPTooBig.build(hop: hop, mtu: 1400, quoting: Fixtures.dataSpec(v6: v6).bytes(), quote: 48 + ip) {
                corpus.append(Seed(bytes: error, tcpOffset: ip + 8 + ip, extensionOffsets: []))
            }
        }
        for i in 0..<200 {
            var spec = Fixtures.randomSpec(&rng, largePayloads: false)
            // Mostly small packets: the headers are what the fuzzing is about.
            switch i % 20 {
            case 0..<14: spec.payload = rng.bytes(rng.below(65))
            case 14..<19: spec.payload = rng.bytes(65 + rng.below(1400))
            default: spec.payload = rng.bytes(1500 + rng.below(7500))
            }
            add(spec, chain: spec.isIPv6 && rng.oneIn(3) ? Fixtures.randomExtensionChain(&rng, maxCount: 6) : [])
        }
        return corpus
    }

    /// What became of the fuzzed packets.
    struct Counts {
        var tcp = 0, notTCP = 0, fragment = 0, malformed = 0
        var validBefore = 0, rebuilt = 0
        var failures = 0
        var firstFailure: String?
        var sink: UInt64 = 0
    }

    static let shards = 4

    @Test("10 million random and mutated packets: parse and every accessor and rewrite never trap",
          arguments: 0..<shards)
    func fuzz(shard: Int) {
        let seed = testSeed(default: 0xf022_0001) &+ UInt64(shard)
        let all = environmentCount("SPLICE_FUZZ_PACKETS", default: 10_000_000)
        let total = all / Self.shards + (shard < all % Self.shards ? 1 : 0)
        guard total > 0 else { return }   // SPLICE_FUZZ_PACKETS below the number of shards
        var rng = SplitMix64(seed: seed)
        let corpus = Self.makeCorpus(&rng)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536 + 128, alignment: 16)
        let rebuildBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536 + 128, alignment: 16)
        defer {
            buffer.deallocate()
            rebuildBuffer.deallocate()
        }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        rebuildBuffer.initializeMemory(as: UInt8.self, repeating: 0)
        var counts = Counts()
        let clock = ContinuousClock()
        let start = clock.now
        var done = 0

        // Every seed cut at every length (the IP length fields still claim the whole packet,
        // and then also claiming exactly the cut length).
        for s in corpus where done < total {
            for cut in 0...s.bytes.count where done < total {
                for fixLength in [false, true] {
                    let length = Self.load(s, into: buffer, length: cut)
                    if fixLength { Self.claimLength(buffer, length: length) }
                    Self.run(buffer.slice(0, length), rebuildBuffer, &rng, &counts, seed: seed, index: done)
                    done += 1
                }
            }
        }
        let truncations = done
        // Then random mutations of random seeds, and some plain noise.
        while done < total {
            let length: Int
            if rng.oneIn(16) {
                length = rng.below(128)
                for i in 0..<length { buffer[i] = rng.u8() }
                if length > 0, rng.bool() { buffer[0] = (rng.bool() ? 0x40 : 0x60) | (buffer[0] & 0x0f) }
            } else {
                let s = corpus[rng.below(corpus.count)]
                var n = Self.load(s, into: buffer, length: s.bytes.count)
                for _ in 0..<(1 + rng.below(4)) {
                    n = Self.mutate(buffer, length: n, seed: s, &rng)
                }
                length = n
            }
            Self.run(buffer.slice(0, length), rebuildBuffer, &rng, &counts, seed: seed, index: done)
            done += 1
        }
        let elapsed = clock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print("""
            parse fuzz, shard \(shard) of \(Self.shards): \(done) packets in \(String(format: "%.2f", seconds)) s \
            (\(String(format: "%.0f", seconds * 1e9 / Double(max(done, 1)))) ns/packet, \(truncations) of them truncations), \
            seed \(seed): \
            tcp \(counts.tcp) (checksum valid \(counts.validBefore), SYN rebuilds \(counts.rebuilt)), \
            notTCP \(counts.notTCP), fragment \(counts.fragment), malformed \(counts.malformed) [\(counts.sink & 1)]
            """)
        #expect(counts.failures == 0, "\(counts.failures) failures, first: \(counts.firstFailure ?? "")")
        #expect(counts.tcp > done / 20, "too few packets parsed as TCP to exercise the rewrites")
        #expect(counts.malformed > done / 20, "too few malformed packets")
    }

    // MARK: Building inputs

    /// Copies the first `length` bytes of a seed into the buffer.
    @inline(__always)
    static func load(_ s: Seed, into buffer: UnsafeMutableRawBufferPointer, length: Int) -> Int {
        s.bytes.withUnsafeBytes { src in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<length]))
        }
        return length
    }

    /// Sets the IP length field to say the packet is exactly `length` bytes.
    static func claimLength(_ buffer: UnsafeMutableRawBufferPointer, length: Int) {
        guard length >= 6 else { return }
        if buffer[0] >> 4 == 4 {
            buffer.setBE16(2, UInt16(truncatingIfNeeded: length))
        } else {
            buffer.setBE16(4, UInt16(truncatingIfNeeded: length - 40))
        }
    }

    /// One mutation; returns the new length.
    static func mutate(_ b: UnsafeMutableRawBufferPointer, length n: Int, seed s: Seed, _ rng: inout SplitMix64) -> Int {
        guard n > 0 else { return n }
        let isV4 = b[0] >> 4 == 4
        let tcp = s.tcpOffset
        switch rng.below(14) {
        case 0:   // a bit flip anywhere
            let i = rng.below(n)
            b[i] ^= 1 << UInt8(rng.below(8))
        case 1, 2:   // bit flips in the headers
            let i = rng.below(min(n, tcp + 60))
            b[i] ^= 1 << UInt8(rng.below(8))
        case 3:   // a random byte in the headers
            b[rng.below(min(n, tcp + 60))] = rng.u8()
        case 4:   // truncation
            return rng.below(n + 1)
        case 5:   // trailing garbage past the IP length
            let extra = min(rng.below(64), 65_536 + 128 - n)
            for i in n..<(n + extra) { b[i] = rng.u8() }
            return n + extra
        case 6:   // IP length field: garbage, or off by a little
            guard n >= 6 else { break }
            let field = isV4 ? 2 : 4
            let v = rng.bool() ? rng.u16() : b.be16(field) &+ UInt16(truncatingIfNeeded: rng.int(-8...8))
            b.setBE16(field, v)
        case 7:   // IHL (v4) or next header (v6)
            if isV4 {
                b[0] = 0x40 | UInt8(rng.below(16))
            } else if n > 6 {
                let codes: [UInt8] = [0, 6, 17, 43, 44, 50, 51, 58, 59, 60, rng.u8()]
                b[6] = codes[rng.below(codes.count)]
            }
        case 8:   // TCP data offset: any nibble
            guard n > tcp + 12 else { break }
            b[tcp + 12] = UInt8(rng.below(16)) << 4 | (b[tcp + 12] & 0x0f)
        case 9, 10:   // an option length byte: 0, 1, huge, random
            let optionsEnd = min(n, tcp + 60)
            guard optionsEnd > tcp + 21 else { break }
            let i = tcp + 21 + rng.below(optionsEnd - tcp - 21)
            b[i] = [0, 1, 2, 255, 41, rng.u8()][rng.below(6)]
        case 11:   // an option kind byte
            let optionsEnd = min(n, tcp + 60)
            guard optionsEnd > tcp + 20 else { break }
            b[tcp + 20 + rng.below(optionsEnd - tcp - 20)] = [0, 1, 2, 3, 4, 5, 8, rng.u8()][rng.below(8)]
        case 12:   // IPv6 extension headers: their next header or length bytes
            if let o = s.extensionOffsets.isEmpty ? nil : s.extensionOffsets[rng.below(s.extensionOffsets.count)], o + 4 <= n {
                switch rng.below(3) {
                case 0: b[o] = [0, 6, 43, 44, 51, 59, 60, rng.u8()][rng.below(8)]
                case 1: b[o + 1] = [0, 1, 255, rng.u8()][rng.below(4)]
                default: b[o + 2] = rng.u8(); b[o + 3] = rng.u8()   // fragment offset and flags
                }
            } else if isV4, n >= 8 {
                b[6] = rng.u8()   // flags and fragment offset
            }
        default:   // IPv4 protocol or version nibble
            if isV4, n > 9, rng.bool() { b[9] = rng.bool() ? 6 : rng.u8() } else { b[0] = UInt8(rng.below(16)) << 4 | (b[0] & 0x0f) }
        }
        return n
    }

    // MARK: Exercising a parse

    static func run(_ buf: UnsafeMutableRawBufferPointer, _ rebuildBuffer: UnsafeMutableRawBufferPointer,
                    _ rng: inout SplitMix64, _ counts: inout Counts, seed: UInt64, index: Int) {
        switch TCPPacket.parse(buf) {
        case .notTCP:
            counts.notTCP += 1
            if let m = ICMPTooBig(buf) {
                counts.sink &+= UInt64(m.innerSourcePort) &+ UInt64(m.innerDestinationPort) &+ UInt64(m.mtu)
                    &+ UInt64(m.innerSource.low) &+ UInt64(m.innerDestination.high)
                m.innerSequenceNumber = m.innerSequenceNumber + SeqDelta(rawValue: UInt32(truncatingIfNeeded: rng.next()))
            }
        case .fragment: counts.fragment += 1
        case .malformed: counts.malformed += 1
        case .tcp(let p):
            counts.tcp += 1
            exercise(p, rebuildBuffer, &rng, &counts, seed: seed, index: index)
            // Last: it may cut the packet (a SYN's data).
            if let n = p.removingFastOpen(partial: p.checksumIsPartial) { counts.sink &+= UInt64(n) }
        }
    }

    static func fail(_ counts: inout Counts, _ what: String, _ p: TCPPacket, seed: UInt64, index: Int) {
        counts.failures += 1
        if counts.firstFailure == nil {
            let hex = p.bytes.prefix(128).map { String($0, radix: 16) }.joined(separator: " ")
            counts.firstFailure = "seed \(seed) packet #\(index): \(what); bytes: \(hex)"
        }
    }

    static func exercise(_ p: TCPPacket, _ rebuildBuffer: UnsafeMutableRawBufferPointer,
                         _ rng: inout SplitMix64, _ counts: inout Counts, seed: UInt64, index: Int) {
        var x: UInt64 = 0
        @inline(__always) func mix(_ v: some BinaryInteger) { x = (x &* 31) &+ UInt64(truncatingIfNeeded: v) }

        // Every accessor of the network header.
        var ipHeaderValidBefore = true
        switch p.ip {
        case .v4(let h):
            mix(h.headerLength); mix(h.totalLength); mix(h.tos); mix(h.identification)
            mix(h.dontFragment ? 1 : 0); mix(h.moreFragments ? 1 : 0); mix(h.fragmentOffset); mix(h.isFragment ? 1 : 0)
            mix(h.ttl); mix(h.protocolNumber); mix(h.checksum); mix(h.sourceValue); mix(h.destinationValue)
            mix(h.payload.count); mix(h.source.low)
            ipHeaderValidBefore = h.checksumIsValid
        case .v6(let h):
            mix(h.totalLength); mix(h.payloadLength); mix(h.trafficClass); mix(h.flowLabel); mix(h.hopLimit)
            mix(h.nextHeader); mix(h.source.high); mix(h.destination.low); mix(h.upperLayerOffset)
            mix(h.upperLayerProtocol); mix(h.upperLayer.count)
        }
        mix(p.source.low); mix(p.destination.high); mix(p.isIPv6 ? 1 : 0); mix(p.segmentLength); mix(p.bytes.count)

        // Every accessor of the TCP header, every option and its value.
        let t = p.tcp
        mix(t.sourcePort); mix(t.destinationPort); mix(t.sequenceNumber.rawValue); mix(t.acknowledgmentNumber.rawValue)
        mix(t.headerLength); mix(t.nonceSum ? 1 : 0); mix(t.flags.rawValue); mix(t.window); mix(t.checksum)
        mix(t.urgentPointer); mix(t.optionBytes.count); mix(t.payload.count); mix(t.payloadLength); mix(t.sequenceLength)
        let opts = t.options
        var it = opts.makeIterator()
        var optionCount = 0
        var pick: TCPOption?
        while let o = it.next() {
            optionCount += 1
            if rng.oneIn(optionCount) { pick = o }
            mix(o.kind); mix(o.offset); mix(o.length)
            switch opts.value(of: o) {
            case .maximumSegmentSize(let m): mix(m)
            case .windowScale(let w): mix(w)
            case .timestamps(let v, let e): mix(v); mix(e)
            case .sack(let c):
                for i in 0..<c {
                    let (l, r) = opts.sackBlock(o, i)
                    mix(l.rawValue); mix(r.rawValue)
                }
            case .unknown(let k, let l): mix(k); mix(l)
            case .endOfList, .noOperation, .sackPermitted: mix(1)
            }
        }
        mix(it.malformed ? 1 : 0)
        let summary = opts.summary
        if summary.malformed != it.malformed { fail(&counts, "summary.malformed disagrees with the iterator", p, seed: seed, index: index) }
        mix(summary.maximumSegmentSize ?? 0); mix(summary.windowScale ?? 0); mix(summary.sackBlocks)
        mix(summary.timestamps?.value ?? 0)

        // Checksums, then every in-place rewrite; a valid checksum must stay valid. Mutations
        // break most checksums, so half the packets get theirs made valid first.
        if rng.bool() {
            if case .v4(let h) = p.ip { h.fillChecksum(); ipHeaderValidBefore = true }
            p.fillChecksum()
        }
        let validBefore = p.checksumIsValid
        if validBefore { counts.validBefore += 1 }
        mix(p.checksumIsPartial ? 1 : 0)
        t.updateSequenceNumber(SeqNumber(rng.u32()))
        t.updateAcknowledgmentNumber(SeqNumber(rng.u32()))
        t.updateWindow(rng.u16())
        t.updateSourcePort(rng.u16())
        t.updateDestinationPort(rng.u16())
        t.updateFlags(TCPFlags(rawValue: rng.u8()))
        if let o = opts.first(kind: TCPOptionKind.maximumSegmentSize) { t.updateMaximumSegmentSize(o, to: rng.u16()) }
        if let o = opts.first(kind: TCPOptionKind.windowScale) { t.updateWindowScale(o, to: rng.u8()) }
        if let o = opts.first(kind: TCPOptionKind.timestamps) { t.updateTimestamps(o, value: rng.u32(), echo: rng.u32()) }
        if let o = opts.first(kind: TCPOptionKind.sack) { t.shiftSACKBlocks(o, by: Int32(truncatingIfNeeded: rng.next())) }
        if let o = pick { t.replaceWithNOPs(o) }
        if p.isIPv6 {
            p.updateSource(IPAddress(high: rng.next() | 1, low: rng.next()))
            p.updateDestination(IPAddress(high: rng.next() | 1, low: rng.next()))
        } else {
            p.updateSource(IPAddress(ipv4: rng.u32()))
            p.updateDestination(IPAddress(ipv4: rng.u32()))
            if case .v4(let h) = p.ip {
                h.updateTTL(rng.u8())
                if ipHeaderValidBefore && !h.checksumIsValid {
                    fail(&counts, "IPv4 header checksum broken by incremental updates", p, seed: seed, index: index)
                }
            }
        }
        if validBefore && !p.checksumIsValid {
            fail(&counts, "TCP checksum broken by incremental updates", p, seed: seed, index: index)
        }
        p.fillPartialChecksum()
        if !p.checksumIsPartial { fail(&counts, "fillPartialChecksum", p, seed: seed, index: index) }
        p.fillChecksum()
        if !p.checksumIsValid { fail(&counts, "fillChecksum", p, seed: seed, index: index) }

        // A SYN option rebuild of whatever parsed must itself parse, with valid checksums.
        if rng.oneIn(4) {
            let syn = SynOptions(maximumSegmentSize: rng.bool() ? rng.u16() : nil, windowScale: rng.bool() ? rng.u8() : nil,
                                 sackPermitted: rng.bool(), timestamps: rng.bool() ? TCPTimestamps(value: rng.u32(), echo: 0) : nil)
            if let n = p.rebuildingSynOptions(syn, into: rebuildBuffer) {
                counts.rebuilt += 1
                if case .tcp(let r) = TCPPacket.parse(rebuildBuffer.slice(0, n)) {
                    if !r.checksumIsValid { fail(&counts, "rebuilt SYN checksum", p, seed: seed, index: index) }
                    if case .v4(let h) = r.ip, !h.checksumIsValid { fail(&counts, "rebuilt SYN IPv4 checksum", p, seed: seed, index: index) }
                    if SynOptions(r.tcp.options.summary) != syn { fail(&counts, "rebuilt SYN options", p, seed: seed, index: index) }
                } else {
                    fail(&counts, "rebuilt SYN does not parse", p, seed: seed, index: index)
                }
            }
        }
        counts.sink &+= x
    }
}
