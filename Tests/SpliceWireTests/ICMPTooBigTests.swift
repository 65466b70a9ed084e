import Testing
@testable import SpliceWire

/// The path MTU errors the engine gives to the proxy's sockets: parsed from the bytes alone,
/// the quoted segment's number rewritten, the checksum right; anything else refused.
@Suite("ICMP fragmentation-needed / ICMPv6 packet-too-big")
struct ICMPTooBigTests {
    static let hopV4 = IPAddress("203.0.113.1")!
    static let hopV6 = IPAddress("2001:db8:ff::1")!

    func segment(v6: Bool) -> [UInt8] {
        Fixtures.dataSpec(v6: v6, payload: [UInt8](repeating: 0x5a, count: 1400)).bytes()
    }

    /// The ICMP message's checksum, checked by the book (ICMPv6's with its pseudo-header).
    func checksumValid(_ packet: [UInt8], v6: Bool) -> Bool {
        let ip = v6 ? 40 : 20
        let message = Array(packet[ip...])
        var initial: UInt32 = 0
        if v6 {
            for i in stride(from: 8, to: 40, by: 2) { initial += UInt32(packet[i]) << 8 | UInt32(packet[i + 1]) }
            initial += UInt32(message.count) + 58
        }
        return Fixtures.onesComplementSum(message, initial: initial) == 0xffff
    }

    @Test("a hop's error about a TCP segment: the quoted tuple, sequence number and MTU; the number rewritten, the checksum following",
          arguments: [false, true])
    func parseAndRewrite(v6: Bool) throws {
        var bytes = try #require(ICMPTooBig.build(hop: v6 ? Self.hopV6 : Self.hopV4, mtu: 1400, quoting: segment(v6: v6)))
        #expect(checksumValid(bytes, v6: v6))
        if !v6 { #expect(Fixtures.ipv4HeaderChecksumIsValid(bytes)) }
        try bytes.withUnsafeMutableBytes { b in
            let m = try #require(ICMPTooBig(b))
            #expect(m.isIPv6 == v6)
            #expect(m.innerSource == (v6 ? Fixtures.clientV6 : Fixtures.clientV4))
            #expect(m.innerDestination == (v6 ? Fixtures.serverV6 : Fixtures.serverV4))
            #expect(m.innerSourcePort == 40000 && m.innerDestinationPort == 443)
            #expect(m.innerSequenceNumber == SeqNumber(0x1234_5678))
            #expect(m.mtu == 1400)
            m.innerSequenceNumber = SeqNumber(0xdead_beef)
        }
        // The checksum followed the rewrite.
        #expect(checksumValid(bytes, v6: v6))
        let again = try bytes.withUnsafeMutableBytes { try #require(ICMPTooBig($0)).innerSequenceNumber }
        #expect(again == SeqNumber(0xdead_beef))
    }

    @Test("an error that came with a wrong checksum still has a wrong one after the rewrite (its receiver drops it)",
          arguments: [false, true])
    func corruptStaysCorrupt(v6: Bool) throws {
        var bytes = try #require(ICMPTooBig.build(hop: v6 ? Self.hopV6 : Self.hopV4, mtu: 1400, quoting: segment(v6: v6)))
        let ip = v6 ? 40 : 20
        bytes[ip + 2] ^= 0x5a
        #expect(!checksumValid(bytes, v6: v6))
        try bytes.withUnsafeMutableBytes { try #require(ICMPTooBig($0)).innerSequenceNumber = SeqNumber(7) }
        #expect(!checksumValid(bytes, v6: v6))
    }

    @Test("a quote cut right after the sequence number is enough; one cut before it is refused")
    func shortQuotes() throws {
        var enough = try #require(ICMPTooBig.build(hop: Self.hopV4, mtu: 1400, quoting: segment(v6: false), quote: 28))
        #expect(enough.withUnsafeMutableBytes { ICMPTooBig($0) } != nil)
        var short = try #require(ICMPTooBig.build(hop: Self.hopV4, mtu: 1400, quoting: segment(v6: false), quote: 27))
        #expect(short.withUnsafeMutableBytes { ICMPTooBig($0) } == nil)
        var short6 = try #require(ICMPTooBig.build(hop: Self.hopV6, mtu: 1400, quoting: segment(v6: true), quote: 47))
        #expect(short6.withUnsafeMutableBytes { ICMPTooBig($0) } == nil)
    }

    @Test("other ICMP messages, a quoted non-TCP packet and a TCP segment are not too-big errors")
    func refused() throws {
        var unreachable = try #require(ICMPTooBig.build(hop: Self.hopV4, mtu: 1400, quoting: segment(v6: false)))
        unreachable[21] = 1   // code 1: host unreachable
        #expect(unreachable.withUnsafeMutableBytes { ICMPTooBig($0) } == nil)
        var udp = segment(v6: false)
        udp[9] = 17
        var aboutUDP = try #require(ICMPTooBig.build(hop: Self.hopV4, mtu: 1400, quoting: udp))
        #expect(aboutUDP.withUnsafeMutableBytes { ICMPTooBig($0) } == nil)
        var tcp = segment(v6: false)
        #expect(tcp.withUnsafeMutableBytes { ICMPTooBig($0) } == nil)
        var echo6 = try #require(ICMPTooBig.build(hop: Self.hopV6, mtu: 1400, quoting: segment(v6: true)))
        echo6[40] = 128   // echo request
        #expect(echo6.withUnsafeMutableBytes { ICMPTooBig($0) } == nil)
        #expect(ICMPTooBig.build(hop: Self.hopV6, mtu: 1400, quoting: segment(v6: false)) == nil)
    }
}
