import CChecksumBaseline
import SpliceWire

/// The work the benchmarks measure, in one place so that the package-benchmark suite and any
/// other harness time exactly the same code. Buffers are made once; the per-packet functions
/// allocate nothing.
public enum Workloads {
    /// Bytes of the 64 KiB checksum buffer.
    public static let checksumBytes = 65_536

    /// A 64-byte IPv4 ACK as Linux sends it while receiving with losses: NOP NOP timestamps,
    /// NOP NOP SACK with one block (20 + 20 + 24 bytes).
    public static let ackLength = 64

    /// The largest IPv4 GSO packet: 65535 bytes, NOP NOP timestamps, 65483 bytes of data.
    public static let gsoLength = 65_535

    /// A buffer of `count` pseudo-random bytes (never freed: benchmarks keep it for the run).
    public static func randomBytes(_ count: Int, seed: UInt64 = 0x5eed) -> UnsafeMutableRawBufferPointer {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 64)
        var s = seed
        for i in 0..<count {
            s = s &* 6364136223846793005 &+ 1442695040888963407
            buf[i] = UInt8(truncatingIfNeeded: s >> 33)
        }
        return buf
    }

    static func emit(_ spec: TCPPacketSpec) -> UnsafeMutableRawBufferPointer {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: spec.totalLength, alignment: 64)
        guard spec.emit(into: buf) == spec.totalLength else { fatalError("benchmark packet does not encode") }
        return buf
    }

    public static func makeACK() -> UnsafeMutableRawBufferPointer {
        let spec = TCPPacketSpec(
            source: IPAddress("192.0.2.10")!, destination: IPAddress("198.51.100.20")!,
            sourcePort: 40000, destinationPort: 443,
            sequenceNumber: SeqNumber(0x1000_0000), acknowledgmentNumber: SeqNumber(0x2000_0000),
            flags: .ack, window: 501,
            options: [1, 1, 8, 10, 0x00, 0x10, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00,
                      1, 1, 5, 10, 0x20, 0x00, 0x10, 0x00, 0x20, 0x00, 0x20, 0x00])
        precondition(spec.totalLength == ackLength)
        return emit(spec)
    }

    public static func makeGSO() -> UnsafeMutableRawBufferPointer {
        let payload = randomBytes(gsoLength - 52)
        let spec = TCPPacketSpec(
            source: IPAddress("192.0.2.10")!, destination: IPAddress("198.51.100.20")!,
            sourcePort: 443, destinationPort: 40000,
            sequenceNumber: SeqNumber(0x3000_0000), acknowledgmentNumber: SeqNumber(0x4000_0000),
            flags: [.ack, .psh], window: 501,
            options: [1, 1, 8, 10, 0x00, 0x10, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00],
            payload: Array(payload))
        payload.deallocate()
        precondition(spec.totalLength == gsoLength)
        return emit(spec)
    }

    /// What a splice does to every ACK crossing it: parse, move seq and ack by the two
    /// directions' offsets, translate the SACK edges, shift the timestamps; the checksum is
    /// updated incrementally (the packet arrived with a complete one). Returns the checksum.
    @inline(never)
    public static func rewriteACK(_ buffer: UnsafeMutableRawBufferPointer) -> UInt16 {
        guard case .tcp(let p) = TCPPacket.parse(buffer) else { fatalError("not TCP") }
        return rewrite(p, sackDelta: -0x1234)
    }

    /// The same for an ACK whose field holds only the pseudo-header sum (CSUMNOTREADY): after
    /// the rewrite it gets a full checksum.
    @inline(never)
    public static func rewriteACKFullChecksum(_ buffer: UnsafeMutableRawBufferPointer) -> UInt16 {
        guard case .tcp(let p) = TCPPacket.parse(buffer) else { fatalError("not TCP") }
        _ = rewrite(p, sackDelta: -0x1234)
        p.fillChecksum()
        return p.tcp.checksum
    }

    /// A 64 KiB GSO packet of the CSUMNOTREADY case: parse, rewrite seq, ack and timestamps,
    /// then a full checksum over the whole segment.
    @inline(never)
    public static func rewriteGSOFullChecksum(_ buffer: UnsafeMutableRawBufferPointer) -> UInt16 {
        guard case .tcp(let p) = TCPPacket.parse(buffer) else { fatalError("not TCP") }
        _ = rewrite(p, sackDelta: 0)
        p.fillChecksum()
        return p.tcp.checksum
    }

    @inline(__always)
    static func rewrite(_ p: TCPPacket, sackDelta: Int32) -> UInt16 {
        let t = p.tcp
        t.updateSequenceNumber(t.sequenceNumber.advanced(by: 0x0101))
        t.updateAcknowledgmentNumber(t.acknowledgmentNumber.advanced(by: sackDelta))
        var it = t.options.makeIterator()
        let options = t.options
        while let o = it.next() {
            switch options.value(of: o) {
            case .timestamps(let value, let echo):
                t.updateTimestamps(o, value: value &+ 7, echo: echo &- 3)
            case .sack:
                t.shiftSACKBlocks(o, by: sackDelta)
            default:
                break
            }
        }
        return t.checksum
    }

    /// A 64-byte IPv6 ACK (NOP NOP timestamps) for the address rewrite.
    public static func makeACKv6() -> UnsafeMutableRawBufferPointer {
        emit(TCPPacketSpec(
            source: IPAddress("2001:db8::10")!, destination: IPAddress("2001:db8:1::20")!,
            sourcePort: 40000, destinationPort: 443,
            sequenceNumber: SeqNumber(0x1000_0000), acknowledgmentNumber: SeqNumber(0x2000_0000),
            flags: .ack, window: 501,
            options: [1, 1, 8, 10, 0x00, 0x10, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00]))
    }

    /// Rewrites both addresses of an IPv6 packet (incremental checksum), as a NAT would,
    /// swapping between two pairs so the packet stays the same on average.
    @inline(never)
    public static func rewriteV6Addresses(_ buffer: UnsafeMutableRawBufferPointer, flip: Bool) -> UInt16 {
        guard case .tcp(let p) = TCPPacket.parse(buffer) else { fatalError("not TCP") }
        p.updateSource(flip ? v6a : v6b)
        p.updateDestination(flip ? v6b : v6a)
        return p.tcp.checksum
    }

    static let v6a = IPAddress("fd00::1:2:3:4")!
    static let v6b = IPAddress("fd00:ffff::abcd")!

    // MARK: Checksum baselines

    /// Plain C: big-endian 16-bit words, one at a time (`cbaseline_sum16`).
    @inline(never)
    public static func cLoopSum(_ buffer: UnsafeRawBufferPointer) -> UInt16 {
        cbaseline_sum16(buffer.baseAddress, buffer.count)
    }

    /// The same plain loop written in Swift.
    @inline(never)
    public static func swiftWordLoopSum(_ buffer: UnsafeRawBufferPointer) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        let n = buffer.count
        while i + 1 < n {
            sum &+= UInt32(buffer[i]) << 8 | UInt32(buffer[i + 1])
            i += 2
        }
        if i < n { sum &+= UInt32(buffer[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) &+ (sum >> 16) }
        return UInt16(sum)
    }

    @inline(never)
    public static func fastSum(_ buffer: UnsafeRawBufferPointer) -> UInt16 { Checksum.sum(buffer) }

    @inline(never)
    public static func referenceSum(_ buffer: UnsafeRawBufferPointer) -> UInt16 { Checksum.referenceSum(buffer) }
}
