/// A TCP sequence number: 32-bit modular arithmetic, with ordering that is correct across
/// wraparound (RFC 793 / RFC 1982 serial-number comparison). No comparison of raw `UInt32`
/// sequence values should appear anywhere else in tcpsplice.
public struct SeqNumber: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32

    @inlinable public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// `other - self` as a signed distance: how far `other` is ahead of `self` (valid when
    /// the two are within 2^31 of each other).
    @inlinable public func distance(to other: SeqNumber) -> Int32 {
        Int32(bitPattern: other.rawValue &- rawValue)
    }

    @inlinable public static func + (lhs: SeqNumber, rhs: UInt32) -> SeqNumber { SeqNumber(lhs.rawValue &+ rhs) }
    @inlinable public static func - (lhs: SeqNumber, rhs: UInt32) -> SeqNumber { SeqNumber(lhs.rawValue &- rhs) }
    /// The sequence number `delta` away (negative deltas go back).
    @inlinable public func advanced(by delta: Int32) -> SeqNumber {
        SeqNumber(rawValue &+ UInt32(bitPattern: delta))
    }
    /// Signed distance `lhs - rhs`.
    @inlinable public static func - (lhs: SeqNumber, rhs: SeqNumber) -> Int32 {
        Int32(bitPattern: lhs.rawValue &- rhs.rawValue)
    }
    @inlinable public static func += (lhs: inout SeqNumber, rhs: UInt32) { lhs = lhs + rhs }

    public var description: String { String(rawValue) }
}

extension SeqNumber: Comparable {
    /// `lhs` comes before `rhs` in sequence space (`before()` in the Linux kernel).
    @inlinable public static func < (lhs: SeqNumber, rhs: SeqNumber) -> Bool {
        Int32(bitPattern: lhs.rawValue &- rhs.rawValue) < 0
    }
    @inlinable public static func <= (lhs: SeqNumber, rhs: SeqNumber) -> Bool {
        Int32(bitPattern: lhs.rawValue &- rhs.rawValue) <= 0
    }
    @inlinable public static func > (lhs: SeqNumber, rhs: SeqNumber) -> Bool { rhs < lhs }
    @inlinable public static func >= (lhs: SeqNumber, rhs: SeqNumber) -> Bool { rhs <= lhs }

    /// The later of two sequence numbers in sequence space.
    @inlinable public static func latest(_ a: SeqNumber, _ b: SeqNumber) -> SeqNumber { a < b ? b : a }
    /// The earlier of two sequence numbers in sequence space.
    @inlinable public static func earliest(_ a: SeqNumber, _ b: SeqNumber) -> SeqNumber { a < b ? a : b }
}
