/// The network header in front of a TCP segment.
public enum IPHeader {
    case v4(IPv4Header)
    case v6(IPv6Header)
}

/// An IPv4 or IPv6 packet carrying a whole TCP segment: the view the engine works on.
/// `parse` never traps, whatever the bytes; it says why a buffer is not such a packet.
public struct TCPPacket {
    public let ip: IPHeader
    public let tcp: TCPHeader

    public enum ParseResult {
        case tcp(TCPPacket)
        /// A well-formed IP packet of another protocol.
        case notTCP
        /// An IP fragment: its TCP header (if any) cannot be trusted on its own.
        case fragment
        /// Not a well-formed IPv4/IPv6 + TCP packet (truncated, bad lengths, bad offsets).
        case malformed
    }

    public static let tcpProtocolNumber: UInt8 = 6

    @inlinable
    public static func parse(_ buffer: UnsafeMutableRawBufferPointer) -> ParseResult {
        guard buffer.count >= 1 else { return .malformed }
        switch buffer.u8(0) >> 4 {
        case 4:
            guard let h = IPv4Header(buffer) else { return .malformed }
            guard h.protocolNumber == tcpProtocolNumber else { return .notTCP }
            guard !h.isFragment else { return .fragment }
            guard let t = TCPHeader(h.payload) else { return .malformed }
            return .tcp(TCPPacket(ip: .v4(h), tcp: t))
        case 6:
            guard let h = IPv6Header(buffer) else { return .malformed }
            guard !h.isFragment else { return .fragment }
            guard h.upperLayerProtocol == tcpProtocolNumber else { return .notTCP }
            guard let t = TCPHeader(h.upperLayer) else { return .malformed }
            return .tcp(TCPPacket(ip: .v6(h), tcp: t))
        default:
            return .malformed
        }
    }

    /// The length the IP header of `bytes` gives its packet (IPv4 total length; IPv6 fixed
    /// header plus payload length), for a copy of only its first bytes (a logged packet's
    /// headers); nil when it cannot say (too short, another version, an IPv6 jumbogram).
    public static func declaredLength(_ bytes: UnsafeMutableRawBufferPointer) -> Int? {
        guard bytes.count >= 1 else { return nil }
        switch bytes.u8(0) >> 4 {
        case 4:
            guard bytes.count >= IPv4Header.Field.minimumLength else { return nil }
            let total = Int(bytes.be16(IPv4Header.Field.totalLength))
            return total >= IPv4Header.Field.minimumLength ? total : nil
        case 6:
            guard bytes.count >= IPv6Header.Field.fixedLength else { return nil }
            let payload = Int(bytes.be16(IPv6Header.Field.payloadLength))
            return payload > 0 ? IPv6Header.Field.fixedLength + payload : nil
        default:
            return nil
        }
    }

    @inlinable public init(ip: IPHeader, tcp: TCPHeader) {
        self.ip = ip
        self.tcp = tcp
    }

    /// A packet view, or nil if the buffer is not a whole TCP packet.
    @inlinable public init?(_ buffer: UnsafeMutableRawBufferPointer) {
        guard case .tcp(let p) = TCPPacket.parse(buffer) else { return nil }
        self = p
    }

    /// The whole IP packet.
    @inlinable public var bytes: UnsafeMutableRawBufferPointer {
        switch ip {
        case .v4(let h): return h.bytes
        case .v6(let h): return h.bytes
        }
    }
    @inlinable public var isIPv6: Bool { if case .v6 = ip { return true } else { return false } }
    @inlinable public var source: IPAddress {
        switch ip {
        case .v4(let h): return h.source
        case .v6(let h): return h.source
        }
    }
    @inlinable public var destination: IPAddress {
        switch ip {
        case .v4(let h): return h.destination
        case .v6(let h): return h.destination
        }
    }
    @inlinable public var segmentLength: Int { tcp.bytes.count }
    /// The IPv4 TOS byte or the IPv6 traffic class: DSCP in the high six bits, ECN in the low
    /// two (RFC 2474, 3168).
    @inlinable public var trafficClass: UInt8 {
        switch ip {
        case .v4(let h): return h.tos
        case .v6(let h): return h.trafficClass
        }
    }
    /// Sets the TOS byte or traffic class (IPv4: the header checksum kept right).
    @inlinable public func updateTrafficClass(_ value: UInt8) {
        switch ip {
        case .v4(let h): h.updateTOS(value)
        case .v6(let h): h.setTrafficClass(value)
        }
    }
    /// The ECN field (`ECN`).
    @inlinable public var ecn: UInt8 { trafficClass & ECN.mask }
    @inlinable public func updateECN(_ value: UInt8) {
        updateTrafficClass((trafficClass & ~ECN.mask) | (value & ECN.mask))
    }
    /// The DSCP field, as its 6-bit value (46 for EF).
    @inlinable public var dscp: UInt8 { trafficClass >> 2 }
    @inlinable public func updateDSCP(_ value: UInt8) {
        updateTrafficClass((value << 2) | (trafficClass & ECN.mask))
    }

