import Testing
@testable import SpliceWire

@Suite("rebuildingSynOptions")
struct RebuildSynOptionsTests {
    typealias Ext = Fixtures.ExtensionHeader

    /// Rebuilds `original` (a whole packet whose TCP header starts at `tcpOffset`) with
    /// `options` and checks everything that must hold of the copy. Returns the copy.
    @discardableResult
    func rebuild(_ original: [UInt8], tcpOffset: Int, to options: SynOptions,
                 sourceLocation: SourceLocation = #_sourceLocation) throws -> [UInt8] {
        var input = original
        var out = [UInt8](repeating: 0xee, count: original.count + 64)
        let n = try input.withUnsafeMutableBytes { inBuf in
            let p = try #require(TCPPacket(inBuf), sourceLocation: sourceLocation)
            return out.withUnsafeMutableBytes { p.rebuildingSynOptions(options, into: $0) }
        }
        #expect(input == original, "the source packet is not touched", sourceLocation: sourceLocation)
        let length = try #require(n, sourceLocation: sourceLocation)
        #expect(out[length...].allSatisfy { $0 == 0xee }, "nothing written past the packet", sourceLocation: sourceLocation)
        var copy = Array(out[0..<length])
        let oldHeader = Int(original[tcpOffset + 12] >> 4) * 4
        let newHeader = 20 + options.encodedLength
        #expect(length == original.count - oldHeader + newHeader, sourceLocation: sourceLocation)

        try copy.withUnsafeMutableBytes { buf in
            let p = try #require(TCPPacket(buf), sourceLocation: sourceLocation)
            #expect(p.tcp.headerLength == newHeader, sourceLocation: sourceLocation)
            #expect(p.checksumIsValid, sourceLocation: sourceLocation)
            #expect(SynOptions(p.tcp.options.summary) == options, sourceLocation: sourceLocation)
            #expect(!p.tcp.options.summary.malformed, sourceLocation: sourceLocation)
            if case .v4(let h) = p.ip {
                #expect(h.checksumIsValid, sourceLocation: sourceLocation)
                #expect(h.totalLength == length, sourceLocation: sourceLocation)
            }
        }
        // Byte for byte: the IP header (lengths and checksum aside), the fixed TCP header
        // (data offset and checksum aside) and the payload are the original's.
        #expect(Fixtures.ipTotalLength(copy) == length, sourceLocation: sourceLocation)
        #expect(Fixtures.referenceTCPChecksum(copy, tcpOffset: tcpOffset)
                == UInt16(copy[tcpOffset + 16]) << 8 | UInt16(copy[tcpOffset + 17]), sourceLocation: sourceLocation)
        let ipSkip: Set<Int> = original[0] >> 4 == 4 ? [2, 3, 10, 11] : [4, 5]
        for i in 0..<tcpOffset where !ipSkip.contains(i) {
            #expect(copy[i] == original[i], "IP byte \(i)", sourceLocation: sourceLocation)
        }
        for i in 0..<20 where ![12, 16, 17].contains(i) {
            #expect(copy[tcpOffset + i] == original[tcpOffset + i], "TCP byte \(i)", sourceLocation: sourceLocation)
        }
        #expect(copy[tcpOffset + 12] & 0x0f == original[tcpOffset + 12] & 0x0f, "reserved bits kept",
                sourceLocation: sourceLocation)
        #expect(copy[(tcpOffset + newHeader)...] == original[(tcpOffset + oldHeader)...], "payload kept",
                sourceLocation: sourceLocation)
        return copy
    }

    @Test("every SYN option set, from a Linux SYN, v4 and v6", arguments: TCPOptionsTests.synCases, [false, true])
    func fromLinuxSyn(options: SynOptions, v6: Bool) throws {
        try rebuild(Fixtures.synSpec(v6: v6).bytes(), tcpOffset: v6 ? 40 : 20, to: options)
    }

    @Test("from a bare SYN to the full set, with SYN data of odd length (TFO)")
    func growWithPayload() throws {
        for v6 in [false, true] {
            var spec = Fixtures.synSpec(v6: v6)
            spec.options = []
            spec.payload = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n!".utf8)
            try rebuild(spec.bytes(), tcpOffset: v6 ? 40 : 20,
                        to: SynOptions(maximumSegmentSize: 1400, windowScale: 10, sackPermitted: true,
                                       timestamps: TCPTimestamps(value: 5, echo: 6)))
        }
    }

    @Test("from a 40-byte block with unknown options down to MSS only")
    func shrink() throws {
        var spec = Fixtures.synSpec()
        spec.options = [2, 4, 0x05, 0xb4, 30, 20] + [UInt8](repeating: 0xab, count: 18) + [34, 2, 1, 1, 8, 10] + [UInt8](repeating: 3, count: 8) + [1, 0]
        #expect(spec.options.count == 40)
        spec.payload = [1, 2, 3]
        try rebuild(spec.bytes(), tcpOffset: 20, to: SynOptions(maximumSegmentSize: 1200))
    }

    @Test("IPv6 extension headers are kept as they are")
    func ipv6Extensions() throws {
        let chain: [Ext] = [.hopByHop(units: 0), .routing(units: 1), .destinationOptions(units: 0)]
        let original = Fixtures.withExtensionHeaders(Fixtures.synSpec(v6: true).bytes(), chain)
        let tcpOffset = 40 + 8 + 16 + 8
        let copy = try rebuild(original, tcpOffset: tcpOffset, to: SynOptions(maximumSegmentSize: 1380, windowScale: 3))
        #expect(copy[40..<tcpOffset] == original[40..<tcpOffset])
    }

    @Test("IPv4 options are kept as they are")
    func ipv4Options() throws {
        var original = Fixtures.synSpec().bytes()
        original.insert(contentsOf: [0x94, 0x04, 0x00, 0x00], at: 20)   // router alert
        original[0] = 0x46
        original[3] += 4
        try original.withUnsafeMutableBytes { buf in
            try #require(IPv4Header(buf)).fillChecksum()
        }
        try rebuild(original, tcpOffset: 24, to: SynOptions(sackPermitted: true))
    }

    @Test("the reserved bits and the nonce bit survive")
    func reservedBits() throws {
        var spec = Fixtures.synSpec()
        spec.options = []
        var original = spec.bytes()
        original[20 + 12] |= 0x0f
        try withPacket(&original) { $0.fillChecksum() }
        try rebuild(original, tcpOffset: 20, to: SynOptions(maximumSegmentSize: 536))
    }

    @Test("an output buffer that is too small gives nil and is not overrun")
    func tooSmall() throws {
        var bytes = Fixtures.synSpec().bytes()
        let options = SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true)
        let needed = 20 + 20 + options.encodedLength
        try bytes.withUnsafeMutableBytes { inBuf in
            let p = try #require(TCPPacket(inBuf))
            var out = [UInt8](repeating: 0xee, count: needed + 8)
            out.withUnsafeMutableBytes { buf in
                #expect(p.rebuildingSynOptions(options, into: buf.slice(0, needed - 1)) == nil)
                #expect(p.rebuildingSynOptions(options, into: buf.slice(0, needed)) == needed)
            }
            #expect(out[needed...].allSatisfy { $0 == 0xee })
        }
    }

    @Test("a result that would not fit the IP length field gives nil, not a trap")
    func tooLong() throws {
        for v6 in [false, true] {
            var spec = Fixtures.synSpec(v6: v6)
            spec.options = []
            spec.payload = [UInt8](repeating: 7, count: v6 ? 65_535 - 20 : 65_535 - 40)
            var bytes = spec.bytes()
            try bytes.withUnsafeMutableBytes { inBuf in
                let p = try #require(TCPPacket(inBuf))
                var out = [UInt8](repeating: 0, count: 70_000)
                out.withUnsafeMutableBytes { buf in
                    #expect(p.rebuildingSynOptions(SynOptions(maximumSegmentSize: 1460), into: buf) == nil)
                    #expect(p.rebuildingSynOptions(SynOptions(), into: buf) != nil)
                }
            }
        }
    }
}
