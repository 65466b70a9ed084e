import Testing
@testable import SpliceWire
import TestSupport

/// Property: over random packets and random sequences of in-place edits, every incrementally
/// updated checksum equals a full recomputation. `SPLICE_TEST_SEED` replays a failing seed;
/// `SPLICE_PROPERTY_CASES` sets the number of packets.
@Suite("Checksum property: incremental updates equal full recomputation")
struct ChecksumPropertyTests {
    enum Edit: CaseIterable {
        case sequence, acknowledgment, window, sourcePort, destinationPort, flags
        case mss, windowScale, timestamps, sackShift, replaceWithNOPs
        case sourceAddress, destinationAddress, ttl
    }

    /// One random edit of `p`; false if the packet has nothing it applies to.
    static func apply(_ edit: Edit, to p: TCPPacket, _ rng: inout SplitMix64) -> Bool {
        let t = p.tcp
        let opts = t.options
        switch edit {
        case .sequence: t.updateSequenceNumber(SeqNumber(rng.u32()))
        case .acknowledgment: t.updateAcknowledgmentNumber(t.acknowledgmentNumber.advanced(by: Int32(truncatingIfNeeded: rng.next())))
        case .window: t.updateWindow(rng.oneIn(5) ? [0, 0xffff][rng.below(2)] : rng.u16())
        case .sourcePort: t.updateSourcePort(rng.u16())
        case .destinationPort: t.updateDestinationPort(rng.u16())
        case .flags: t.updateFlags(TCPFlags(rawValue: rng.u8()))
        case .mss:
            guard let o = opts.first(kind: TCPOptionKind.maximumSegmentSize) else { return false }
            t.updateMaximumSegmentSize(o, to: rng.u16())
        case .windowScale:
            guard let o = opts.first(kind: TCPOptionKind.windowScale) else { return false }
            t.updateWindowScale(o, to: rng.u8())
        case .timestamps:
            guard let o = opts.first(kind: TCPOptionKind.timestamps) else { return false }
            t.updateTimestamps(o, value: rng.u32(), echo: rng.oneIn(4) ? 0 : rng.u32())
        case .sackShift:
            guard let o = opts.first(kind: TCPOptionKind.sack) else { return false }
            t.shiftSACKBlocks(o, by: Int32(truncatingIfNeeded: rng.next()))
        case .replaceWithNOPs:
            let all = Array(opts)
            guard !all.isEmpty else { return false }
            t.replaceWithNOPs(all[rng.below(all.count)])
        case .sourceAddress: p.updateSource(Fixtures.randomAddress(&rng, v6: p.isIPv6))
        case .destinationAddress: p.updateDestination(Fixtures.randomAddress(&rng, v6: p.isIPv6))
        case .ttl:
            guard case .v4(let h) = p.ip else { return false }
            h.updateTTL(rng.u8())
        }
        return true
    }

    /// A random packet as bytes, and the offset of its TCP header.
    static func randomPacket(_ rng: inout SplitMix64, largePayloads: Bool) -> (bytes: [UInt8], tcpOffset: Int) {
        let spec = Fixtures.randomSpec(&rng, largePayloads: largePayloads)
        var bytes = spec.bytes()
        var tcpOffset = spec.ipHeaderLength
        if spec.isIPv6, rng.oneIn(3) {
            let chain = Fixtures.randomExtensionChain(&rng)
            bytes = Fixtures.withExtensionHeaders(bytes, chain)
            tcpOffset += chain.map { $0.encode(next: 0).count }.reduce(0, +)
        }
        return (bytes, tcpOffset)
    }

