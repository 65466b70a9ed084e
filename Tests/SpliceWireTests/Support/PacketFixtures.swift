import Testing
@testable import SpliceWire
import TestSupport

/// Packets and option blocks for the tests, and a reference checksum computed here from the
/// bytes alone (its own pseudo-header, its own byte loop), so that the library's checksums are
/// checked against something that shares none of their code.
enum Fixtures {
    static let clientV4 = IPAddress("192.0.2.10")!
    static let serverV4 = IPAddress("198.51.100.20")!
    static let clientV6 = IPAddress("2001:db8::10")!
    static let serverV6 = IPAddress("2001:db8:1::20")!

    /// A data segment with the usual timestamps option (NOP NOP TS), like Linux sends.
    static func dataSpec(v6: Bool = false, payload: [UInt8] = Array("hello, world".utf8)) -> TCPPacketSpec {
        TCPPacketSpec(source: v6 ? clientV6 : clientV4, destination: v6 ? serverV6 : serverV4,
                      sourcePort: 40000, destinationPort: 443,
                      sequenceNumber: SeqNumber(0x1234_5678), acknowledgmentNumber: SeqNumber(0x9abc_def0),
                      flags: [.ack, .psh], window: 502,
                      options: [1, 1, 8, 10, 0x00, 0x01, 0x02, 0x03, 0x0a, 0x0b, 0x0c, 0x0d],
                      payload: payload)
    }

