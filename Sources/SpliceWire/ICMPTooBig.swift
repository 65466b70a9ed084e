/// An ICMP "fragmentation needed and DF set" (type 3 code 4: RFC 792, RFC 1191) or ICMPv6
/// "packet too big" (type 2: RFC 4443, RFC 8201) about a TCP segment: what a hop sends back to
/// the sender of a packet it could not forward whole, the signal of path MTU discovery. A view
/// over the whole packet, which names the quoted segment's addresses, ports and sequence number
/// and can rewrite that number (then `fillChecksum`). `init?` checks every length; the quoted
/// packet may be cut anywhere past its TCP header's first 8 bytes (ports and sequence number),
/// as a hop quotes only the beginning of what it dropped.
public struct ICMPTooBig {
    public static let icmpProtocolNumber: UInt8 = 1
    public static let icmpv6ProtocolNumber: UInt8 = 58

    /// The whole packet, cut to its IP length.
    public let bytes: UnsafeMutableRawBufferPointer
    public let isIPv6: Bool
    @usableFromInline let icmpOffset: Int
    @usableFromInline let innerTCPOffset: Int
    /// The quoted packet's addresses: its source is the sender the error is for.
    public let innerSource: IPAddress
    public let innerDestination: IPAddress
    /// The error's own destination (where it is going).
    public let destination: IPAddress

    public init?(_ buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count >= 1 else { return nil }
        let whole: UnsafeMutableRawBufferPointer
        let icmp: Int
        switch buffer.u8(0) >> 4 {
        case 4:
            guard let h = IPv4Header(buffer), h.protocolNumber == ICMPTooBig.icmpProtocolNumber, !h.isFragment else { return nil }
            whole = h.bytes
            icmp = h.headerLength
            destination = h.destination
            guard whole.count >= icmp + 8, whole.u8(icmp) == 3, whole.u8(icmp + 1) == 4 else { return nil }
            isIPv6 = false
        case 6:
            guard let h = IPv6Header(buffer), h.upperLayerProtocol == ICMPTooBig.icmpv6ProtocolNumber, !h.isFragment else { return nil }
            whole = h.bytes
            icmp = h.upperLayerOffset
            destination = h.destination
            guard whole.count >= icmp + 8, whole.u8(icmp) == 2, whole.u8(icmp + 1) == 0 else { return nil }
            isIPv6 = true
        default:
            return nil
        }
        // The quoted packet: the same family, TCP right after its fixed header (IPv4 options
        // allowed, no IPv6 extension header), the first fragment or none.
        let inner = icmp + 8
        let tcp: Int
        if isIPv6 {
            guard whole.count >= inner + IPv6Header.Field.fixedLength, whole.u8(inner) >> 4 == 6,
                  whole.u8(inner + IPv6Header.Field.nextHeader) == TCPPacket.tcpProtocolNumber else { return nil }
            innerSource = whole.ipv6Address(inner + IPv6Header.Field.source)
            innerDestination = whole.ipv6Address(inner + IPv6Header.Field.destination)
            tcp = inner + IPv6Header.Field.fixedLength
        } else {
            guard whole.count >= inner + IPv4Header.Field.minimumLength, whole.u8(inner) >> 4 == 4 else { return nil }
            let ihl = Int(whole.u8(inner) & 0x0f) * 4
            guard ihl >= IPv4Header.Field.minimumLength, whole.count >= inner + ihl,
                  whole.u8(inner + IPv4Header.Field.proto) == TCPPacket.tcpProtocolNumber,
                  whole.be16(inner + IPv4Header.Field.flagsFragment) & 0x1fff == 0 else { return nil }
            innerSource = IPAddress(ipv4: whole.be32(inner + IPv4Header.Field.source))
            innerDestination = IPAddress(ipv4: whole.be32(inner + IPv4Header.Field.destination))
            tcp = inner + ihl
        }
        guard whole.count >= tcp + 8 else { return nil }
        bytes = whole
        icmpOffset = icmp
        innerTCPOffset = tcp
    }

