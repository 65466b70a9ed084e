import Testing
@testable import SpliceWire
import TestSupport

/// Rewriting options in place: MSS, window scale, timestamps, SACK shift, replace by NOPs, at
/// even and odd offsets, v4 and v6; each must leave a complete checksum exactly right.
@Suite("TCPOptions: in-place rewrites")
struct TCPOptionRewriteTests {
    /// A packet with `options`, checked before and after `edit`: the TCP checksum must equal the
    /// reference computed from the bytes, the IPv4 header checksum must be valid, and only the
    /// option bytes and the checksum may change.
    func rewrite(_ options: [UInt8], v6: Bool, payload: [UInt8] = [1, 2, 3, 4, 5],
                 _ edit: (TCPPacket) throws -> Void) throws -> [UInt8] {
        var spec = Fixtures.dataSpec(v6: v6, payload: payload)
        spec.options = options
        var bytes = spec.bytes()
        let before = bytes
        let tcpOffset = v6 ? 40 : 20
        try withPacket(&bytes) { p in
            try edit(p)
            #expect(p.checksumIsValid)
        }
        #expect(Fixtures.referenceTCPChecksum(bytes, tcpOffset: tcpOffset)
                == UInt16(bytes[tcpOffset + 16]) << 8 | UInt16(bytes[tcpOffset + 17]))
        if !v6 { #expect(Fixtures.ipv4HeaderChecksumIsValid(bytes)) }
        let optionRange = (tcpOffset + 20)..<(tcpOffset + 20 + spec.paddedOptionsLength)
        for i in bytes.indices where !optionRange.contains(i) && i != tcpOffset + 16 && i != tcpOffset + 17 {
            #expect(bytes[i] == before[i], "byte \(i) outside the options changed")
        }
        return Array(bytes[optionRange])
    }

    @Test("MSS at an even and an odd offset", arguments: [false, true], [0, 1])
    func mss(v6: Bool, pad: Int) throws {
        let block = [UInt8](repeating: 1, count: pad) + [2, 4, 0x05, 0xb4]
        let out = try rewrite(block, v6: v6) { p in
            let opts = p.tcp.options
            let mss = try #require(opts.first(kind: TCPOptionKind.maximumSegmentSize))
            p.tcp.updateMaximumSegmentSize(mss, to: 1220)
            #expect(opts.value(of: mss) == .maximumSegmentSize(1220))
        }
        #expect(Array(out[pad..<(pad + 4)]) == [2, 4, 0x04, 0xc4])
    }

    @Test("window scale at an even and an odd offset", arguments: [false, true], [0, 1])
    func windowScale(v6: Bool, pad: Int) throws {
        let block = [UInt8](repeating: 1, count: pad) + [3, 3, 7]
        let out = try rewrite(block, v6: v6) { p in
            let ws = try #require(p.tcp.options.first(kind: TCPOptionKind.windowScale))
            p.tcp.updateWindowScale(ws, to: 14)
            #expect(p.tcp.options.value(of: ws) == .windowScale(14))
        }
        #expect(Array(out[pad..<(pad + 3)]) == [3, 3, 14])
    }

    @Test("timestamps at every alignment", arguments: [false, true], [0, 1, 2, 3])
    func timestamps(v6: Bool, pad: Int) throws {
        let block = [UInt8](repeating: 1, count: pad) + [8, 10, 0, 0, 0, 1, 0, 0, 0, 2]
        let out = try rewrite(block, v6: v6) { p in
            let ts = try #require(p.tcp.options.first(kind: TCPOptionKind.timestamps))
            p.tcp.updateTimestamps(ts, value: 0xffff_ffff, echo: 0)
            #expect(p.tcp.options.value(of: ts) == .timestamps(value: 0xffff_ffff, echo: 0))
            #expect(p.tcp.options.summary.timestamps == TCPTimestamps(value: 0xffff_ffff, echo: 0))
        }
        #expect(Array(out[pad..<(pad + 10)]) == [8, 10, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])
    }

