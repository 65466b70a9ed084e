import Testing
@testable import SpliceWire
import TestSupport

@Suite("IPv4Header")
struct IPv4HeaderTests {
    /// 172.16.10.99 -> 172.16.10.12, TCP, id 1c46, DF, TTL 64, checksum b1e6, total length 60:
    /// the header and 40 bytes of zeros.
    static let classic: [UInt8] = [0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0xb1, 0xe6,
                                   0xac, 0x10, 0x0a, 0x63, 0xac, 0x10, 0x0a, 0x0c] + [UInt8](repeating: 0, count: 40)

    @Test("every field reads from its place")
    func fields() throws {
        var bytes = Self.classic
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv4Header(buf))
            #expect(h.headerLength == 20)
            #expect(h.totalLength == 60)
            #expect(h.tos == 0)
            #expect(h.identification == 0x1c46)
            #expect(h.dontFragment)
            #expect(!h.moreFragments)
            #expect(h.fragmentOffset == 0)
            #expect(!h.isFragment)
            #expect(h.ttl == 64)
            #expect(h.protocolNumber == 6)
            #expect(h.checksum == 0xb1e6)
            #expect(h.checksumIsValid)
            #expect(h.sourceValue == 0xac10_0a63)
            #expect(h.destinationValue == 0xac10_0a0c)
            #expect(h.source == IPAddress("172.16.10.99"))
            #expect(h.destination == IPAddress("172.16.10.12"))
            #expect(h.payload.count == 40)
        }
    }

    @Test("every settable field writes its own bytes and no others")
    func setters() throws {
        var bytes = Self.classic
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv4Header(buf))
            h.tos = 0xb8
            h.identification = 0xbeef
            h.ttl = 3
            h.protocolNumber = 17
            h.checksum = 0x1234
            h.sourceValue = 0x0102_0304
            h.destinationValue = 0x0506_0708
        }
        #expect(Array(bytes[0..<20]) == [0x45, 0xb8, 0x00, 0x3c, 0xbe, 0xef, 0x40, 0x00, 0x03, 0x11, 0x12, 0x34,
                                         1, 2, 3, 4, 5, 6, 7, 8])
        #expect(bytes[20...].allSatisfy { $0 == 0 })
    }

    @Test("flags and fragment offset", arguments: [
        (UInt16(0x0000), false, false, 0, false),
        (0x4000, true, false, 0, false),
        (0x2000, false, true, 0, true),
        (0x0001, false, false, 8, true),
        (0x3fff, false, true, 0x1fff * 8, true),
        (0x8000, false, false, 0, false),   // the reserved bit alone does not make a fragment
    ] as [(UInt16, Bool, Bool, Int, Bool)])
    func fragments(field: UInt16, df: Bool, mf: Bool, offset: Int, isFragment: Bool) throws {
        var bytes = Self.classic
        bytes[6] = UInt8(field >> 8)
        bytes[7] = UInt8(field & 0xff)
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv4Header(buf))
            #expect(h.dontFragment == df)
            #expect(h.moreFragments == mf)
            #expect(h.fragmentOffset == offset)
            #expect(h.isFragment == isFragment)
        }
    }

    @Test("update* keep the header checksum equal to a full recomputation")
    func incrementalHeaderChecksum() throws {
        let seed = testSeed(default: 0x44_0001)
        var rng = SplitMix64(seed: seed)
        var bytes = Self.classic
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv4Header(buf))
            for _ in 0..<10_000 {
                switch rng.below(4) {
                case 0: h.updateSource(rng.oneIn(8) ? [0, UInt32.max][rng.below(2)] : rng.u32())
                case 1: h.updateDestination(rng.u32())
                case 2: h.updateTOS(rng.u8())
                default: h.updateTTL(rng.u8())
                }
                #expect(h.checksumIsValid, "seed \(seed)")
                let incremental = h.checksum
                h.fillChecksum()
                #expect(h.checksum == incremental, "seed \(seed)")
            }
        }
    }

    @Test("fillChecksum writes the known value")
    func fill() throws {
        var bytes = Self.classic
        bytes[10] = 0
        bytes[11] = 0
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv4Header(buf))
            #expect(!h.checksumIsValid)
            h.fillChecksum()
            #expect(h.checksum == 0xb1e6)
            #expect(h.checksumIsValid)
        }
    }

    @Test("IP options are inside the header length and the checksum")
    func options() throws {
        var bytes = Self.classic
        bytes[0] = 0x46
        bytes.insert(contentsOf: [0x01, 0x01, 0x01, 0x00], at: 20)   // NOP NOP NOP EOL
        bytes[3] = 64
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv4Header(buf))
            #expect(h.headerLength == 24)
            #expect(h.payload.count == 40)
            h.fillChecksum()
            #expect(h.checksumIsValid)
        }
        #expect(Fixtures.ipv4HeaderChecksumIsValid(bytes))
    }

    @Test("link-layer padding after the total length is not part of the packet")
    func padding() throws {
        var bytes = Self.classic + [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv4Header(buf))
            #expect(h.totalLength == 60)
            #expect(h.bytes.count == 60)
            #expect(h.payload.count == 40)
        }
    }

    @Test("pseudo-header sum: addresses, protocol and length")
    func pseudoHeader() throws {
        var bytes = Self.classic
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv4Header(buf))
            let acc = h.pseudoHeaderSum(length: 40)
            let expected = Fixtures.onesComplementSum([0xac, 0x10, 0x0a, 0x63, 0xac, 0x10, 0x0a, 0x0c, 0, 6, 0, 40])
            #expect(acc.folded == expected)
        }
    }

    @Test("headers that do not hold together are refused")
    func refused() {
        let damages: [(String, (inout [UInt8]) -> Void)] = [
            ("shorter than 20 bytes", { b in b = Array(b[0..<19]) }),
            ("empty", { b in b = [] }),
            ("version 6", { b in b[0] = 0x65 }),
            ("version 0", { b in b[0] = 0x05 }),
            ("IHL 4", { b in b[0] = 0x44 }),
            ("IHL 0", { b in b[0] = 0x40 }),
            ("total length below IHL", { b in b[2] = 0; b[3] = 19 }),
            ("total length 0", { b in b[2] = 0; b[3] = 0 }),
            ("total length past the buffer", { b in b[3] = 61 }),
            ("IHL past the total length", { b in b[0] = 0x4f; b[2] = 0; b[3] = 40 }),
            ("buffer cut short", { b in b = Array(b[0..<59]) }),
        ]
        for (name, damage) in damages {
            var bytes = Self.classic
            damage(&bytes)
            bytes.withUnsafeMutableBytes { buf in
                #expect(IPv4Header(buf) == nil, "\(name)")
            }
        }
    }

    @Test("IHL 15 with a total length that holds it is accepted")
    func maximalIHL() throws {
        var bytes = [UInt8](repeating: 0, count: 60)
        bytes[0] = 0x4f
        bytes[3] = 60
        try bytes.withUnsafeMutableBytes { buf in
            let h = try #require(IPv4Header(buf))
            #expect(h.headerLength == 60)
            #expect(h.payload.count == 0)
        }
    }
}
