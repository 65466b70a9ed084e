/// TCP control flags (RFC 793, RFC 3168).
public struct TCPFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let fin = TCPFlags(rawValue: 0x01)
    public static let syn = TCPFlags(rawValue: 0x02)
    public static let rst = TCPFlags(rawValue: 0x04)
    public static let psh = TCPFlags(rawValue: 0x08)
    public static let ack = TCPFlags(rawValue: 0x10)
    public static let urg = TCPFlags(rawValue: 0x20)
    public static let ece = TCPFlags(rawValue: 0x40)
    public static let cwr = TCPFlags(rawValue: 0x80)

    public var description: String {
        let names: [(TCPFlags, String)] = [(.syn, "S"), (.fin, "F"), (.rst, "R"), (.psh, "P"),
                                           (.ack, "."), (.urg, "U"), (.ece, "E"), (.cwr, "W")]
        let s = names.filter { contains($0.0) }.map(\.1).joined()
        return s.isEmpty ? "none" : s
    }
}

/// A view of a TCP header and its segment over a buffer (RFC 793 / RFC 9293). `init?` checks
/// the data offset against the buffer, so accessors cannot fail. Setters change the bytes in
/// place; the `update*` variants also adjust the checksum field incrementally (RFC 1624),
/// which is right only when the field holds a complete checksum (see `ChecksumState`).
public struct TCPHeader {
    public enum Field {
        public static let sourcePort = 0
        public static let destinationPort = 2
        public static let sequence = 4
        public static let acknowledgment = 8
        public static let dataOffset = 12
        public static let flags = 13
        public static let window = 14
        public static let checksum = 16
        public static let urgentPointer = 18
        public static let options = 20
        public static let minimumLength = 20
        public static let maximumLength = 60
    }

    /// The segment: header, options and data.
    public let bytes: UnsafeMutableRawBufferPointer

    @inlinable
    public init?(_ segment: UnsafeMutableRawBufferPointer) {
        guard segment.count >= Field.minimumLength else { return nil }
        let off = Int(segment.u8(Field.dataOffset) >> 4) * 4
        guard off >= Field.minimumLength, off <= segment.count else { return nil }
        self.bytes = segment
    }

    @inlinable public var sourcePort: UInt16 {
        get { bytes.be16(Field.sourcePort) }
        nonmutating set { bytes.setBE16(Field.sourcePort, newValue) }
    }
    @inlinable public var destinationPort: UInt16 {
        get { bytes.be16(Field.destinationPort) }
        nonmutating set { bytes.setBE16(Field.destinationPort, newValue) }
    }
    @inlinable public var sequenceNumber: SeqNumber {
        get { SeqNumber(bytes.be32(Field.sequence)) }
        nonmutating set { bytes.setBE32(Field.sequence, newValue.rawValue) }
    }
    @inlinable public var acknowledgmentNumber: SeqNumber {
        get { SeqNumber(bytes.be32(Field.acknowledgment)) }
        nonmutating set { bytes.setBE32(Field.acknowledgment, newValue.rawValue) }
    }
    /// Header length in bytes (data offset * 4).
    @inlinable public var headerLength: Int { Int(bytes.u8(Field.dataOffset) >> 4) * 4 }
    /// The ECN nonce bit (RFC 3540, historic), kept as it is.
    @inlinable public var nonceSum: Bool { bytes.u8(Field.dataOffset) & 0x01 != 0 }
    @inlinable public var flags: TCPFlags {
        get { TCPFlags(rawValue: bytes.u8(Field.flags)) }
        nonmutating set { bytes.setU8(Field.flags, newValue.rawValue) }
    }
    @inlinable public var window: UInt16 {
        get { bytes.be16(Field.window) }
        nonmutating set { bytes.setBE16(Field.window, newValue) }
    }
    @inlinable public var checksum: UInt16 {
        get { bytes.be16(Field.checksum) }
        nonmutating set { bytes.setBE16(Field.checksum, newValue) }
    }
    @inlinable public var urgentPointer: UInt16 {
        get { bytes.be16(Field.urgentPointer) }
        nonmutating set { bytes.setBE16(Field.urgentPointer, newValue) }
    }

