/// TCP option kinds tcpsplice understands (RFC 793, RFC 7323, RFC 2018), and the two that
/// sign a segment (RFC 2385, RFC 5925), which it only recognises.
public enum TCPOptionKind {
    public static let endOfList: UInt8 = 0
    public static let noOperation: UInt8 = 1
    public static let maximumSegmentSize: UInt8 = 2
    public static let windowScale: UInt8 = 3
    public static let sackPermitted: UInt8 = 4
    public static let sack: UInt8 = 5
    public static let timestamps: UInt8 = 8
    /// TCP-MD5 signature (RFC 2385), as BGP sessions use.
    public static let md5Signature: UInt8 = 19
    /// TCP Authentication Option (RFC 5925), MD5's successor.
    public static let authentication: UInt8 = 29
}

/// One option as it sits in the option block: its kind, where it starts (offset in the option
/// block) and its length in bytes (1 for EOL and NOP).
public struct TCPOption: Equatable, Sendable {
    public let kind: UInt8
    public let offset: Int
    public let length: Int

    @inlinable public init(kind: UInt8, offset: Int, length: Int) {
        self.kind = kind
        self.offset = offset
        self.length = length
    }

    /// The option's meaning. Known kinds with the wrong length are `.unknown` (kept as they
    /// are, and ignored, as Linux does).
    public enum Value: Equatable, Sendable {
        case endOfList
        case noOperation
        case maximumSegmentSize(UInt16)
        case windowScale(UInt8)
        case sackPermitted
        /// `count` blocks of (left, right) edges follow the two header bytes.
        case sack(count: Int)
        case timestamps(value: UInt32, echo: UInt32)
        case unknown(kind: UInt8, length: Int)
    }
}

/// The option block of a TCP header, read without copying. Iterating stops at EOL or at the
/// first malformed option (a length byte missing, below 2, or past the block), which sets
/// `malformed`; like Linux, nothing after a malformed option is interpreted.
public struct TCPOptions: Sequence {
    public let bytes: UnsafeMutableRawBufferPointer

