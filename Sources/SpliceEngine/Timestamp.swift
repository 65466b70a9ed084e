/// Engine time in deciseconds since the engine started: fits 13 years in 32 bits, which keeps
/// the flow entry small. The daemon feeds it from a monotonic clock; tests feed it by hand.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var deciseconds: UInt32
    @inlinable public init(deciseconds: UInt32) { self.deciseconds = deciseconds }
    @inlinable public static func seconds(_ s: Double) -> Timestamp { Timestamp(deciseconds: UInt32(s * 10)) }
    @inlinable public static func < (a: Timestamp, b: Timestamp) -> Bool { a.deciseconds < b.deciseconds }
    @inlinable public static func + (a: Timestamp, b: Duration) -> Timestamp {
        Timestamp(deciseconds: a.deciseconds &+ b.deciseconds)
    }
    /// Seconds from `earlier` to `self` (0 if earlier is later).
    @inlinable public func seconds(since earlier: Timestamp) -> Double {
        deciseconds >= earlier.deciseconds ? Double(deciseconds - earlier.deciseconds) / 10 : 0
    }
    public var description: String { "\(Double(deciseconds) / 10)s" }

    /// A span of engine time.
    public struct Duration: Hashable, Sendable {
        public var deciseconds: UInt32
        @inlinable public init(deciseconds: UInt32) { self.deciseconds = deciseconds }
        @inlinable public static func seconds(_ s: UInt32) -> Duration { Duration(deciseconds: s &* 10) }
    }
}
