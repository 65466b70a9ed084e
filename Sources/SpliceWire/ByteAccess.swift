/// Big-endian loads and stores on raw buffers. The only place in the packet library that
/// touches raw memory by offset; every caller has checked the range first.
extension UnsafeMutableRawBufferPointer {
    @inlinable @inline(__always)
    func u8(_ offset: Int) -> UInt8 { load(fromByteOffset: offset, as: UInt8.self) }

    @inlinable @inline(__always)
    func be16(_ offset: Int) -> UInt16 {
        UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable @inline(__always)
    func be32(_ offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inlinable @inline(__always)
    func setU8(_ offset: Int, _ value: UInt8) { storeBytes(of: value, toByteOffset: offset, as: UInt8.self) }

    @inlinable @inline(__always)
    func setBE16(_ offset: Int, _ value: UInt16) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inlinable @inline(__always)
    func setBE32(_ offset: Int, _ value: UInt32) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    /// An IPv6 address stored at `offset` (16 bytes, network order).
    @inlinable @inline(__always)
    func ipv6Address(_ offset: Int) -> IPAddress {
        IPAddress(high: UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
                  low: UInt64(bigEndian: loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)))
    }

    @inlinable @inline(__always)
    func setIPv6Address(_ offset: Int, _ a: IPAddress) {
        storeBytes(of: a.high.bigEndian, toByteOffset: offset, as: UInt64.self)
        storeBytes(of: a.low.bigEndian, toByteOffset: offset + 8, as: UInt64.self)
    }

    /// A sub-range as a buffer of its own (no copy).
    @inlinable @inline(__always)
    public func slice(_ start: Int, _ end: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: self[start..<end])
    }
}
