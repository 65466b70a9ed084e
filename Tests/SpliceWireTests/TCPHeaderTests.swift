import Testing
@testable import SpliceWire
import TestSupport

@Suite("TCPHeader")
struct TCPHeaderTests {
    /// A bare 20-byte header and 5 bytes of data: ports 1234 -> 80, seq 1, ack 2, ACK|PSH,
    /// window 0x1000, checksum 0xabcd, urgent pointer 0x0102.
    static let segment: [UInt8] = [0x04, 0xd2, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0x10, 0x00,
                                   0xab, 0xcd, 0x01, 0x02, 1, 2, 3, 4, 5]

    @Test("every field reads from its place")
    func fields() throws {
        var bytes = Self.segment
        try bytes.withUnsafeMutableBytes { buf in
            let t = try #require(TCPHeader(buf))
            #expect(t.sourcePort == 1234)
            #expect(t.destinationPort == 80)
            #expect(t.sequenceNumber == SeqNumber(1))
            #expect(t.acknowledgmentNumber == SeqNumber(2))
            #expect(t.headerLength == 20)
            #expect(!t.nonceSum)
            #expect(t.flags == [.ack, .psh])
            #expect(t.window == 0x1000)
            #expect(t.checksum == 0xabcd)
            #expect(t.urgentPointer == 0x0102)
            #expect(t.optionBytes.count == 0)
            #expect(Array(t.payload) == [1, 2, 3, 4, 5])
            #expect(t.payloadLength == 5)
            #expect(t.sequenceLength == 5)
            #expect(Array(t.options).isEmpty)
        }
    }

