import Testing
@testable import SpliceWire
import TestSupport

@Suite("TCPPacketSpec")
struct TCPPacketSpecTests {
    @Test("emit writes the fields where they belong, with correct checksums, v4")
    func emitV4() throws {
        var spec = Fixtures.dataSpec(payload: [0xaa, 0xbb, 0xcc])
        spec.ttl = 17
        spec.identification = 0x4242
        spec.urgentPointer = 9
        let b = spec.bytes()
        #expect(b.count == 20 + 32 + 3)
        #expect(b[0] == 0x45)
        #expect(Fixtures.ipTotalLength(b) == b.count)
        #expect(b[4] == 0x42 && b[5] == 0x42)
        #expect(b[6] == 0x40 && b[7] == 0)
        #expect(b[8] == 17 && b[9] == 6)
        #expect(Array(b[12..<20]) == [192, 0, 2, 10, 198, 51, 100, 20])
        #expect(Array(b[20..<24]) == [0x9c, 0x40, 0x01, 0xbb])
        #expect(b[32] == 0x80 && b[33] == 0x18)
        #expect(b[38] == 0 && b[39] == 9)
        #expect(Array(b[52...]) == [0xaa, 0xbb, 0xcc])
        #expect(Fixtures.ipv4HeaderChecksumIsValid(b))
        #expect(Fixtures.referenceTCPChecksum(b, tcpOffset: 20) == UInt16(b[36]) << 8 | UInt16(b[37]))
    }

    @Test("emit writes the fields where they belong, with a correct checksum, v6")
    func emitV6() {
        let b = Fixtures.dataSpec(v6: true, payload: [1]).bytes()
        #expect(b.count == 40 + 32 + 1)
        #expect(b[0] == 0x60)
        #expect(Int(b[4]) << 8 | Int(b[5]) == 33)
        #expect(b[6] == 6 && b[7] == 64)
        #expect(Fixtures.referenceTCPChecksum(b, tcpOffset: 40) == UInt16(b[56]) << 8 | UInt16(b[57]))
    }

    @Test("options are padded with zeros (EOL) to a multiple of 4")
    func padding() {
        var spec = Fixtures.dataSpec()
        spec.options = [3, 3, 7]
        #expect(spec.paddedOptionsLength == 4)
        #expect(spec.tcpHeaderLength == 24)
        let b = spec.bytes()
        #expect(Array(b[40..<44]) == [3, 3, 7, 0])
        #expect(b[32] >> 4 == 6)
    }

    @Test("emit refuses what it cannot encode")
    func refusals() {
        var out = [UInt8](repeating: 0, count: 70_000)
        var mixed = Fixtures.dataSpec()
        mixed.destination = Fixtures.serverV6
        var tooManyOptions = Fixtures.dataSpec()
        tooManyOptions.options = [UInt8](repeating: 1, count: 41)
        var tooLong = Fixtures.dataSpec()
        tooLong.payload = [UInt8](repeating: 0, count: 65_535 - 52 + 1)
        var longestV4 = Fixtures.dataSpec()
        longestV4.payload = [UInt8](repeating: 0, count: 65_535 - 52)
        out.withUnsafeMutableBytes { buf in
            #expect(mixed.emit(into: buf) == nil)
            #expect(tooManyOptions.emit(into: buf) == nil)
            #expect(tooLong.emit(into: buf) == nil)
            #expect(longestV4.emit(into: buf) == 65_535)
            #expect(Fixtures.dataSpec().emit(into: buf.slice(0, 63)) == nil)
            #expect(Fixtures.dataSpec().emit(into: buf.slice(0, 64)) == 64)
        }
    }

    @Test("parse(emit(spec)) == spec, for random v4 and v6 specs")
    func roundTrip() throws {
        let seed = testSeed(default: 0x59ec_0001)
        var rng = SplitMix64(seed: seed)
        var out = [UInt8](repeating: 0, count: 70_000)
        for i in 0..<2_000 {
            var spec = Fixtures.randomSpec(&rng, largePayloads: i % 50 == 0)
            // Parsing reads back the padded block.
            spec.options += [UInt8](repeating: 0, count: spec.paddedOptionsLength - spec.options.count)
            if spec.isIPv6 {
                spec.identification = 0   // not in an IPv6 header
                spec.dontFragment = true
            }
            let n = try #require(out.withUnsafeMutableBytes { spec.emit(into: $0) }, "seed \(seed) case \(i)")
            let back = out.withUnsafeMutableBytes { TCPPacketSpec(parsing: $0.slice(0, n)) }
            #expect(back == spec, "seed \(seed) case \(i)")
            #expect(spec.bytes() == Array(out[0..<n]), "seed \(seed) case \(i)")
        }
    }

    @Test("parsing a non-TCP buffer gives nil")
    func parseNil() {
        var b = Fixtures.dataSpec().bytes()
        b[9] = 17
        b.withUnsafeMutableBytes { #expect(TCPPacketSpec(parsing: $0) == nil) }
    }

    @Test("setSynOptions encodes the block")
    func synOptions() {
        var spec = Fixtures.dataSpec()
        spec.setSynOptions(SynOptions(maximumSegmentSize: 1460, windowScale: 7))
        #expect(spec.options == [2, 4, 0x05, 0xb4, 1, 3, 3, 7])
    }
}
