import Testing
@testable import SpliceWire

@Suite("TCPPacket")
struct TCPPacketTests {
    enum Kind: Equatable { case tcp, notTCP, fragment, malformed }

    func kind(_ bytes: [UInt8]) -> Kind {
        var b = bytes
        return b.withUnsafeMutableBytes { buf in
            switch TCPPacket.parse(buf) {
            case .tcp: .tcp
            case .notTCP: .notTCP
            case .fragment: .fragment
            case .malformed: .malformed
            }
        }
    }

    @Test("a v4 and a v6 packet parse, with their addresses and lengths", arguments: [false, true])
    func parse(v6: Bool) throws {
        var bytes = Fixtures.dataSpec(v6: v6).bytes()
        try withPacket(&bytes) { p in
            #expect(p.isIPv6 == v6)
            #expect(p.source == (v6 ? Fixtures.clientV6 : Fixtures.clientV4))
            #expect(p.destination == (v6 ? Fixtures.serverV6 : Fixtures.serverV4))
            #expect(p.segmentLength == 20 + 12 + 12)
            #expect(p.bytes.count == (v6 ? 40 : 20) + 44)
            #expect(p.checksumIsValid)
            #expect(!p.checksumIsPartial)
            #expect(Array(p.tcp.payload) == Array("hello, world".utf8))
        }
    }

    @Test("parse says why a buffer is not a TCP packet")
    func parseResults() {
        let v4 = Fixtures.dataSpec().bytes()
        #expect(kind(v4) == .tcp)
        #expect(kind([]) == .malformed)
        #expect(kind([0x45]) == .malformed)
        var v5 = v4
        v5[0] = 0x55
        #expect(kind(v5) == .malformed)
        var udp = v4
        udp[9] = 17
        #expect(kind(udp) == .notTCP)
        var moreFragments = v4
        moreFragments[6] = 0x20
        #expect(kind(moreFragments) == .fragment)
        var laterFragment = v4
        laterFragment[7] = 0x01
        #expect(kind(laterFragment) == .fragment)
        var udpFragment = udp
        udpFragment[6] = 0x20
        #expect(kind(udpFragment) == .notTCP)
        var offsetPastEnd = v4
        offsetPastEnd[20 + 12] = 0xf0
        #expect(kind(offsetPastEnd) == .malformed)
        var offsetTooSmall = v4
        offsetTooSmall[20 + 12] = 0x40
        #expect(kind(offsetTooSmall) == .malformed)
        var shortSegment = v4
        shortSegment[0] = 0x4f   // IHL 60: leaves 4 bytes of segment
        #expect(kind(shortSegment) == .malformed)
        #expect(kind(v4 + [0, 0, 0]) == .tcp)
    }

    @Test("a packet cut short at any length is malformed", arguments: [false, true])
    func truncatedEverywhere(v6: Bool) {
        let whole = Fixtures.dataSpec(v6: v6, payload: [1, 2, 3, 4, 5, 6, 7]).bytes()
        for n in 0..<whole.count {
            #expect(kind(Array(whole[0..<n])) == .malformed, "cut at \(n)")
        }
        #expect(kind(whole) == .tcp)
    }