    @Test("every settable field writes its own bytes and no others")
    func setters() throws {
        var bytes = Self.segment
        try bytes.withUnsafeMutableBytes { buf in
            let t = try #require(TCPHeader(buf))
            t.sourcePort = 0xa1a2
            t.destinationPort = 0xb1b2
            t.sequenceNumber = SeqNumber(0xc1c2_c3c4)
            t.acknowledgmentNumber = SeqNumber(0xd1d2_d3d4)
            t.flags = [.syn, .ece, .cwr]
            t.window = 0xe1e2
            t.checksum = 0xf1f2
            t.urgentPointer = 0x0708
        }
        #expect(bytes == [0xa1, 0xa2, 0xb1, 0xb2, 0xc1, 0xc2, 0xc3, 0xc4, 0xd1, 0xd2, 0xd3, 0xd4, 0x50, 0xc2, 0xe1, 0xe2,
                          0xf1, 0xf2, 0x07, 0x08, 1, 2, 3, 4, 5])
    }

    @Test("the nonce bit and the reserved bits of the data-offset byte are kept")
    func reservedBits() throws {
        var bytes = Self.segment
        bytes[12] = 0x5f
        try bytes.withUnsafeMutableBytes { buf in
            let t = try #require(TCPHeader(buf))
            #expect(t.headerLength == 20)
            #expect(t.nonceSum)
            t.flags = .fin
            #expect(t.headerLength == 20)
        }
        #expect(bytes[12] == 0x5f)
    }

    @Test("sequence length counts SYN and FIN", arguments: [
        (TCPFlags.syn, UInt32(6)), ([.syn, .ack], 6), (.fin, 6), ([.syn, .fin], 7), (.ack, 5), (.rst, 5),
    ] as [(TCPFlags, UInt32)])
    func sequenceLength(flags: TCPFlags, expected: UInt32) throws {
        var bytes = Self.segment
        try bytes.withUnsafeMutableBytes { buf in
            let t = try #require(TCPHeader(buf))
            t.flags = flags
            #expect(t.sequenceLength == expected)
        }
    }

    @Test("flags print tcpdump-style")
    func flagNames() {
        #expect(TCPFlags([.syn, .ack]).description == "S.")
        #expect(TCPFlags([.fin, .psh, .ack]).description == "FP.")
        #expect(TCPFlags().description == "none")
        #expect(TCPFlags(rawValue: 0xff).description == "SFRP.UEW")
    }

    @Test("data offset: below 5 or past the segment is refused; 15 with 60 bytes is accepted", arguments: [
        (UInt8(0x00), 25, false), (0x40, 25, false), (0x50, 19, false), (0x60, 23, false),
        (0x60, 24, true), (0xf0, 59, false), (0xf0, 60, true),
    ] as [(UInt8, Int, Bool)])
    func dataOffset(byte: UInt8, length: Int, accepted: Bool) {
        var bytes = Self.segment + [UInt8](repeating: 1, count: 60)
        bytes[12] = byte
        bytes = Array(bytes[0..<length])
        bytes.withUnsafeMutableBytes { buf in
            #expect((TCPHeader(buf) != nil) == accepted)
        }
    }

    @Test("update* keep a complete checksum equal to a full recomputation (v4 and v6)", arguments: [false, true])
    func incremental(v6: Bool) throws {
        let seed = testSeed(default: 0x7c_0001)
        var rng = SplitMix64(seed: seed)
        var bytes = Fixtures.dataSpec(v6: v6, payload: rng.bytes(101)).bytes()
        let tcpOffset = v6 ? 40 : 20
        for _ in 0..<2_000 {
            try withPacket(&bytes) { p in
                let t = p.tcp
                switch rng.below(6) {
                case 0: t.updateSequenceNumber(SeqNumber(rng.u32()))
                case 1: t.updateAcknowledgmentNumber(SeqNumber(rng.oneIn(4) ? 0 : rng.u32()))
                case 2: t.updateWindow(rng.oneIn(4) ? 0xffff : rng.u16())
                case 3: t.updateSourcePort(rng.u16())
                case 4: t.updateDestinationPort(rng.u16())
                default: t.updateFlags(TCPFlags(rawValue: rng.u8()))
                }
                #expect(p.checksumIsValid, "seed \(seed)")
                #expect(t.checksum == t.computeChecksum(pseudoHeader: p.pseudoHeaderSum), "seed \(seed)")
            }
            #expect(Fixtures.referenceTCPChecksum(bytes, tcpOffset: tcpOffset)
                    == UInt16(bytes[tcpOffset + 16]) << 8 | UInt16(bytes[tcpOffset + 17]), "seed \(seed)")
        }
    }

    @Test("updateFlags keeps the data offset nibble and the checksum")
    func updateFlags() throws {
        var bytes = Fixtures.synSpec().bytes()
        try withPacket(&bytes) { p in
            let before = p.tcp.headerLength
            p.tcp.updateFlags([.syn, .ack])
            #expect(p.tcp.flags == [.syn, .ack])
            #expect(p.tcp.headerLength == before)
            #expect(p.checksumIsValid)
        }
    }

    @Test("computeChecksum leaves the field as it was; fillChecksum writes it")
    func computeAndFill() throws {
        var bytes = Fixtures.dataSpec().bytes()
        try withPacket(&bytes) { p in
            let good = p.tcp.checksum
            p.tcp.checksum = 0x1234
            #expect(!p.checksumIsValid)
            #expect(p.tcp.computeChecksum(pseudoHeader: p.pseudoHeaderSum) == good)
            #expect(p.tcp.checksum == 0x1234)
            p.fillChecksum()
            #expect(p.tcp.checksum == good)
        }
    }

    @Test("the partial checksum is the folded pseudo-header sum")
    func partial() throws {
        for v6 in [false, true] {
            var bytes = Fixtures.dataSpec(v6: v6, payload: [1, 2, 3]).bytes()
            try withPacket(&bytes) { p in
                #expect(!p.checksumIsPartial)
                p.fillPartialChecksum()
                #expect(p.checksumIsPartial)
                #expect(p.tcp.checksum == Fixtures.referencePseudoHeaderSum(Array(p.bytes), tcpOffset: v6 ? 40 : 20))
            }
        }
    }
}
