/// A TCP/IP packet as a value (smoltcp's "Repr"): what the tests and tools build packets
/// from. `emit` writes a complete packet with correct checksums, through `TCPSegmentWriter`.
public struct TCPPacketSpec: Equatable, Sendable {
    public var source: IPAddress
    public var destination: IPAddress
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var sequenceNumber: SeqNumber
    public var acknowledgmentNumber: SeqNumber
    public var flags: TCPFlags
    public var window: UInt16
    public var urgentPointer: UInt16 = 0
    /// Raw option bytes; `emit` pads them with zeros (EOL) to a multiple of 4.
    public var options: [UInt8] = []
    public var payload: [UInt8] = []
    public var ttl: UInt8 = 64
    public var identification: UInt16 = 0
    public var dontFragment = true

    public init(source: IPAddress, destination: IPAddress, sourcePort: UInt16, destinationPort: UInt16,
                sequenceNumber: SeqNumber, acknowledgmentNumber: SeqNumber = SeqNumber(0),
                flags: TCPFlags, window: UInt16 = 65535, options: [UInt8] = [], payload: [UInt8] = []) {
        self.source = source
        self.destination = destination
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.sequenceNumber = sequenceNumber
        self.acknowledgmentNumber = acknowledgmentNumber
        self.flags = flags
        self.window = window
        self.options = options
        self.payload = payload
    }

    /// Sets the options to an encoded SYN option block.
    public mutating func setSynOptions(_ syn: SynOptions) {
        var out = [UInt8](repeating: 0, count: syn.encodedLength)
        out.withUnsafeMutableBytes { _ = syn.encode(into: $0) }
        options = out
    }

    public var isIPv6: Bool { !source.isIPv4 }
    public var paddedOptionsLength: Int { (options.count + 3) & ~3 }
    public var ipHeaderLength: Int { isIPv6 ? IPv6Header.Field.fixedLength : IPv4Header.Field.minimumLength }
    public var tcpHeaderLength: Int { TCPHeader.Field.minimumLength + paddedOptionsLength }
    public var totalLength: Int { ipHeaderLength + tcpHeaderLength + payload.count }

    /// Writes the packet into `out` and returns its length; nil if `out` is too small or the
    /// spec cannot be encoded (options over 40 bytes, mixed families, too long). The one
    /// emitter (`TCPSegmentWriter`) does the writing.
    @discardableResult
    public func emit(into out: UnsafeMutableRawBufferPointer) -> Int? {
        options.withUnsafeBytes { o in
            payload.withUnsafeBytes { p in
                TCPSegmentWriter.write(into: out, source: source, destination: destination,
                                       sourcePort: sourcePort, destinationPort: destinationPort,
                                       sequenceNumber: sequenceNumber, acknowledgmentNumber: acknowledgmentNumber,
                                       flags: flags, window: window, optionBytes: o, payload: p,
                                       urgentPointer: urgentPointer, ttl: ttl, identification: identification,
                                       dontFragment: dontFragment)
            }
        }
    }

    /// The packet as a byte array.
    public func bytes() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: totalLength)
        let n = out.withUnsafeMutableBytes { emit(into: $0) }
        precondition(n == out.count, "TCPPacketSpec cannot be encoded")
        return out
    }

    /// Reads a packet back into a spec (tests, tracing). Nil if it is not a TCP packet.
    public init?(parsing buffer: UnsafeMutableRawBufferPointer) {
        guard let p = TCPPacket(buffer) else { return nil }
        self.init(source: p.source, destination: p.destination, sourcePort: p.tcp.sourcePort,
                  destinationPort: p.tcp.destinationPort, sequenceNumber: p.tcp.sequenceNumber,
                  acknowledgmentNumber: p.tcp.acknowledgmentNumber, flags: p.tcp.flags,
                  window: p.tcp.window, options: Array(p.tcp.optionBytes), payload: Array(p.tcp.payload))
        urgentPointer = p.tcp.urgentPointer
        switch p.ip {
        case .v4(let h):
            ttl = h.ttl
            identification = h.identification
            dontFragment = h.dontFragment
        case .v6(let h):
            ttl = h.hopLimit
        }
    }
}

extension TCPPacket {
    /// Rebuilds the option block of a SYN or SYN-ACK: writes into `out` a copy of this packet
    /// whose options are `options` (header length, IP lengths and both checksums updated) and
    /// returns the new length. IPv6 extension headers are kept. Nil if `out` is too small, or
    /// if the copy would be longer than the IP length field can say.
    public func rebuildingSynOptions(_ options: SynOptions, into out: UnsafeMutableRawBufferPointer) -> Int? {
        let ipLen: Int
        let maximumTotal: Int
        switch ip {
        case .v4(let h):
            ipLen = h.headerLength
            maximumTotal = Int(UInt16.max)
        case .v6(let h):
            ipLen = h.upperLayerOffset
            maximumTotal = IPv6Header.Field.fixedLength + Int(UInt16.max)
        }
        let newTCPHeader = TCPHeader.Field.minimumLength + options.encodedLength
        let payloadLen = tcp.payloadLength
        let total = ipLen + newTCPHeader + payloadLen
        guard out.count >= total, total <= maximumTotal else { return nil }
        let src = bytes
        out.copyMemory(from: UnsafeRawBufferPointer(src.slice(0, ipLen)))
        out.slice(ipLen, ipLen + TCPHeader.Field.minimumLength)
            .copyMemory(from: UnsafeRawBufferPointer(tcp.bytes.slice(0, TCPHeader.Field.minimumLength)))
        _ = options.encode(into: out.slice(ipLen + TCPHeader.Field.minimumLength, ipLen + newTCPHeader))
        if payloadLen > 0 {
            out.slice(ipLen + newTCPHeader, total).copyMemory(from: UnsafeRawBufferPointer(tcp.payload))
        }
        let o = out.slice(0, total)
        o.setU8(ipLen + TCPHeader.Field.dataOffset,
                (UInt8(newTCPHeader / 4) << 4) | (o.u8(ipLen + TCPHeader.Field.dataOffset) & 0x0f))
        switch ip {
        case .v4:
            o.setBE16(IPv4Header.Field.totalLength, UInt16(total))
            guard let h = IPv4Header(o) else { return nil }
            h.fillChecksum()
        case .v6:
            o.setBE16(IPv6Header.Field.payloadLength, UInt16(total - IPv6Header.Field.fixedLength))
        }
        guard let rebuilt = TCPPacket(o) else { return nil }
        rebuilt.fillChecksum()
        return total
    }
}
