import Testing
@testable import SpliceWire
import TestSupport

@Suite("SeqNumber")
struct SeqNumberTests {
    @Test("ordering is plain ordering away from the wrap")
    func plainOrdering() {
        let a = SeqNumber(1000), b = SeqNumber(2000)
        #expect(a < b)
        #expect(a <= b)
        #expect(b > a)
        #expect(b >= a)
        #expect(!(b < a))
        #expect(a <= a && a >= a && !(a < a) && !(a > a))
    }

    @Test("ordering is correct across the 2^32 wrap")
    func orderingAcrossWrap() {
        let beforeWrap = SeqNumber(0xffff_fff0)
        let afterWrap = SeqNumber(0x0000_0010)
        #expect(beforeWrap < afterWrap)
        #expect(afterWrap > beforeWrap)
        #expect(SeqNumber(UInt32.max) < SeqNumber(0))
        #expect(SeqNumber(0) > SeqNumber(UInt32.max))
        #expect(SeqNumber.latest(beforeWrap, afterWrap) == afterWrap)
        #expect(SeqNumber.earliest(beforeWrap, afterWrap) == beforeWrap)
        #expect(SeqNumber.latest(afterWrap, beforeWrap) == afterWrap)
        #expect(SeqNumber.earliest(afterWrap, beforeWrap) == beforeWrap)
    }

    @Test("the half-space boundary: 2^31 - 1 ahead is later, 2^31 ahead is earlier (as Linux before())")
    func halfSpace() {
        let base = SeqNumber(123_456)
        #expect(base < base + UInt32(0x7fff_ffff))
        // Exactly 2^31 apart the sign bit is set both ways: each is "before" the other, as in
        // the kernel's before(); callers must never compare numbers that far apart.
        #expect(base < base + UInt32(0x8000_0000))
        #expect(base + UInt32(0x8000_0000) < base)
        #expect(base > base + UInt32(0x8000_0001))
    }

    @Test("distance(to:) is other - self, signed, across the wrap", arguments: [
        (UInt32(10), UInt32(15), Int32(5)),
        (15, 10, -5),
        (0xffff_fffb, 5, 10),
        (5, 0xffff_fffb, -10),
        (0, 0x7fff_ffff, Int32.max),
        (0, 0x8000_0000, Int32.min),
        (7, 7, 0),
    ] as [(UInt32, UInt32, Int32)])
    func distance(from: UInt32, to: UInt32, expected: Int32) {
        #expect(SeqNumber(from).distance(to: SeqNumber(to)) == expected)
        #expect(SeqNumber(to) - SeqNumber(from) == expected)
    }

    @Test("arithmetic wraps")
    func arithmetic() {
        #expect(SeqNumber(UInt32.max) + UInt32(1) == SeqNumber(0))
        #expect(SeqNumber(0) - UInt32(1) == SeqNumber(UInt32.max))
        #expect(SeqNumber(5).advanced(by: -10) == SeqNumber(0xffff_fffb))
        #expect(SeqNumber(0xffff_fffb).advanced(by: 10) == SeqNumber(5))
        var s = SeqNumber(0xffff_ffff)
        s += 2
        #expect(s == SeqNumber(1))
        #expect(SeqNumber(42).description == "42")
    }

    @Test("random pairs within 2^31 order the same way as their distance says")
    func randomPairs() {
        let seed = testSeed(default: 0x5e9_0001)
        var rng = SplitMix64(seed: seed)
        for _ in 0..<20_000 {
            let a = SeqNumber(rng.u32())
            let d = Int32(truncatingIfNeeded: rng.next() % 0x7fff_ffff) * (rng.bool() ? 1 : -1)
            let b = a.advanced(by: d)
            #expect(a.distance(to: b) == d, "seed \(seed)")
            #expect((a < b) == (d > 0), "seed \(seed)")
            #expect((a == b) == (d == 0), "seed \(seed)")
            #expect(b - a == d, "seed \(seed)")
        }
    }
}