    @inlinable public var innerSourcePort: UInt16 { bytes.be16(innerTCPOffset) }
    @inlinable public var innerDestinationPort: UInt16 { bytes.be16(innerTCPOffset + 2) }
    /// The quoted segment's sequence number (the receiver of the error checks that it is one it
    /// sent and has not seen acknowledged). Setting it updates the ICMP checksum incrementally
    /// (RFC 1624): an error that arrived with a wrong checksum keeps it, and its receiver drops
    /// it as it would have.
    @inlinable public var innerSequenceNumber: SeqNumber {
        get { SeqNumber(bytes.be32(innerTCPOffset + 4)) }
        nonmutating set {
            let field = icmpOffset + 2
            bytes.setBE16(field, Checksum.update(bytes.be16(field), old: bytes.be32(innerTCPOffset + 4), new: newValue.rawValue))
            bytes.setBE32(innerTCPOffset + 4, newValue.rawValue)
        }
    }
    /// The MTU of the next hop the error reports (the low 16 bits of the ICMP header's second
    /// word for IPv4, that whole word for IPv6; 0 from an old IPv4 router that does not say).
    @inlinable public var mtu: Int {
        isIPv6 ? Int(bytes.be32(icmpOffset + 4)) : Int(bytes.be16(icmpOffset + 6))
    }

    /// Computes and writes the ICMP checksum (ICMPv6's over its pseudo-header as well): for a
    /// message built here (`build`); a rewrite updates it as it goes.
    public func fillChecksum() {
        let message = bytes.slice(icmpOffset, bytes.count)
        message.setBE16(2, 0)
        var acc = Checksum.Accumulator()
        if isIPv6 {
            acc.add(bytes: UnsafeRawBufferPointer(bytes.slice(IPv6Header.Field.source, IPv6Header.Field.destination + 16)))
            acc.add(UInt32(message.count))
            acc.add(UInt16(ICMPTooBig.icmpv6ProtocolNumber))
        }
        acc.add(bytes: UnsafeRawBufferPointer(message))
        message.setBE16(2, acc.checksum)
    }
}

extension ICMPTooBig {
    /// A "too big" error as a hop builds it (for tests and tools, like `TCPPacketSpec`): from
    /// `hop` to the source of `packet` (a whole IPv4 or IPv6 packet, the error's family), quoting
    /// its first `quote` bytes and reporting `mtu`; complete checksums. Nil when `packet` is not
    /// an IP packet of `hop`'s family.
    public static func build(hop: IPAddress, mtu: Int, quoting packet: [UInt8], quote: Int = 548) -> [UInt8]? {
        let quoted = Array(packet.prefix(quote))
        let v6 = !hop.isIPv4
        let ipLength = v6 ? IPv6Header.Field.fixedLength : IPv4Header.Field.minimumLength
        guard quoted.count >= ipLength, quoted[0] >> 4 == (v6 ? 6 : 4) else { return nil }
        var out = [UInt8](repeating: 0, count: ipLength + 8 + quoted.count)
        out.withUnsafeMutableBytes { b in
            let q = UnsafeMutableRawBufferPointer(rebasing: b[(ipLength + 8)...])
            quoted.withUnsafeBytes { q.copyMemory(from: $0) }
            // To the quoted packet's source, as a hop sends it.
            let to = v6 ? q.ipv6Address(IPv6Header.Field.source) : IPAddress(ipv4: q.be32(IPv4Header.Field.source))
            TCPSegmentWriter.writeIPHeader(into: b, source: hop, destination: to,
                                           protocolNumber: v6 ? icmpv6ProtocolNumber : icmpProtocolNumber, ttl: 64)
            IPv4Header(b)?.fillChecksum()
            if v6 {
                b.setU8(ipLength, 2)
                b.setBE32(ipLength + 4, UInt32(mtu))
            } else {
                b.setU8(ipLength, 3)
                b.setU8(ipLength + 1, 4)
                b.setBE16(ipLength + 6, UInt16(mtu))
            }
            ICMPTooBig(b)?.fillChecksum()
        }
        return out
    }
}