    @Test("init? is parse's .tcp case")
    func failableInit() {
        var bytes = Fixtures.dataSpec().bytes()
        bytes.withUnsafeMutableBytes { #expect(TCPPacket($0) != nil) }
        bytes[9] = 17
        bytes.withUnsafeMutableBytes { #expect(TCPPacket($0) == nil) }
    }

    @Test("DSCP and ECN are set apart, checksums kept, v4 and v6", arguments: [false, true])
    func dscpAndECN(v6: Bool) throws {
        var bytes = Fixtures.dataSpec(v6: v6).bytes()
        try withPacket(&bytes) { p in
            #expect(p.trafficClass == 0)
            p.updateECN(ECN.ect0)
            p.updateDSCP(46)                          // EF
            #expect(p.dscp == 46 && p.ecn == ECN.ect0)
            #expect(p.trafficClass == 0xba)
            p.updateECN(ECN.notECT)
            #expect(p.dscp == 46 && p.ecn == ECN.notECT)
            p.updateDSCP(0)
            p.updateECN(ECN.ce)
            #expect(p.trafficClass == ECN.ce)
            #expect(p.checksumIsValid)
            if case .v4(let h) = p.ip { #expect(h.checksumIsValid) }
        }
    }

    @Test("address rewrites keep both checksums, v4")
    func rewriteV4() throws {
        var bytes = Fixtures.dataSpec(payload: [1, 2, 3]).bytes()
        let newSource = try #require(IPAddress("203.0.113.7"))
        let newDestination = try #require(IPAddress("10.255.0.1"))
        try withPacket(&bytes) { p in
            p.updateSource(newSource)
            p.updateDestination(newDestination)
            #expect(p.source == newSource)
            #expect(p.destination == newDestination)
            #expect(p.checksumIsValid)
            guard case .v4(let h) = p.ip else { Issue.record("not v4"); return }
            #expect(h.checksumIsValid)
        }
        #expect(Fixtures.ipv4HeaderChecksumIsValid(bytes))
        #expect(Fixtures.referenceTCPChecksum(bytes, tcpOffset: 20) == UInt16(bytes[36]) << 8 | UInt16(bytes[37]))
    }

    @Test("address rewrites keep the checksum, v6")
    func rewriteV6() throws {
        var bytes = Fixtures.dataSpec(v6: true, payload: [1, 2, 3]).bytes()
        let newSource = try #require(IPAddress("fd00::1"))
        let newDestination = try #require(IPAddress("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"))
        try withPacket(&bytes) { p in
            p.updateSource(newSource)
            p.updateDestination(newDestination)
            #expect(p.source == newSource)
            #expect(p.destination == newDestination)
            #expect(p.checksumIsValid)
        }
        #expect(Fixtures.referenceTCPChecksum(bytes, tcpOffset: 40) == UInt16(bytes[56]) << 8 | UInt16(bytes[57]))
    }

    @Test("address rewrites of a partial checksum keep it the pseudo-header sum", arguments: [false, true])
    func rewritePartial(v6: Bool) throws {
        var bytes = Fixtures.dataSpec(v6: v6, payload: [UInt8](repeating: 0x5a, count: 1001)).bytes()
        let source = try #require(IPAddress(v6 ? "fd00::abcd" : "100.64.0.1"))
        let destination = try #require(IPAddress(v6 ? "fd00:1::" : "0.0.0.0"))
        try withPacket(&bytes) { p in
            p.fillPartialChecksum()
            p.updateSource(source, partial: true)
            #expect(p.checksumIsPartial)
            p.updateDestination(destination, partial: true)
            #expect(p.checksumIsPartial)
            if case .v4(let h) = p.ip { #expect(h.checksumIsValid) }
        }
        #expect(UInt16(bytes[(v6 ? 40 : 20) + 16]) << 8 | UInt16(bytes[(v6 ? 40 : 20) + 17])
                == Fixtures.referencePseudoHeaderSum(bytes, tcpOffset: v6 ? 40 : 20))
    }

    @Test("the pseudo-header sum matches the reference, v4 and v6 with extension headers")
    func pseudoHeaderSum() throws {
        var v4 = Fixtures.dataSpec().bytes()
        try withPacket(&v4) { p in
            #expect(p.pseudoHeaderSum.folded == Fixtures.referencePseudoHeaderSum(Array(p.bytes), tcpOffset: 20))
        }
        var v6 = Fixtures.withExtensionHeaders(Fixtures.dataSpec(v6: true).bytes(), [.destinationOptions(units: 1)])
        try withPacket(&v6) { p in
            #expect(p.pseudoHeaderSum.folded == Fixtures.referencePseudoHeaderSum(Array(p.bytes), tcpOffset: 56))
        }
    }
}
