/// A view of an IPv4 header over a packet buffer (RFC 791). Built only through `init?`, which
/// checks every length, so its accessors cannot fail. Setters change the bytes in place; the
/// `update*` variants keep the header checksum right incrementally (RFC 1624).
public struct IPv4Header {
    public enum Field {
        public static let versionIHL = 0
        public static let tos = 1
        public static let totalLength = 2
        public static let identification = 4
        public static let flagsFragment = 6
        public static let ttl = 8
        public static let proto = 9
        public static let checksum = 10
        public static let source = 12
        public static let destination = 16
        public static let minimumLength = 20
    }

    /// The whole packet, cut to the header's total length.
    public let bytes: UnsafeMutableRawBufferPointer

    /// Checks version, header length and total length against the buffer. Bytes after the
    /// total length (link padding) are not part of the packet.
    @inlinable
    public init?(_ buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count >= Field.minimumLength else { return nil }
        let vihl = buffer.u8(Field.versionIHL)
        guard vihl >> 4 == 4 else { return nil }
        let ihl = Int(vihl & 0x0f) * 4
        guard ihl >= Field.minimumLength else { return nil }
        let total = Int(buffer.be16(Field.totalLength))
        guard total >= ihl, total <= buffer.count else { return nil }
        self.bytes = buffer.slice(0, total)
    }

    @inlinable public var headerLength: Int { Int(bytes.u8(Field.versionIHL) & 0x0f) * 4 }
    @inlinable public var totalLength: Int { bytes.count }
    @inlinable public var tos: UInt8 {
        get { bytes.u8(Field.tos) }
        nonmutating set { bytes.setU8(Field.tos, newValue) }
    }
    @inlinable public var identification: UInt16 {
        get { bytes.be16(Field.identification) }
        nonmutating set { bytes.setBE16(Field.identification, newValue) }
    }
    @inlinable public var dontFragment: Bool { bytes.be16(Field.flagsFragment) & 0x4000 != 0 }
    @inlinable public var moreFragments: Bool { bytes.be16(Field.flagsFragment) & 0x2000 != 0 }
    @inlinable public var fragmentOffset: Int { Int(bytes.be16(Field.flagsFragment) & 0x1fff) * 8 }
    /// A fragment of a larger datagram (not the whole of one).
    @inlinable public var isFragment: Bool { bytes.be16(Field.flagsFragment) & 0x3fff != 0 }
    @inlinable public var ttl: UInt8 {
        get { bytes.u8(Field.ttl) }
        nonmutating set { bytes.setU8(Field.ttl, newValue) }
    }
    @inlinable public var protocolNumber: UInt8 {
        get { bytes.u8(Field.proto) }
        nonmutating set { bytes.setU8(Field.proto, newValue) }
    }
    @inlinable public var checksum: UInt16 {
        get { bytes.be16(Field.checksum) }
        nonmutating set { bytes.setBE16(Field.checksum, newValue) }
    }
    @inlinable public var sourceValue: UInt32 {
        get { bytes.be32(Field.source) }
        nonmutating set { bytes.setBE32(Field.source, newValue) }
    }
    @inlinable public var destinationValue: UInt32 {
        get { bytes.be32(Field.destination) }
        nonmutating set { bytes.setBE32(Field.destination, newValue) }
    }
    @inlinable public var source: IPAddress { IPAddress(ipv4: sourceValue) }
    @inlinable public var destination: IPAddress { IPAddress(ipv4: destinationValue) }

    /// Options and payload after the fixed header.
    @inlinable public var payload: UnsafeMutableRawBufferPointer { bytes.slice(headerLength, bytes.count) }

    /// Sets the source address and updates the header checksum incrementally.
    @inlinable public func updateSource(_ value: UInt32) {
        checksum = Checksum.update(checksum, old: sourceValue, new: value)
        sourceValue = value
    }
    /// Sets the destination address and updates the header checksum incrementally.
    @inlinable public func updateDestination(_ value: UInt32) {
        checksum = Checksum.update(checksum, old: destinationValue, new: value)
        destinationValue = value
    }
    /// Sets the TTL and updates the header checksum incrementally.
    @inlinable public func updateTTL(_ value: UInt8) {
        let oldWord = bytes.be16(Field.ttl)
        ttl = value
        checksum = Checksum.update(checksum, old: oldWord, new: bytes.be16(Field.ttl))
    }

    /// Sets the TOS byte (DSCP and ECN, RFC 2474 and 3168) and updates the header checksum
    /// incrementally.
    @inlinable public func updateTOS(_ value: UInt8) {
        let oldWord = bytes.be16(Field.versionIHL)
        tos = value
        checksum = Checksum.update(checksum, old: oldWord, new: bytes.be16(Field.versionIHL))
    }

    /// Recomputes the header checksum from scratch.
    @inlinable public func fillChecksum() {
        checksum = 0
        checksum = ~Checksum.sum(bytes.slice(0, headerLength))
    }
    @inlinable public var checksumIsValid: Bool { Checksum.sum(bytes.slice(0, headerLength)) == 0xffff }

    /// The pseudo-header sum for an upper-layer segment of `length` bytes (RFC 793).
    @inlinable public func pseudoHeaderSum(length: Int) -> Checksum.Accumulator {
        var acc = Checksum.Accumulator()
        acc.add(sourceValue)
        acc.add(destinationValue)
        acc.add(UInt16(protocolNumber))
        acc.add(UInt16(truncatingIfNeeded: length))
        return acc
    }
}