    @Test("complete checksum: random packets, random edit sequences (TCP and IPv4 header checksums)")
    func completeChecksum() {
        let seed = testSeed(default: 0x9e0_0001)
        let cases = environmentCount("SPLICE_PROPERTY_CASES", default: 5_000)
        var rng = SplitMix64(seed: seed)
        var failures: [String] = []
        var editsApplied = 0
        for c in 0..<cases where failures.count < 5 {
            var (bytes, tcpOffset) = Self.randomPacket(&rng, largePayloads: c % 25 == 0)
            let editCount = 1 + rng.below(24)
            bytes.withUnsafeMutableBytes { buf in
                guard let p = TCPPacket(buf), p.checksumIsValid else {
                    failures.append("seed \(seed) case \(c): the emitted packet does not parse or verify")
                    return
                }
                for e in 0..<editCount {
                    let edit = Edit.allCases[rng.below(Edit.allCases.count)]
                    guard Self.apply(edit, to: p, &rng) else { continue }
                    editsApplied += 1
                    let full = p.tcp.computeChecksum(pseudoHeader: p.pseudoHeaderSum)
                    var ipValid = true
                    if case .v4(let h) = p.ip { ipValid = h.checksumIsValid }
                    if !p.checksumIsValid || p.tcp.checksum != full || !ipValid {
                        failures.append("seed \(seed) case \(c) edit #\(e) \(edit): field \(p.tcp.checksum), full \(full), "
                                        + "TCP valid \(p.checksumIsValid), IPv4 header valid \(ipValid)")
                        return
                    }
                }
            }
            // Against the independent reference as well, once per packet.
            let field = UInt16(bytes[tcpOffset + 16]) << 8 | UInt16(bytes[tcpOffset + 17])
            if failures.isEmpty, Fixtures.referenceTCPChecksum(bytes, tcpOffset: tcpOffset) != field {
                failures.append("seed \(seed) case \(c): field \(field) differs from the reference checksum")
            }
            if failures.isEmpty, bytes[0] >> 4 == 4, !Fixtures.ipv4HeaderChecksumIsValid(bytes) {
                failures.append("seed \(seed) case \(c): IPv4 header checksum differs from the reference")
            }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n")) (replay with SPLICE_TEST_SEED=\(seed))")
        #expect(editsApplied > cases * 5, "seed \(seed): too few edits applied (\(editsApplied))")
    }

    @Test("partial checksum: address rewrites with partial: true keep the field the pseudo-header sum")
    func partialChecksum() {
        let seed = testSeed(default: 0x9e0_0002)
        let cases = environmentCount("SPLICE_PROPERTY_CASES", default: 5_000)
        var rng = SplitMix64(seed: seed)
        var failures: [String] = []
        for c in 0..<cases where failures.count < 5 {
            var (bytes, tcpOffset) = Self.randomPacket(&rng, largePayloads: false)
            let editCount = 1 + rng.below(8)
            bytes.withUnsafeMutableBytes { buf in
                guard let p = TCPPacket(buf) else {
                    failures.append("seed \(seed) case \(c): the emitted packet does not parse")
                    return
                }
                p.fillPartialChecksum()
                for e in 0..<editCount {
                    let destination = rng.bool()
                    let address = Fixtures.randomAddress(&rng, v6: p.isIPv6)
                    if destination { p.updateDestination(address, partial: true) } else { p.updateSource(address, partial: true) }
                    var ipValid = true
                    if case .v4(let h) = p.ip { ipValid = h.checksumIsValid }
                    let expected = p.pseudoHeaderSum.folded
                    if p.tcp.checksum != expected || !p.checksumIsPartial || !ipValid {
                        failures.append("seed \(seed) case \(c) edit #\(e) \(destination ? "destination" : "source"): "
                                        + "field \(p.tcp.checksum), pseudo-header sum \(expected), IPv4 header valid \(ipValid)")
                        return
                    }
                }
            }
            let field = UInt16(bytes[tcpOffset + 16]) << 8 | UInt16(bytes[tcpOffset + 17])
            if failures.isEmpty, Fixtures.referencePseudoHeaderSum(bytes, tcpOffset: tcpOffset) != field {
                failures.append("seed \(seed) case \(c): field \(field) differs from the reference pseudo-header sum")
            }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n")) (replay with SPLICE_TEST_SEED=\(seed))")
    }

    @Test("a partial field, completed after the rewrites, equals a complete field rewritten incrementally")
    func partialThenComplete() throws {
        let seed = testSeed(default: 0x9e0_0003)
        var rng = SplitMix64(seed: seed)
        for c in 0..<500 {
            let (original, _) = Self.randomPacket(&rng, largePayloads: false)
            var complete = original
            var partial = original
            let v6 = original[0] >> 4 == 6
            let source = Fixtures.randomAddress(&rng, v6: v6)
            let destination = Fixtures.randomAddress(&rng, v6: v6)
            try withPacket(&complete) { p in
                p.updateSource(source)
                p.updateDestination(destination)
            }
            try withPacket(&partial) { p in
                p.fillPartialChecksum()
                p.updateSource(source, partial: true)
                p.updateDestination(destination, partial: true)
                p.fillChecksum()
            }
            #expect(complete == partial, "seed \(seed) case \(c)")
        }
    }
}