    @Test("SACK shift moves both edges of 1 to 4 blocks, across the wrap", arguments: [1, 2, 3, 4], [Int32(1000), -1000, Int32.max, Int32.min])
    func sackShift(blocks: Int, delta: Int32) throws {
        var rng = SplitMix64(seed: UInt64(blocks) << 32 | UInt64(UInt32(bitPattern: delta)))
        let edges = (0..<(2 * blocks)).map { i in i == 0 ? UInt32(0xffff_fff0) : rng.u32() }
        let block: [UInt8] = [1, 1, 5, UInt8(2 + 8 * blocks)] + edges.flatMap { e in
            [UInt8(e >> 24), UInt8((e >> 16) & 0xff), UInt8((e >> 8) & 0xff), UInt8(e & 0xff)]
        }
        for v6 in [false, true] {
            _ = try rewrite(block, v6: v6) { p in
                let opts = p.tcp.options
                let sack = try #require(opts.first(kind: TCPOptionKind.sack))
                p.tcp.shiftSACKBlocks(sack, by: delta)
                for b in 0..<blocks {
                    let (left, right) = opts.sackBlock(sack, b)
                    #expect(left == SeqNumber(edges[2 * b]).advanced(by: delta))
                    #expect(right == SeqNumber(edges[2 * b + 1]).advanced(by: delta))
                }
            }
        }
    }

    @Test("a SACK option at an odd offset shifts right too")
    func sackShiftOdd() throws {
        _ = try rewrite([1, 5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4], v6: false, payload: [9, 9, 9]) { p in
            let sack = try #require(p.tcp.options.first(kind: TCPOptionKind.sack))
            p.tcp.shiftSACKBlocks(sack, by: -2)
            #expect(p.tcp.options.sackBlock(sack, 1) == (SeqNumber(1), SeqNumber(2)))
        }
    }

    @Test("replace by NOPs: every kind, the block keeps its size, the rest is untouched", arguments: [
        [2, 4, 0x05, 0xb4] as [UInt8], [3, 3, 7], [4, 2], [8, 10, 1, 2, 3, 4, 5, 6, 7, 8],
        [5, 10, 1, 2, 3, 4, 5, 6, 7, 8], [5, 34] + [UInt8](repeating: 9, count: 32), [99, 5, 1, 2, 3], [1], [0],
    ])
    func replaceWithNOPs(option: [UInt8]) throws {
        for v6 in [false, true] {
            for pad in 0..<2 where pad + option.count <= 40 {
                let block = [UInt8](repeating: 1, count: pad) + option
                let out = try rewrite(block, v6: v6) { p in
                    var it = p.tcp.options.makeIterator()
                    var target: TCPOption?
                    while let o = it.next() { if o.offset == pad { target = o } }
                    p.tcp.replaceWithNOPs(try #require(target))
                }
                #expect(Array(out[0..<(pad + option.count)]) == [UInt8](repeating: 1, count: pad + option.count))
            }
        }
    }

    @Test("removing a SYN's options one by one with NOPs leaves an all-NOP block")
    func nopOutSyn() throws {
        var bytes = Fixtures.synSpec(v6: true).bytes()
        try withPacket(&bytes) { p in
            for o in Array(p.tcp.options) where o.kind != TCPOptionKind.noOperation {
                p.tcp.replaceWithNOPs(o)
                #expect(p.checksumIsValid)
            }
            #expect(p.tcp.options.summary == TCPOptionSummary())
            #expect(p.tcp.optionBytes.allSatisfy { $0 == 1 })
        }
    }

    @Test("rewrites of a 64 KiB segment with an odd length keep the checksum")
    func largeOdd() throws {
        var rng = SplitMix64(seed: 0x0b7_0001)
        _ = try rewrite([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 10, 0, 0, 0, 5, 0, 0, 0, 9], v6: false,
                        payload: rng.bytes(65_535 - 20 - 20 - 24)) { p in
            #expect(p.bytes.count == 65_535)
            let o = p.tcp.options
            p.tcp.updateTimestamps(try #require(o.first(kind: 8)), value: 77, echo: 88)
            p.tcp.shiftSACKBlocks(try #require(o.first(kind: 5)), by: 1_000_000)
        }
    }
}
