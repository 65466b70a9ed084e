/// Writes whole TCP/IP packets into a caller's buffer without allocating: what the engine
/// uses for the packets it builds on the per-packet path (handshake replay, released ACKs).
/// `TCPPacketSpec` is the allocating, value-typed counterpart for tests and tools.
public enum TCPSegmentWriter {
    /// The options a built segment carries: a SYN's block, or timestamps alone.
    public enum Options: Sendable {
        case none
        case syn(SynOptions)
        /// NOP, NOP, timestamps (the 12-byte block Linux puts on every segment). The engine
        /// never builds SACK blocks: it does not invent selective acknowledgements.
        case timestamps(TCPTimestamps)

        @inlinable var length: Int {
            switch self {
            case .none: return 0
            case .syn(let s): return s.encodedLength
            case .timestamps: return 12
            }
        }
    }

    /// Writes the packet and returns its length, or nil if `out` is too small or the addresses
    /// are of different families. Both checksums are complete.
    @inlinable
    public static func write(into out: UnsafeMutableRawBufferPointer,
                             source: IPAddress, destination: IPAddress,
                             sourcePort: UInt16, destinationPort: UInt16,
                             sequenceNumber: SeqNumber, acknowledgmentNumber: SeqNumber,
                             flags: TCPFlags, window: UInt16, options: Options,
                             ttl: UInt8 = 64, trafficClass: UInt8 = 0) -> Int? {
        guard let (buf, t) = layout(into: out, source: source, destination: destination,
                                    sourcePort: sourcePort, destinationPort: destinationPort,
                                    sequenceNumber: sequenceNumber, acknowledgmentNumber: acknowledgmentNumber,
                                    flags: flags, window: window, optionsLength: options.length, payloadLength: 0,
                                    ttl: ttl, trafficClass: trafficClass) else { return nil }
        let o = t.slice(TCPHeader.Field.options, TCPHeader.Field.minimumLength + options.length)
        switch options {
        case .none: break
        case .syn(let s): _ = s.encode(into: o)
        case .timestamps(let ts):
            o.setU8(0, TCPOptionKind.noOperation); o.setU8(1, TCPOptionKind.noOperation)
            o.setU8(2, TCPOptionKind.timestamps); o.setU8(3, 10)
            o.setBE32(4, ts.value); o.setBE32(8, ts.echo)
        }
        return finish(buf)
    }

    /// The general form (tests and tools, through `TCPPacketSpec`): options as raw bytes
    /// (padded with zeros, EOL, to a multiple of 4; at most 40), a payload, and the fields the
    /// engine never sets. Nil if `out` is too small or the packet cannot be encoded.
    public static func write(into out: UnsafeMutableRawBufferPointer,
                             source: IPAddress, destination: IPAddress,
                             sourcePort: UInt16, destinationPort: UInt16,
                             sequenceNumber: SeqNumber, acknowledgmentNumber: SeqNumber,
                             flags: TCPFlags, window: UInt16, optionBytes: UnsafeRawBufferPointer,
                             payload: UnsafeRawBufferPointer, urgentPointer: UInt16 = 0, ttl: UInt8 = 64,
                             identification: UInt16 = 0, dontFragment: Bool = true) -> Int? {
        guard optionBytes.count <= 40 else { return nil }
        let optionsLength = (optionBytes.count + 3) & ~3
        guard let (buf, t) = layout(into: out, source: source, destination: destination,
                                    sourcePort: sourcePort, destinationPort: destinationPort,
                                    sequenceNumber: sequenceNumber, acknowledgmentNumber: acknowledgmentNumber,
                                    flags: flags, window: window, optionsLength: optionsLength,
                                    payloadLength: payload.count, ttl: ttl,
                                    identification: identification, dontFragment: dontFragment) else { return nil }
        t.setBE16(TCPHeader.Field.urgentPointer, urgentPointer)
        if optionBytes.count > 0 {
            t.slice(TCPHeader.Field.options, TCPHeader.Field.options + optionBytes.count).copyMemory(from: optionBytes)
        }
        let headerLength = TCPHeader.Field.minimumLength + optionsLength
        if payload.count > 0 {
            t.slice(headerLength, headerLength + payload.count).copyMemory(from: payload)
        }
        return finish(buf)
    }

