/// A view of an IPv6 header and its extension-header chain over a packet buffer (RFC 8200).
/// `init?` walks the extension headers (hop-by-hop, routing, fragment, destination options,
/// AH) to the upper-layer header and checks every length on the way.
public struct IPv6Header {
    public enum Field {
        public static let versionClassFlow = 0
        public static let payloadLength = 4
        public static let nextHeader = 6
        public static let hopLimit = 7
        public static let source = 8
        public static let destination = 24
        public static let fixedLength = 40
    }

    public enum NextHeader {
        public static let hopByHop: UInt8 = 0
        public static let tcp: UInt8 = 6
        public static let udp: UInt8 = 17
        public static let routing: UInt8 = 43
        public static let fragment: UInt8 = 44
        public static let esp: UInt8 = 50
        public static let authentication: UInt8 = 51
        public static let icmpv6: UInt8 = 58
        public static let noNextHeader: UInt8 = 59
        public static let destinationOptions: UInt8 = 60
    }

    /// The whole packet, cut to 40 + payload length.
    public let bytes: UnsafeMutableRawBufferPointer
    /// Offset of the upper-layer header (after every extension header).
    public let upperLayerOffset: Int
    /// The upper-layer protocol (last Next Header value), or `noNextHeader`/`esp` when the
    /// chain cannot be followed further.
    public let upperLayerProtocol: UInt8
    /// The packet carries a fragment header that makes it a non-first or non-last fragment.
    /// The walk stops after the fragment header of a non-first fragment (what follows is
    /// data); `upperLayerOffset` and `upperLayerProtocol` then describe that data.
    public let isFragment: Bool

    /// At most this many extension headers are followed.
    public static let maximumExtensionHeaders = 8

    @inlinable
    public init?(_ buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count >= Field.fixedLength else { return nil }
        guard buffer.u8(0) >> 4 == 6 else { return nil }
        let total = Field.fixedLength + Int(buffer.be16(Field.payloadLength))
        // A payload length of 0 means a jumbogram (RFC 2675): not supported, not parsed.
        guard buffer.be16(Field.payloadLength) != 0 || buffer.count == Field.fixedLength else { return nil }
        guard total <= buffer.count else { return nil }
        let b = buffer.slice(0, total)
        var next = b.u8(Field.nextHeader)
        var offset = Field.fixedLength
        var fragment = false
        var hops = 0
        loop: while true {
            switch next {
            case NextHeader.hopByHop, NextHeader.routing, NextHeader.destinationOptions:
                guard offset + 8 <= total else { return nil }
                let len = (Int(b.u8(offset + 1)) + 1) * 8
                guard offset + len <= total else { return nil }
                next = b.u8(offset)
                offset += len
            case NextHeader.fragment:
                guard offset + 8 <= total else { return nil }
                let fo = b.be16(offset + 2)
                if fo & 0xfff9 != 0 { fragment = true }  // offset != 0 or M flag
                next = b.u8(offset)
                offset += 8
                // After a non-first fragment's header comes the middle of the original
                // payload, not more headers: stop here rather than read data as a chain.
                if fo & 0xfff8 != 0 { break loop }
            case NextHeader.authentication:
                guard offset + 8 <= total else { return nil }
                let len = (Int(b.u8(offset + 1)) + 2) * 4
                guard offset + len <= total else { return nil }
                next = b.u8(offset)
                offset += len
            default:
                break loop
            }
            hops += 1
            if hops > IPv6Header.maximumExtensionHeaders { return nil }
        }
        self.bytes = b
        self.upperLayerOffset = offset
        self.upperLayerProtocol = next
        self.isFragment = fragment
    }

    @inlinable public var totalLength: Int { bytes.count }
    @inlinable public var payloadLength: Int { Int(bytes.be16(Field.payloadLength)) }
    @inlinable public var trafficClass: UInt8 { UInt8(truncatingIfNeeded: bytes.be16(0) >> 4) }
    @inlinable public var flowLabel: UInt32 { bytes.be32(0) & 0x000f_ffff }
    /// Sets the traffic class (DSCP and ECN; no header checksum in IPv6, and the TCP
    /// pseudo-header does not cover it). It spans the low half of byte 0 and the high half of
    /// byte 1.
    @inlinable public func setTrafficClass(_ value: UInt8) {
        bytes.setU8(0, (bytes.u8(0) & 0xf0) | (value >> 4))
        bytes.setU8(1, (bytes.u8(1) & 0x0f) | (value << 4))
    }
    @inlinable public var hopLimit: UInt8 {
        get { bytes.u8(Field.hopLimit) }
        nonmutating set { bytes.setU8(Field.hopLimit, newValue) }
    }
    @inlinable public var nextHeader: UInt8 { bytes.u8(Field.nextHeader) }
    @inlinable public var source: IPAddress {
        get { bytes.ipv6Address(Field.source) }
        nonmutating set { bytes.setIPv6Address(Field.source, newValue) }
    }
    @inlinable public var destination: IPAddress {
        get { bytes.ipv6Address(Field.destination) }
        nonmutating set { bytes.setIPv6Address(Field.destination, newValue) }
    }

    /// The upper-layer header and its data.
    @inlinable public var upperLayer: UnsafeMutableRawBufferPointer { bytes.slice(upperLayerOffset, bytes.count) }

    /// The pseudo-header sum for an upper-layer packet of `length` bytes (RFC 8200 section 8.1).
    @inlinable public func pseudoHeaderSum(length: Int, protocolNumber: UInt8) -> Checksum.Accumulator {
        var acc = Checksum.Accumulator()
        acc.add(bytes: UnsafeRawBufferPointer(bytes.slice(Field.source, Field.destination + 16)))
        acc.add(UInt32(length))
        acc.add(UInt16(protocolNumber))
        return acc
    }
}