    /// The pseudo-header sum for this packet's TCP segment.
    @inlinable public var pseudoHeaderSum: Checksum.Accumulator {
        switch ip {
        case .v4(let h): return h.pseudoHeaderSum(length: tcp.bytes.count)
        case .v6(let h): return h.pseudoHeaderSum(length: tcp.bytes.count, protocolNumber: TCPPacket.tcpProtocolNumber)
        }
    }

    /// Whether the TCP checksum field is a complete, correct checksum.
    @inlinable public var checksumIsValid: Bool { tcp.checksumIsValid(pseudoHeader: pseudoHeaderSum) }
    /// Whether the TCP checksum field holds only the pseudo-header sum (`CHECKSUM_PARTIAL`).
    @inlinable public var checksumIsPartial: Bool { tcp.checksum == pseudoHeaderSum.folded }

    /// Computes and writes the complete TCP checksum.
    @inlinable public func fillChecksum() { tcp.fillChecksum(pseudoHeader: pseudoHeaderSum) }
    /// Writes the pseudo-header-only sum (for a packet the kernel will finish).
    @inlinable public func fillPartialChecksum() { tcp.fillPartialChecksum(pseudoHeader: pseudoHeaderSum) }

    /// Rewrites the source address, keeping the IPv4 header checksum and the TCP checksum
    /// right incrementally. `partial` says the TCP field holds a pseudo-header-only sum.
    @inlinable
    public func updateSource(_ address: IPAddress, partial: Bool = false) {
        switch ip {
        case .v4(let h):
            precondition(address.isIPv4, "IPv4 packet, IPv6 address")
            let old = h.sourceValue, new = address.ipv4Value
            h.updateSource(new)
            adjustTCPChecksum(old: old, new: new, partial: partial)
        case .v6(let h):
            precondition(!address.isIPv4, "IPv6 packet, IPv4 address")
            let old = h.source
            h.source = address
            adjustTCPChecksum(old: old, new: address, partial: partial)
        }
    }

    @inlinable
    public func updateDestination(_ address: IPAddress, partial: Bool = false) {
        switch ip {
        case .v4(let h):
            precondition(address.isIPv4, "IPv4 packet, IPv6 address")
            let old = h.destinationValue, new = address.ipv4Value
            h.updateDestination(new)
            adjustTCPChecksum(old: old, new: new, partial: partial)
        case .v6(let h):
            precondition(!address.isIPv4, "IPv6 packet, IPv4 address")
            let old = h.destination
            h.destination = address
            adjustTCPChecksum(old: old, new: address, partial: partial)
        }
    }

    @inlinable func adjustTCPChecksum(old: UInt32, new: UInt32, partial: Bool) {
        if partial {
            var c = tcp.checksum
            c = Checksum.updatePartial(c, old: UInt16(old >> 16), new: UInt16(new >> 16))
            c = Checksum.updatePartial(c, old: UInt16(old & 0xffff), new: UInt16(new & 0xffff))
            tcp.checksum = c
        } else {
            tcp.updateChecksumForPseudoHeader(old: old, new: new)
        }
    }

    @inlinable func adjustTCPChecksum(old: IPAddress, new: IPAddress, partial: Bool) {
        adjustTCPChecksum(old: UInt32(truncatingIfNeeded: old.high >> 32), new: UInt32(truncatingIfNeeded: new.high >> 32), partial: partial)
        adjustTCPChecksum(old: UInt32(truncatingIfNeeded: old.high), new: UInt32(truncatingIfNeeded: new.high), partial: partial)
        adjustTCPChecksum(old: UInt32(truncatingIfNeeded: old.low >> 32), new: UInt32(truncatingIfNeeded: new.low >> 32), partial: partial)
        adjustTCPChecksum(old: UInt32(truncatingIfNeeded: old.low), new: UInt32(truncatingIfNeeded: new.low), partial: partial)
    }
}