    /// The IP header and the TCP header's fixed part, zeros elsewhere; returns the packet and
    /// its TCP part. Nil if `out` is too small, the families differ or the length cannot be said.
    @usableFromInline
    static func layout(into out: UnsafeMutableRawBufferPointer, source: IPAddress, destination: IPAddress,
                       sourcePort: UInt16, destinationPort: UInt16,
                       sequenceNumber: SeqNumber, acknowledgmentNumber: SeqNumber,
                       flags: TCPFlags, window: UInt16, optionsLength: Int, payloadLength: Int,
                       ttl: UInt8, identification: UInt16 = 0, dontFragment: Bool = true, trafficClass: UInt8 = 0)
        -> (UnsafeMutableRawBufferPointer, UnsafeMutableRawBufferPointer)? {
        guard source.isIPv4 == destination.isIPv4 else { return nil }
        let v6 = !source.isIPv4
        let ipLen = v6 ? IPv6Header.Field.fixedLength : IPv4Header.Field.minimumLength
        let tcpLen = TCPHeader.Field.minimumLength + optionsLength
        let total = ipLen + tcpLen + payloadLength
        guard out.count >= total, total - (v6 ? ipLen : 0) <= 65535 else { return nil }
        let buf = out.slice(0, total)
        buf.initializeMemory(as: UInt8.self, repeating: 0)
        writeIPHeader(into: buf, source: source, destination: destination, protocolNumber: TCPPacket.tcpProtocolNumber,
                      ttl: ttl, identification: identification, dontFragment: dontFragment, trafficClass: trafficClass)
        let t = buf.slice(ipLen, total)
        t.setBE16(TCPHeader.Field.sourcePort, sourcePort)
        t.setBE16(TCPHeader.Field.destinationPort, destinationPort)
        t.setBE32(TCPHeader.Field.sequence, sequenceNumber.rawValue)
        t.setBE32(TCPHeader.Field.acknowledgment, acknowledgmentNumber.rawValue)
        t.setU8(TCPHeader.Field.dataOffset, UInt8(tcpLen / 4) << 4)
        t.setU8(TCPHeader.Field.flags, flags.rawValue)
        t.setBE16(TCPHeader.Field.window, window)
        return (buf, t)
    }

    /// The fixed IPv4 or IPv6 header (no options, no extension header) of a packet that fills
    /// `buf` (zeroed), its family the addresses': lengths from `buf.count`, the IPv4 header
    /// checksum left for `IPv4Header.fillChecksum`. `trafficClass`: the TOS byte or traffic
    /// class (DSCP and ECN).
    @usableFromInline
    static func writeIPHeader(into buf: UnsafeMutableRawBufferPointer, source: IPAddress, destination: IPAddress,
                              protocolNumber: UInt8, ttl: UInt8, identification: UInt16 = 0, dontFragment: Bool = true,
                              trafficClass: UInt8 = 0) {
        if !source.isIPv4 {
            buf.setBE32(0, 6 << 28 | UInt32(trafficClass) << 20)
            buf.setBE16(IPv6Header.Field.payloadLength, UInt16(buf.count - IPv6Header.Field.fixedLength))
            buf.setU8(IPv6Header.Field.nextHeader, protocolNumber)
            buf.setU8(IPv6Header.Field.hopLimit, ttl)
            buf.setIPv6Address(IPv6Header.Field.source, source)
            buf.setIPv6Address(IPv6Header.Field.destination, destination)
        } else {
            buf.setU8(0, 0x45)
            buf.setU8(IPv4Header.Field.tos, trafficClass)
            buf.setBE16(IPv4Header.Field.totalLength, UInt16(buf.count))
            buf.setBE16(IPv4Header.Field.identification, identification)
            buf.setBE16(IPv4Header.Field.flagsFragment, dontFragment ? 0x4000 : 0)
            buf.setU8(IPv4Header.Field.ttl, ttl)
            buf.setU8(IPv4Header.Field.proto, protocolNumber)
            buf.setBE32(IPv4Header.Field.source, source.ipv4Value)
            buf.setBE32(IPv4Header.Field.destination, destination.ipv4Value)
        }
    }

    /// Both checksums of a laid-out packet; its length.
    @usableFromInline
    static func finish(_ buf: UnsafeMutableRawBufferPointer) -> Int? {
        if let h = IPv4Header(buf) { h.fillChecksum() }
        guard let packet = TCPPacket(buf) else { return nil }
        packet.fillChecksum()
        return buf.count
    }
}
