import Testing
@testable import SpliceWire

@Suite("IPv6Header")
struct IPv6HeaderTests {
    typealias Ext = Fixtures.ExtensionHeader

    static var plain: [UInt8] { Fixtures.dataSpec(v6: true).bytes() }

    @Test("fixed header fields read from their places and the settable ones write back")
    func fields() throws {
        var bytes = Self.plain
        // Version 6, traffic class 0xb8, flow label 0x12345.
        bytes[0] = 0x6b
        bytes[1] = 0x81
        bytes[2] = 0x23
        bytes[3] = 0x45
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv6Header(buf))
            #expect(h.trafficClass == 0xb8)
            #expect(h.flowLabel == 0x12345)
            #expect(h.payloadLength == 20 + 12 + 12)
            #expect(h.totalLength == 40 + 44)
            #expect(h.nextHeader == 6)
            #expect(h.hopLimit == 64)
            #expect(h.source == Fixtures.clientV6)
            #expect(h.destination == Fixtures.serverV6)
            #expect(h.upperLayerOffset == 40)
            #expect(h.upperLayerProtocol == 6)
            #expect(!h.isFragment)
            #expect(h.upperLayer.count == 44)

            h.hopLimit = 1
            let src = try #require(IPAddress("fd00::1:2:3:4"))
            let dst = try #require(IPAddress("fd00:ffff::abcd"))
            h.source = src
            h.destination = dst
            #expect(h.hopLimit == 1)
            #expect(h.source == src)
            #expect(h.destination == dst)
            // The traffic class, across its two bytes; the version and flow label kept.
            h.setTrafficClass(0x2d)
            #expect(h.trafficClass == 0x2d)
            #expect(h.flowLabel == 0x12345)
            #expect(h.bytes.u8(0) >> 4 == 6)
            h.setTrafficClass(0xb8)
        }
        #expect(bytes[7] == 1)
        #expect(Array(bytes[8..<24]) == [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 3, 0, 4])
        #expect(Array(bytes[24..<40]) == [0xfd, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd])
        #expect(bytes[0..<4] == [0x6b, 0x81, 0x23, 0x45])
    }

    @Test("pseudo-header sum: addresses, 32-bit length, next header")
    func pseudoHeader() throws {
        var bytes = Self.plain
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv6Header(buf))
            #expect(h.pseudoHeaderSum(length: 44, protocolNumber: 6).folded
                    == Fixtures.referencePseudoHeaderSum(Array(buf), tcpOffset: 40))
        }
    }

    @Test("each extension header alone is walked to the TCP header", arguments: [
        Ext.hopByHop(units: 0), .hopByHop(units: 2), .destinationOptions(units: 0), .destinationOptions(units: 5),
        .routing(units: 0), .routing(units: 2), .fragment(offset: 0, more: false),
        .authentication(icvWords: 1), .authentication(icvWords: 3),
    ])
    func single(ext: Ext) throws {
        var bytes = Fixtures.withExtensionHeaders(Self.plain, [ext])
        let extLength = ext.encode(next: 6).count
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv6Header(buf))
            #expect(h.upperLayerOffset == 40 + extLength)
            #expect(h.upperLayerProtocol == 6)
            #expect(!h.isFragment)
            let p = try #require(TCPPacket(buf))
            #expect(p.tcp.sourcePort == 40000)
            #expect(p.checksumIsValid)
            #expect(p.tcp.payload.count == 12)
        }
    }

    @Test("a chain of every kind is walked, and the TCP checksum is still right")
    func chain() throws {
        let chain: [Ext] = [.hopByHop(units: 1), .destinationOptions(units: 0), .routing(units: 2),
                            .fragment(offset: 0, more: false), .authentication(icvWords: 3), .destinationOptions(units: 1)]
        var bytes = Fixtures.withExtensionHeaders(Self.plain, chain)
        let extLength = chain.map { $0.encode(next: 0).count }.reduce(0, +)
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv6Header(buf))
            #expect(h.upperLayerOffset == 40 + extLength)
            #expect(h.upperLayerProtocol == 6)
            let p = try #require(TCPPacket(buf))
            #expect(p.checksumIsValid)
            #expect(p.tcp.checksum == Fixtures.referenceTCPChecksum(Array(buf), tcpOffset: 40 + extLength))
        }
    }

    @Test("at most maximumExtensionHeaders are followed")
    func tooMany() throws {
        let limit = IPv6Header.maximumExtensionHeaders
        var atLimit = Fixtures.withExtensionHeaders(Self.plain, Array(repeating: .destinationOptions(units: 0), count: limit))
        atLimit.withUnsafeMutableBytes { buf in
            #expect(IPv6Header(buf) != nil)
        }
        var over = Fixtures.withExtensionHeaders(Self.plain, Array(repeating: .destinationOptions(units: 0), count: limit + 1))
        over.withUnsafeMutableBytes { buf in
            #expect(IPv6Header(buf) == nil)
            guard case .malformed = TCPPacket.parse(buf) else {
                Issue.record("too many extension headers should be malformed")
                return
            }
        }
    }

    @Test("fragments, first and not first, are fragments", arguments: [
        (0, true), (1480, false), (1480, true), (65528, false),
    ] as [(Int, Bool)])
    func fragments(offset: Int, more: Bool) throws {
        var bytes = Fixtures.withExtensionHeaders(Self.plain, [.fragment(offset: offset, more: more)])
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv6Header(buf))
            #expect(h.isFragment)
            guard case .fragment = TCPPacket.parse(buf) else {
                Issue.record("expected .fragment")
                return
            }
        }
    }

    @Test("a non-first fragment is a fragment whatever its data looks like")
    func nonFirstFragmentData() throws {
        // The fragment header says a routing header follows, but what follows is the middle
        // of the original payload: here bytes that would be a routing header running far past
        // the end. They must not be walked.
        var bytes = Array(Self.plain[0..<40])
        bytes[6] = IPv6Header.NextHeader.fragment
        bytes += Ext.fragment(offset: 1232, more: true).encode(next: IPv6Header.NextHeader.routing)
        bytes += [6, 255, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        bytes[4] = 0
        bytes[5] = UInt8(bytes.count - 40)
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv6Header(buf))
            #expect(h.isFragment)
            #expect(h.upperLayerOffset == 48)
            #expect(h.upperLayerProtocol == IPv6Header.NextHeader.routing)
            guard case .fragment = TCPPacket.parse(buf) else {
                Issue.record("expected .fragment")
                return
            }
        }
    }

    @Test("a first fragment whose chain continues is still walked")
    func firstFragmentChain() throws {
        var bytes = Fixtures.withExtensionHeaders(Self.plain, [.fragment(offset: 0, more: true), .destinationOptions(units: 1)])
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv6Header(buf))
            #expect(h.isFragment)
            #expect(h.upperLayerOffset == 40 + 8 + 16)
            #expect(h.upperLayerProtocol == 6)
        }
    }

    @Test("truncated or overlong extension headers are refused", arguments: [
        Ext.hopByHop(units: 1), .destinationOptions(units: 3), .routing(units: 1),
        .authentication(icvWords: 2), .fragment(offset: 0, more: false),
    ])
    func truncated(ext: Ext) throws {
        let whole = Fixtures.withExtensionHeaders(Self.plain, [ext])
        let extLength = ext.encode(next: 6).count
        // Cut inside the extension header (the payload length says so too).
        for cut in 40..<(40 + extLength) {
            var bytes = Array(whole[0..<cut])
            let payload = cut - 40
            bytes[4] = UInt8(payload >> 8)
            bytes[5] = UInt8(payload & 0xff)
            bytes.withUnsafeMutableBytes { buf in
                #expect(IPv6Header(buf) == nil, "cut at \(cut)")
                if case .tcp = TCPPacket.parse(buf) { Issue.record("cut at \(cut) parsed as TCP") }
            }
        }
        // A length field claiming more than the packet holds.
        var bytes = whole
        switch ext {
        case .fragment: return
        default: bytes[41] = 255
        }
        bytes.withUnsafeMutableBytes { buf in
            #expect(IPv6Header(buf) == nil)
        }
    }

    @Test("non-TCP upper layers are notTCP", arguments: [
        IPv6Header.NextHeader.udp, IPv6Header.NextHeader.icmpv6, IPv6Header.NextHeader.esp,
        IPv6Header.NextHeader.noNextHeader, 255,
    ])
    func notTCP(next: UInt8) throws {
        var bytes = Self.plain
        bytes[6] = next
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv6Header(buf))
            #expect(h.upperLayerProtocol == next)
            guard case .notTCP = TCPPacket.parse(buf) else {
                Issue.record("expected .notTCP")
                return
            }
        }
    }

    @Test("payload length: zero (jumbogram) and past the buffer are refused; padding is cut off")
    func payloadLength() throws {
        var jumbo = Self.plain
        jumbo[4] = 0
        jumbo[5] = 0
        jumbo.withUnsafeMutableBytes { buf in #expect(IPv6Header(buf) == nil) }

        var long = Self.plain
        long[5] += 1
        long.withUnsafeMutableBytes { buf in #expect(IPv6Header(buf) == nil) }

        var padded = Self.plain + [1, 2, 3, 4]
        try padded.withUnsafeMutableBytes { buf in
            let h = try #require(IPv6Header(buf))
            #expect(h.totalLength == 84)
            #expect(try #require(TCPPacket(buf)).checksumIsValid)
        }

        var short = Array(Self.plain[0..<39])
        short.withUnsafeMutableBytes { buf in #expect(IPv6Header(buf) == nil) }

        var version = Self.plain
        version[0] = 0x40
        version.withUnsafeMutableBytes { buf in #expect(IPv6Header(buf) == nil) }
    }
}