    /// A SYN as Linux sends it: MSS, SACK-permitted, timestamps, NOP, window scale.
    static func synSpec(v6: Bool = false) -> TCPPacketSpec {
        var s = TCPPacketSpec(source: v6 ? clientV6 : clientV4, destination: v6 ? serverV6 : serverV4,
                              sourcePort: 40000, destinationPort: 443,
                              sequenceNumber: SeqNumber(0xffff_fff0), flags: [.syn], window: 64240)
        s.setSynOptions(SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                                   timestamps: TCPTimestamps(value: 1000, echo: 0)))
        return s
    }

    // MARK: Reference checksums

    /// Ones' complement sum of big-endian 16-bit words, folded, by the book (RFC 1071).
    static func onesComplementSum<C: Collection>(_ bytes: C, initial: UInt32 = 0) -> UInt16 where C.Element == UInt8 {
        var s = initial
        var hi: UInt8? = nil
        for b in bytes {
            if let h = hi {
                s += UInt32(h) << 8 | UInt32(b)
                hi = nil
            } else {
                hi = b
            }
            s = (s & 0xffff) + (s >> 16)
        }
        if let h = hi { s += UInt32(h) << 8 }
        while s > 0xffff { s = (s & 0xffff) + (s >> 16) }
        return UInt16(s)
    }

    /// The pseudo-header words of a TCP segment of `length` bytes in `packet` (v4 or v6 by the
    /// version nibble), summed unfolded.
    static func pseudoHeaderWords(_ packet: [UInt8], length: Int) -> UInt32 {
        var s: UInt32 = 0
        func word(_ i: Int) -> UInt32 { UInt32(packet[i]) << 8 | UInt32(packet[i + 1]) }
        if packet[0] >> 4 == 4 {
            for i in stride(from: 12, to: 20, by: 2) { s += word(i) }
        } else {
            for i in stride(from: 8, to: 40, by: 2) { s += word(i) }
        }
        s += 6
        s += UInt32(length >> 16) + UInt32(length & 0xffff)
        return s
    }

    /// The complete TCP checksum the segment at `tcpOffset` should carry.
    static func referenceTCPChecksum(_ packet: [UInt8], tcpOffset: Int) -> UInt16 {
        let end = ipTotalLength(packet)
        var seg = Array(packet[tcpOffset..<end])
        seg[16] = 0
        seg[17] = 0
        return ~onesComplementSum(seg, initial: pseudoHeaderWords(packet, length: seg.count))
    }

    /// The folded pseudo-header sum (what a `CHECKSUM_PARTIAL` field holds).
    static func referencePseudoHeaderSum(_ packet: [UInt8], tcpOffset: Int) -> UInt16 {
        onesComplementSum([UInt8](), initial: pseudoHeaderWords(packet, length: ipTotalLength(packet) - tcpOffset))
    }

    static func ipTotalLength(_ packet: [UInt8]) -> Int {
        if packet[0] >> 4 == 4 { return Int(packet[2]) << 8 | Int(packet[3]) }
        return 40 + (Int(packet[4]) << 8 | Int(packet[5]))
    }

    static func ipv4HeaderChecksumIsValid(_ packet: [UInt8]) -> Bool {
        let ihl = Int(packet[0] & 0x0f) * 4
        return onesComplementSum(packet[0..<ihl]) == 0xffff
    }

    // MARK: IPv6 extension headers

    enum ExtensionHeader {
        /// Hop-by-hop or destination options, `(units + 1) * 8` bytes of PadN.
        case hopByHop(units: Int)
        case destinationOptions(units: Int)
        /// A routing header with segments left 0 (so the pseudo-header destination is the
        /// IPv6 destination).
        case routing(units: Int)
        case fragment(offset: Int, more: Bool)
        /// An authentication header with `icvWords` 32-bit words of ICV.
        case authentication(icvWords: Int)

        var code: UInt8 {
            switch self {
            case .hopByHop: IPv6Header.NextHeader.hopByHop
            case .destinationOptions: IPv6Header.NextHeader.destinationOptions
            case .routing: IPv6Header.NextHeader.routing
            case .fragment: IPv6Header.NextHeader.fragment
            case .authentication: IPv6Header.NextHeader.authentication
            }
        }

        func encode(next: UInt8) -> [UInt8] {
            switch self {
            case .hopByHop(let units), .destinationOptions(let units):
                let n = (units + 1) * 8
                var b = [UInt8](repeating: 0, count: n)
                b[0] = next
                b[1] = UInt8(units)
                b[2] = 1            // PadN
                b[3] = UInt8(n - 4)
                return b
            case .routing(let units):
                var b = [UInt8](repeating: 0, count: (units + 1) * 8)
                b[0] = next
                b[1] = UInt8(units)
                b[2] = 4            // segment routing header type
                b[3] = 0            // segments left
                return b
            case .fragment(let offset, let more):
                let field = UInt16(offset / 8) << 3 | (more ? 1 : 0)
                return [next, 0, UInt8(field >> 8), UInt8(field & 0xff), 0xde, 0xad, 0xbe, 0xef]
            case .authentication(let icvWords):
                let n = 12 + 4 * icvWords
                var b = [UInt8](repeating: 0, count: n)
                b[0] = next
                b[1] = UInt8(n / 4 - 2)
                b[4] = 0x11; b[5] = 0x22; b[6] = 0x33; b[7] = 0x44   // SPI
                b[11] = 1                                             // sequence number
                return b
            }
        }
    }

    /// Inserts `chain` between the fixed IPv6 header of `packet` and its TCP segment, fixing
    /// the payload length (the TCP checksum does not change: same addresses, same segment).
    static func withExtensionHeaders(_ packet: [UInt8], _ chain: [ExtensionHeader]) -> [UInt8] {
        precondition(packet[0] >> 4 == 6)
        var out = Array(packet[0..<40])
        let upper = packet[6]
        for (i, h) in chain.enumerated() {
            let next = i + 1 < chain.count ? chain[i + 1].code : upper
            out += h.encode(next: next)
        }
        if let first = chain.first { out[6] = first.code }
        out += packet[40...]
        let payload = out.count - 40
        out[4] = UInt8(payload >> 8)
        out[5] = UInt8(payload & 0xff)
        return out
    }

    // MARK: Random packets

    /// A random, well-formed option block of at most 40 bytes: any mix of NOP, MSS, WS,
    /// SACK-permitted, timestamps, SACK with 1 to 4 blocks, unknown kinds, maybe a final EOL.
    static func randomOptions(_ rng: inout SplitMix64) -> [UInt8] {
        var out: [UInt8] = []
        let pieces = rng.below(7)
        for _ in 0..<pieces {
            var piece: [UInt8]
            switch rng.below(9) {
            case 0: piece = [1]
            case 1: piece = [2, 4, rng.u8(), rng.u8()]
            case 2: piece = [3, 3, UInt8(rng.below(15))]
            case 3: piece = [4, 2]
            case 4: piece = [8, 10] + rng.bytes(8)
            case 5:
                let blocks = 1 + rng.below(4)
                piece = [5, UInt8(2 + 8 * blocks)] + rng.bytes(8 * blocks)
            case 6:
                // Unknown kinds (and known kinds with lengths they must not have) are kept.
                let kinds: [UInt8] = [6, 7, 9, 19, 28, 29, 30, 34, 253, 254, 2, 3, 8]
                let kind = kinds[rng.below(kinds.count)]
                let len = 2 + rng.below(9)
                piece = [kind, UInt8(len)] + rng.bytes(len - 2)
            case 7: piece = [1, 1]
            default: piece = [1, 1, 8, 10] + rng.bytes(8)
            }
            if out.count + piece.count <= 40 { out += piece }
        }
        if rng.oneIn(4), out.count < 40 { out.append(0) }
        return out
    }

    static func randomAddress(_ rng: inout SplitMix64, v6: Bool) -> IPAddress {
        if v6 {
            // Never IPv4-mapped: the high half is never zero.
            return IPAddress(high: rng.next() | 1 << 61, low: rng.next())
        }
        return IPAddress(ipv4: rng.u32())
    }

    static func randomPayloadLength(_ rng: inout SplitMix64, large: Bool = true) -> Int {
        switch rng.below(20) {
        case 0..<5: return 0
        case 5..<12: return 1 + rng.below(64)
        case 12..<18: return 65 + rng.below(1500)
        case 18: return rng.below(9000)
        default: return large ? 60_000 + rng.below(5_000) : rng.below(3000)
        }
    }

    static func randomSpec(_ rng: inout SplitMix64, v6: Bool? = nil, largePayloads: Bool = true) -> TCPPacketSpec {
        let isV6 = v6 ?? rng.bool()
        var s = TCPPacketSpec(source: randomAddress(&rng, v6: isV6), destination: randomAddress(&rng, v6: isV6),
                              sourcePort: rng.u16(), destinationPort: rng.u16(),
                              sequenceNumber: SeqNumber(rng.u32()), acknowledgmentNumber: SeqNumber(rng.u32()),
                              flags: TCPFlags(rawValue: rng.u8()), window: rng.u16(),
                              options: randomOptions(&rng),
                              payload: rng.bytes(randomPayloadLength(&rng, large: largePayloads)))
        s.urgentPointer = rng.u16()
        s.ttl = rng.u8()
        s.identification = rng.u16()
        s.dontFragment = rng.bool()
        return s
    }

    static func randomExtensionChain(_ rng: inout SplitMix64, maxCount: Int = 4) -> [ExtensionHeader] {
        (0..<rng.below(maxCount + 1)).map { _ in
            switch rng.below(5) {
            case 0: .hopByHop(units: rng.below(3))
            case 1: .destinationOptions(units: rng.below(3))
            case 2: .routing(units: rng.below(3))
            case 3: .authentication(icvWords: 1 + rng.below(4))
            default: .fragment(offset: 0, more: false)   // an atomic fragment: still a whole packet
            }
        }
    }
}

/// Runs `body` on a packet view over a copy of `bytes`, which gets the edited bytes back.
@discardableResult
func withPacket<R>(_ bytes: inout [UInt8], _ body: (TCPPacket) throws -> R) throws -> R {
    try bytes.withUnsafeMutableBytes { buf in
        let packet = try #require(TCPPacket(buf))
        return try body(packet)
    }
}
