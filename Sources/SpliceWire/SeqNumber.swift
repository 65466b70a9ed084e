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

/// The shift between two sequence spaces (Linux's seqadj offset): a number in the first
/// space plus the delta is the same byte's number in the second, modulo 2^32. Built from two
/// numbers that name the same byte, so no raw arithmetic is written where it is used.
public struct SeqDelta: Hashable, Sendable {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The delta that takes `from` (first space) to `to` (second space).
    @inlinable public init(from: SeqNumber, to: SeqNumber) { rawValue = to.rawValue &- from.rawValue }
    public static let zero = SeqDelta(rawValue: 0)
    /// The delta back from the second space to the first.
    @inlinable public var inverse: SeqDelta { SeqDelta(rawValue: 0 &- rawValue) }
    /// As a signed distance (for edges moved by `advanced(by:)`).
    @inlinable public var signed: Int32 { Int32(bitPattern: rawValue) }
    @inlinable public static func + (s: SeqNumber, d: SeqDelta) -> SeqNumber { SeqNumber(s.rawValue &+ d.rawValue) }
    @inlinable public static func - (s: SeqNumber, d: SeqDelta) -> SeqNumber { SeqNumber(s.rawValue &- d.rawValue) }
}

/// The shift between two TCP timestamp clocks: a TSval of the first clock plus the delta is
/// the same instant in the second, modulo 2^32 (RFC 7323 values wrap like sequence numbers).
public struct TimestampDelta: Hashable, Sendable {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The delta that takes the first clock's `from` to the second clock's `to`.
    @inlinable public init(from: UInt32, to: UInt32) { rawValue = to &- from }
    public static let zero = TimestampDelta(rawValue: 0)
    /// A value of the first clock in the second.
    @inlinable public func forward(_ v: UInt32) -> UInt32 { v &+ rawValue }
    /// A value of the second clock in the first.
    @inlinable public func back(_ v: UInt32) -> UInt32 { v &- rawValue }
}

/// Whether TSval `a` is older than `b` (RFC 7323 5.3: serial order, as PAWS compares them).
@inlinable public func timestamp(_ a: UInt32, isOlderThan b: UInt32) -> Bool { Int32(bitPattern: b &- a) > 0 }

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
