import Testing
@testable import SpliceWire

@Suite("TCPSegmentWriter")
struct TCPSegmentWriterTests {
    static let optionCases: [TCPSegmentWriter.Options] = [
        .none,
        .timestamps(TCPTimestamps(value: 0xdead_beef, echo: 7)),
        .syn(SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                        timestamps: TCPTimestamps(value: 1, echo: 0))),
        .syn(SynOptions(maximumSegmentSize: 536)),
        .syn(SynOptions()),
    ]

    /// The option bytes `TCPPacketSpec` would carry for the same segment.
    func optionBytes(_ options: TCPSegmentWriter.Options) -> [UInt8] {
        switch options {
        case .none: return []
        case .timestamps(let ts):
            var spec = Fixtures.dataSpec()
            spec.options = [1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0]
            var b = spec.options
            b.withUnsafeMutableBytes { $0.setBE32(4, ts.value); $0.setBE32(8, ts.echo) }
            return b
        case .syn(let s):
            var spec = Fixtures.dataSpec()
            spec.setSynOptions(s)
            return spec.options
        }
    }

    @Test("writes the same bytes as TCPPacketSpec, with complete checksums", arguments: optionCases, [false, true])
    func sameAsSpec(options: TCPSegmentWriter.Options, v6: Bool) throws {
        var spec = TCPPacketSpec(source: v6 ? Fixtures.clientV6 : Fixtures.clientV4,
                                 destination: v6 ? Fixtures.serverV6 : Fixtures.serverV4,
                                 sourcePort: 40000, destinationPort: 443,
                                 sequenceNumber: SeqNumber(0xffff_fff0), acknowledgmentNumber: SeqNumber(12345),
                                 flags: [.syn, .ack], window: 29200, options: optionBytes(options))
        spec.ttl = 33
        var out = [UInt8](repeating: 0xee, count: 128)
        let n = try #require(out.withUnsafeMutableBytes { buf in
            TCPSegmentWriter.write(into: buf, source: spec.source, destination: spec.destination,
                                   sourcePort: spec.sourcePort, destinationPort: spec.destinationPort,
                                   sequenceNumber: spec.sequenceNumber, acknowledgmentNumber: spec.acknowledgmentNumber,
                                   flags: spec.flags, window: spec.window, options: options, ttl: 33)
        })
        #expect(n == spec.totalLength)
        let written = Array(out[0..<n])
        #expect(written == spec.bytes())
        #expect(out[n...].allSatisfy { $0 == 0xee }, "nothing written past the packet")
        let tcpOffset = v6 ? 40 : 20
        #expect(Fixtures.referenceTCPChecksum(written, tcpOffset: tcpOffset)
                == UInt16(written[tcpOffset + 16]) << 8 | UInt16(written[tcpOffset + 17]))
        if !v6 { #expect(Fixtures.ipv4HeaderChecksumIsValid(written)) }
    }

    @Test("a buffer too small, or mixed address families, give nil")
    func refusals() {
        var out = [UInt8](repeating: 0xee, count: 128)
        out.withUnsafeMutableBytes { buf in
            let mixed = TCPSegmentWriter.write(into: buf, source: Fixtures.clientV4, destination: Fixtures.serverV6,
                                               sourcePort: 1, destinationPort: 2, sequenceNumber: SeqNumber(0),
                                               acknowledgmentNumber: SeqNumber(0), flags: .rst, window: 0, options: .none)
            #expect(mixed == nil)
            let small = TCPSegmentWriter.write(into: buf.slice(0, 51), source: Fixtures.clientV4, destination: Fixtures.serverV4,
                                               sourcePort: 1, destinationPort: 2, sequenceNumber: SeqNumber(0),
                                               acknowledgmentNumber: SeqNumber(0), flags: .ack, window: 0,
                                               options: .timestamps(TCPTimestamps(value: 1, echo: 2)))
            #expect(small == nil)
        }
        #expect(out.allSatisfy { $0 == 0xee }, "a refused write writes nothing")
    }
}
