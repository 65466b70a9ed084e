import Foundation

/// A small, seeded, reproducible PRNG (SplitMix64, Steele et al. 2014). Randomised tests use it
/// instead of the system generator so that a failure names a seed that replays it exactly.
/// One copy for every test target (this target is theirs alone; nothing ships with it).
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    @inline(__always)
    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// A number in `0..<n` (n > 0), by multiply-high: cheap, and its bias is far below what a
    /// test can notice.
    @inline(__always)
    public mutating func below(_ n: Int) -> Int {
        Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(n)).high)
    }

    /// A number in `range`.
    @inline(__always)
    public mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + below(range.count) }

    @inline(__always) public mutating func u8() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
    @inline(__always) public mutating func u16() -> UInt16 { UInt16(truncatingIfNeeded: next()) }
    @inline(__always) public mutating func u32() -> UInt32 { UInt32(truncatingIfNeeded: next()) }
    @inline(__always) public mutating func bool() -> Bool { next() & 1 == 1 }
    /// True about once in `n` calls.
    @inline(__always) public mutating func oneIn(_ n: Int) -> Bool { below(n) == 0 }

    public mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in u8() } }
}

/// The seed a randomised test uses: `SPLICE_TEST_SEED` from the environment (decimal or 0x hex)
/// when set, so a failure can be replayed, or the test's own fixed default.
public func testSeed(default value: UInt64) -> UInt64 {
    guard let text = ProcessInfo.processInfo.environment["SPLICE_TEST_SEED"] else { return value }
    if text.hasPrefix("0x"), let v = UInt64(text.dropFirst(2), radix: 16) { return v }
    return UInt64(text) ?? value
}

/// An integer from the environment, or `value`.
public func environmentCount(_ name: String, default value: Int) -> Int {
    guard let text = ProcessInfo.processInfo.environment[name] else { return value }
    let digits = text.filter { $0 != "_" }
    return Int(digits) ?? value
}
