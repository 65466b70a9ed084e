/// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
///
/// Values are kept in "network value" form: a folded 16-bit ones' complement sum of the
/// big-endian 16-bit words, as a plain `UInt16` (the number you would read from the wire with
/// a big-endian load). `Checksum.Accumulator` carries an unfolded sum between pieces (the
/// pseudo-header and the segment), so that a checksum over several buffers costs one fold.
public enum Checksum {
    /// An unfolded ones' complement sum in network value form.
    public struct Accumulator: Sendable, Equatable {
        public var value: UInt64
        @inlinable public init(_ value: UInt64 = 0) { self.value = value }

        @inlinable public mutating func add(_ word: UInt16) { value &+= UInt64(word) }
        @inlinable public mutating func add(_ word: UInt32) {
            value &+= UInt64(word >> 16) &+ UInt64(word & 0xffff)
        }
        @inlinable public mutating func add(_ other: Accumulator) { value &+= other.value }
        /// Adds the bytes of `buffer`, which must start at an even offset of the checksummed data.
        @inlinable public mutating func add(bytes buffer: UnsafeRawBufferPointer) {
            value &+= UInt64(Checksum.sum(buffer))
        }

        /// The folded 16-bit ones' complement sum (not complemented).
        @inlinable public var folded: UInt16 { Checksum.fold(value) }
        /// The checksum field value: the complement of the folded sum.
        @inlinable public var checksum: UInt16 { ~folded }
    }

    /// Folds a wide ones' complement sum to 16 bits with end-around carries.
    @inlinable @inline(__always)
    public static func fold(_ wide: UInt64) -> UInt16 {
        var s = (wide & 0xffff_ffff) &+ (wide >> 32)       // <= 33 bits
        s = (s & 0xffff) &+ (s >> 16)                        // <= 18 bits
        s = (s & 0xffff) &+ (s >> 16)                        // <= 17 bits
        s = (s & 0xffff) &+ (s >> 16)
        return UInt16(truncatingIfNeeded: s)
    }

    /// Ones' complement 16-bit addition.
    @inlinable @inline(__always)
    public static func add(_ a: UInt16, _ b: UInt16) -> UInt16 {
        let s = UInt32(a) &+ UInt32(b)
        return UInt16(truncatingIfNeeded: (s & 0xffff) &+ (s >> 16))
    }

    /// The folded ones' complement sum of `buffer` (not complemented), in network value form.
    /// An odd trailing byte is padded with zero, as RFC 1071 says.
    ///
    /// Sums native-endian 32-bit words into four 64-bit accumulators (byte order does not
    /// matter to a ones' complement sum: RFC 1071 section 2(B)), which the compiler turns into
    /// wide vector adds; the result is byte-swapped once at the end on little-endian machines.
    @inlinable
    public static func sum(_ buffer: UnsafeRawBufferPointer) -> UInt16 {
        let n = buffer.count
        guard n > 0, let base = buffer.baseAddress else { return 0 }
        var a0: UInt64 = 0, a1: UInt64 = 0, a2: UInt64 = 0, a3: UInt64 = 0
        var i = 0
        while i &+ 32 <= n {
            a0 &+= UInt64(base.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            a1 &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 4, as: UInt32.self))
            a2 &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 8, as: UInt32.self))
            a3 &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 12, as: UInt32.self))
            a0 &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 16, as: UInt32.self))
            a1 &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 20, as: UInt32.self))
            a2 &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 24, as: UInt32.self))
            a3 &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 28, as: UInt32.self))
            i &+= 32
        }
        while i &+ 4 <= n {
            a0 &+= UInt64(base.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            i &+= 4
        }
        if i &+ 2 <= n {
            a1 &+= UInt64(base.loadUnaligned(fromByteOffset: i, as: UInt16.self))
            i &+= 2
        }
        if i < n {
            // The odd byte is the high-order byte of a big-endian word: in native (little-endian)
            // order that is the low byte of the 16-bit lane.
            let b = UInt64(base.load(fromByteOffset: i, as: UInt8.self))
            a2 &+= (UInt16(1).littleEndian == 1) ? b : (b << 8)
        }
        let native = fold((a0 & 0xffff_ffff) &+ (a0 >> 32) &+ (a1 & 0xffff_ffff) &+ (a1 >> 32)
            &+ (a2 & 0xffff_ffff) &+ (a2 >> 32) &+ (a3 & 0xffff_ffff) &+ (a3 >> 32))
        return UInt16(bigEndian: native)
    }

    @inlinable
    public static func sum(_ buffer: UnsafeMutableRawBufferPointer) -> UInt16 {
        sum(UnsafeRawBufferPointer(buffer))
    }

    /// The reference implementation: a plain loop over big-endian 16-bit words. Kept for tests
    /// and for the benchmark that compares against it.
    public static func referenceSum(_ buffer: UnsafeRawBufferPointer) -> UInt16 {
        var s: UInt32 = 0
        var i = 0
        let n = buffer.count
        while i + 1 < n {
            s &+= UInt32(buffer[i]) << 8 | UInt32(buffer[i + 1])
            s = (s & 0xffff) &+ (s >> 16)
            i += 2
        }
        if i < n { s &+= UInt32(buffer[i]) << 8 }
        while s > 0xffff { s = (s & 0xffff) &+ (s >> 16) }
        return UInt16(s)
    }

    // MARK: RFC 1624 incremental update

    /// The checksum field after one 16-bit word of the covered data changed from `old` to
    /// `new` (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
    @inlinable @inline(__always)
    public static func update(_ checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        ~add(add(~checksum, ~old), new)
    }

    /// The checksum field after one aligned 32-bit value of the covered data changed.
    @inlinable @inline(__always)
    public static func update(_ checksum: UInt16, old: UInt32, new: UInt32) -> UInt16 {
        var s = UInt32(~checksum)
        s &+= UInt32(~UInt16(truncatingIfNeeded: old >> 16)) &+ UInt32(~UInt16(truncatingIfNeeded: old))
        s &+= (new >> 16) &+ (new & 0xffff)
        s = (s & 0xffff) &+ (s >> 16)
        s = (s & 0xffff) &+ (s >> 16)
        return ~UInt16(truncatingIfNeeded: s)
    }

    /// The checksum field after an arbitrary change to the covered data, given the ones'
    /// complement sums of the old and new bytes (both folded, not complemented).
    @inlinable @inline(__always)
    public static func update(_ checksum: UInt16, oldSum: UInt16, newSum: UInt16) -> UInt16 {
        update(checksum, old: oldSum, new: newSum)
    }

    /// A pseudo-header-only ("partial", `CHECKSUM_PARTIAL` / `NFQA_SKB_CSUMNOTREADY`) field holds
    /// the folded pseudo-header sum, not complemented. When a pseudo-header word changes, the
    /// sum is adjusted without complementing: S' = S + ~m + m'.
    @inlinable @inline(__always)
    public static func updatePartial(_ partial: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        add(add(partial, ~old), new)
    }
}