    @inlinable public init(_ bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    public struct Iterator: IteratorProtocol {
        @usableFromInline let bytes: UnsafeMutableRawBufferPointer
        @usableFromInline var offset = 0
        /// Set when iteration stopped on a malformed option.
        public var malformed = false

        @inlinable init(_ bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

        @inlinable
        public mutating func next() -> TCPOption? {
            let n = bytes.count
            guard offset < n else { return nil }
            let kind = bytes.u8(offset)
            switch kind {
            case TCPOptionKind.endOfList:
                let o = TCPOption(kind: kind, offset: offset, length: 1)
                offset = n   // nothing after EOL is an option
                return o
            case TCPOptionKind.noOperation:
                let o = TCPOption(kind: kind, offset: offset, length: 1)
                offset += 1
                return o
            default:
                guard offset + 1 < n else { malformed = true; offset = n; return nil }
                let len = Int(bytes.u8(offset + 1))
                guard len >= 2, offset + len <= n else { malformed = true; offset = n; return nil }
                let o = TCPOption(kind: kind, offset: offset, length: len)
                offset += len
                return o
            }
        }
    }

    @inlinable public func makeIterator() -> Iterator { Iterator(bytes) }

    /// The meaning of `option`, which must have come from this block.
    @inlinable
    public func value(of option: TCPOption) -> TCPOption.Value {
        let o = option.offset
        switch (option.kind, option.length) {
        case (TCPOptionKind.endOfList, _): return .endOfList
        case (TCPOptionKind.noOperation, _): return .noOperation
        case (TCPOptionKind.maximumSegmentSize, 4): return .maximumSegmentSize(bytes.be16(o + 2))
        case (TCPOptionKind.windowScale, 3): return .windowScale(bytes.u8(o + 2))
        case (TCPOptionKind.sackPermitted, 2): return .sackPermitted
        case (TCPOptionKind.sack, let len) where len >= 10 && (len - 2) % 8 == 0:
            return .sack(count: (len - 2) / 8)
        case (TCPOptionKind.timestamps, 10):
            return .timestamps(value: bytes.be32(o + 2), echo: bytes.be32(o + 6))
        default: return .unknown(kind: option.kind, length: option.length)
        }
    }

    /// The first option of a given kind with a well-formed length, if any.
    @inlinable
    public func first(kind: UInt8) -> TCPOption? {
        for opt in self where opt.kind == kind {
            if case .unknown = value(of: opt) { continue }
            return opt
        }
        return nil
    }

    /// The i-th SACK block (left, right edges) of a SACK option.
    @inlinable
    public func sackBlock(_ option: TCPOption, _ index: Int) -> (left: SeqNumber, right: SeqNumber) {
        let o = option.offset + 2 + index * 8
        return (SeqNumber(bytes.be32(o)), SeqNumber(bytes.be32(o + 4)))
    }

    /// What a SYN or SYN-ACK negotiates, plus whether the block was malformed.
    @inlinable
    public var summary: TCPOptionSummary {
        var s = TCPOptionSummary()
        var it = makeIterator()
        while let opt = it.next() {
            switch value(of: opt) {
            case .maximumSegmentSize(let m): s.maximumSegmentSize = m
            case .windowScale(let w): s.windowScale = w
            case .sackPermitted: s.sackPermitted = true
            case .timestamps(let v, let e): s.timestamps = TCPTimestamps(value: v, echo: e)
            case .sack(let c): s.sackBlocks = c
            case .unknown(let kind, _) where kind == TCPOptionKind.md5Signature || kind == TCPOptionKind.authentication:
                s.signed = true
            default: break
            }
        }
        s.malformed = it.malformed
        return s
    }
}

public struct TCPTimestamps: Equatable, Sendable {
    public var value: UInt32
    public var echo: UInt32
    @inlinable public init(value: UInt32, echo: UInt32) {
        self.value = value
        self.echo = echo
    }
}

/// What the options of a segment say, in one value. For a SYN these are what the sender offers.
public struct TCPOptionSummary: Equatable, Sendable {
    public var maximumSegmentSize: UInt16?
    public var windowScale: UInt8?
    public var sackPermitted = false
    public var timestamps: TCPTimestamps?
    public var sackBlocks = 0
    /// A TCP-MD5 or TCP-AO option is present (any length): the segment is signed with a key
    /// only the ends know, over its header and payload.
    public var signed = false
    public var malformed = false
    @inlinable public init() {}
}

/// The options of a SYN or SYN-ACK, as tcpsplice writes them when it rebuilds a SYN's option
/// block (in the order and alignment Linux uses).
public struct SynOptions: Equatable, Sendable {
    public var maximumSegmentSize: UInt16?
    public var windowScale: UInt8?
    public var sackPermitted: Bool
    public var timestamps: TCPTimestamps?

    @inlinable
    public init(maximumSegmentSize: UInt16? = nil, windowScale: UInt8? = nil,
                sackPermitted: Bool = false, timestamps: TCPTimestamps? = nil) {
        self.maximumSegmentSize = maximumSegmentSize
        self.windowScale = windowScale
        self.sackPermitted = sackPermitted
        self.timestamps = timestamps
    }

    @inlinable
    public init(_ summary: TCPOptionSummary) {
        self.init(maximumSegmentSize: summary.maximumSegmentSize, windowScale: summary.windowScale,
                  sackPermitted: summary.sackPermitted, timestamps: summary.timestamps)
    }

    /// Bytes the encoded block takes (a multiple of 4, at most 20).
    @inlinable public var encodedLength: Int {
        var n = 0
        if maximumSegmentSize != nil { n += 4 }
        if timestamps != nil { n += 12 } else if sackPermitted { n += 4 }
        if windowScale != nil { n += 4 }
        return n
    }

    /// Writes the block into `out` (at least `encodedLength` bytes) and returns its length.
    @inlinable @discardableResult
    public func encode(into out: UnsafeMutableRawBufferPointer) -> Int {
        precondition(out.count >= encodedLength, "option buffer too small")
        var o = 0
        if let mss = maximumSegmentSize {
            out.setU8(o, TCPOptionKind.maximumSegmentSize); out.setU8(o + 1, 4); out.setBE16(o + 2, mss)
            o += 4
        }
        if let ts = timestamps {
            if sackPermitted {
                out.setU8(o, TCPOptionKind.sackPermitted); out.setU8(o + 1, 2)
            } else {
                out.setU8(o, TCPOptionKind.noOperation); out.setU8(o + 1, TCPOptionKind.noOperation)
            }
            out.setU8(o + 2, TCPOptionKind.timestamps); out.setU8(o + 3, 10)
            out.setBE32(o + 4, ts.value); out.setBE32(o + 8, ts.echo)
            o += 12
        } else if sackPermitted {
            out.setU8(o, TCPOptionKind.noOperation); out.setU8(o + 1, TCPOptionKind.noOperation)
            out.setU8(o + 2, TCPOptionKind.sackPermitted); out.setU8(o + 3, 2)
            o += 4
        }
        if let ws = windowScale {
            out.setU8(o, TCPOptionKind.noOperation); out.setU8(o + 1, TCPOptionKind.windowScale)
            out.setU8(o + 2, 3); out.setU8(o + 3, ws)
            o += 4
        }
        return o
    }
}

// MARK: Rewriting options in place

extension TCPHeader {
    /// Runs `edit` on bytes `[start, end)` of the segment and adjusts the checksum field for the
    /// change, whatever the alignment of the range (RFC 1624 over the enclosing 16-bit words).
    @inlinable
    public func editUpdatingChecksum(_ start: Int, _ end: Int, _ edit: () -> Void) {
        let s = start & ~1
        let e = min((end + 1) & ~1, bytes.count)
        let before = Checksum.sum(bytes.slice(s, e))
        edit()
        let after = Checksum.sum(bytes.slice(s, e))
        // If the range holds the checksum field itself the caller must not use this.
        checksum = Checksum.update(checksum, old: before, new: after)
    }

    /// Absolute offset in the segment of an option of this header's option block.
    @inlinable func segmentOffset(_ option: TCPOption) -> Int { Field.options + option.offset }

    /// Sets the MSS of an MSS option, updating the checksum.
    @inlinable
    public func updateMaximumSegmentSize(_ option: TCPOption, to value: UInt16) {
        precondition(option.kind == TCPOptionKind.maximumSegmentSize && option.length == 4)
        let o = segmentOffset(option) + 2
        editUpdatingChecksum(o, o + 2) { bytes.setBE16(o, value) }
    }

    /// Sets the shift count of a window-scale option, updating the checksum.
    @inlinable
    public func updateWindowScale(_ option: TCPOption, to shift: UInt8) {
        precondition(option.kind == TCPOptionKind.windowScale && option.length == 3)
        let o = segmentOffset(option) + 2
        editUpdatingChecksum(o, o + 1) { bytes.setU8(o, shift) }
    }

    /// Sets TSval and TSecr of a timestamps option, updating the checksum.
    @inlinable
    public func updateTimestamps(_ option: TCPOption, value: UInt32, echo: UInt32) {
        precondition(option.kind == TCPOptionKind.timestamps && option.length == 10)
        let o = segmentOffset(option) + 2
        editUpdatingChecksum(o, o + 8) {
            bytes.setBE32(o, value)
            bytes.setBE32(o + 4, echo)
        }
    }

    /// Adds `delta` to both edges of every block of a SACK option, updating the checksum.
    @inlinable
    public func shiftSACKBlocks(_ option: TCPOption, by delta: Int32) {
        precondition(option.kind == TCPOptionKind.sack && option.length >= 10 && (option.length - 2) % 8 == 0)
        let start = segmentOffset(option) + 2
        let end = segmentOffset(option) + option.length
        editUpdatingChecksum(start, end) {
            var o = start
            while o + 4 <= end {
                bytes.setBE32(o, SeqNumber(bytes.be32(o)).advanced(by: delta).rawValue)
                o += 4
            }
        }
    }

    /// Overwrites an option with NOPs (kind 1), updating the checksum. The block keeps its size.
    @inlinable
    public func replaceWithNOPs(_ option: TCPOption) {
        let start = segmentOffset(option)
        let end = start + option.length
        editUpdatingChecksum(start, end) {
            for i in start..<end { bytes.setU8(i, TCPOptionKind.noOperation) }
        }
    }
}