    /// The option bytes (between the fixed header and the data).
    @inlinable public var optionBytes: UnsafeMutableRawBufferPointer { bytes.slice(Field.options, headerLength) }
    @inlinable public var options: TCPOptions { TCPOptions(optionBytes) }
    /// The data carried by the segment.
    @inlinable public var payload: UnsafeMutableRawBufferPointer { bytes.slice(headerLength, bytes.count) }
    @inlinable public var payloadLength: Int { bytes.count - headerLength }
    /// Sequence space the segment occupies: data plus one for SYN and one for FIN.
    @inlinable public var sequenceLength: UInt32 {
        let f = flags
        return UInt32(payloadLength) + (f.contains(.syn) ? 1 : 0) + (f.contains(.fin) ? 1 : 0)
    }

    // MARK: In-place edits with incremental checksum update

    @inlinable public func updateSequenceNumber(_ value: SeqNumber) {
        checksum = Checksum.update(checksum, old: sequenceNumber.rawValue, new: value.rawValue)
        sequenceNumber = value
    }
    @inlinable public func updateAcknowledgmentNumber(_ value: SeqNumber) {
        checksum = Checksum.update(checksum, old: acknowledgmentNumber.rawValue, new: value.rawValue)
        acknowledgmentNumber = value
    }
    @inlinable public func updateWindow(_ value: UInt16) {
        checksum = Checksum.update(checksum, old: window, new: value)
        window = value
    }
    @inlinable public func updateSourcePort(_ value: UInt16) {
        checksum = Checksum.update(checksum, old: sourcePort, new: value)
        sourcePort = value
    }
    @inlinable public func updateDestinationPort(_ value: UInt16) {
        checksum = Checksum.update(checksum, old: destinationPort, new: value)
        destinationPort = value
    }
    /// Sets the flags byte; the checksum covers it as the low half of the word at offset 12.
    @inlinable public func updateFlags(_ value: TCPFlags) {
        let old = bytes.be16(Field.dataOffset)
        flags = value
        checksum = Checksum.update(checksum, old: old, new: bytes.be16(Field.dataOffset))
    }
    @inlinable public func updateUrgentPointer(_ value: UInt16) {
        checksum = Checksum.update(checksum, old: urgentPointer, new: value)
        urgentPointer = value
    }
    /// Takes the urgent mark off (the URG flag, the pointer zeroed): the urgent byte is then
    /// an ordinary byte of the stream (RFC 9293 3.8.5: the mark is advisory, the data in line).
    @inlinable public func clearUrgent() {
        updateFlags(flags.subtracting(.urg))
        updateUrgentPointer(0)
    }
    /// Adjusts the checksum field for a pseudo-header address change (an IPv4 address is one
    /// 32-bit word of the pseudo-header).
    @inlinable public func updateChecksumForPseudoHeader(old: UInt32, new: UInt32) {
        checksum = Checksum.update(checksum, old: old, new: new)
    }

    // MARK: Full checksum

    /// The complete checksum of this segment given the pseudo-header sum.
    @inlinable public func computeChecksum(pseudoHeader: Checksum.Accumulator) -> UInt16 {
        var acc = pseudoHeader
        let saved = checksum
        checksum = 0
        acc.add(bytes: UnsafeRawBufferPointer(bytes))
        checksum = saved
        return acc.checksum
    }
    /// Writes the complete checksum.
    @inlinable public func fillChecksum(pseudoHeader: Checksum.Accumulator) {
        checksum = 0
        var acc = pseudoHeader
        acc.add(bytes: UnsafeRawBufferPointer(bytes))
        checksum = acc.checksum
    }
    /// A segment whose checksum field is complete verifies to all ones.
    @inlinable public func checksumIsValid(pseudoHeader: Checksum.Accumulator) -> Bool {
        var acc = pseudoHeader
        acc.add(bytes: UnsafeRawBufferPointer(bytes))
        return acc.folded == 0xffff
    }
    /// Writes the pseudo-header-only ("partial") sum the kernel expects in a
    /// `CHECKSUM_PARTIAL` packet: the folded pseudo-header sum, not complemented.
    @inlinable public func fillPartialChecksum(pseudoHeader: Checksum.Accumulator) {
        checksum = pseudoHeader.folded
    }
}
