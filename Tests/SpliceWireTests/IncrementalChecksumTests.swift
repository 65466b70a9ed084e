import Testing
@testable import SpliceWire
import TestSupport

/// RFC 1624 incremental updates (16-bit, 32-bit, sum-of-range) and the pseudo-header-only
/// ("partial") update: each against a full recomputation.
@Suite("Checksum: incremental update")
struct IncrementalChecksumTests {
    /// The checksum field value of `words` (a field of zero included as a word of its own).
    func fullChecksum(_ words: [UInt16]) -> UInt16 {
        var acc = Checksum.Accumulator()
        for w in words { acc.add(w) }
        return acc.checksum
    }

    @Test("RFC 1624 section 4: eqn. 3 gives 0000 where eqn. 2 would give ffff")
    func rfc1624Example() {
        // The other header words sum to cd7a; m = 5555 becomes 3285.
        let hc = ~Checksum.add(0xcd7a, 0x5555)
        #expect(hc == 0xdd2f)
        #expect(Checksum.update(hc, old: UInt16(0x5555), new: UInt16(0x3285)) == 0x0000)
        #expect(~Checksum.add(0xcd7a, 0x3285) == 0x0000)
    }

    @Test("16-bit update equals recomputation for random words, including 0000 and ffff")
    func update16() {
        let seed = testSeed(default: 0x1c_0001)
        var rng = SplitMix64(seed: seed)
        let specials: [UInt16] = [0x0000, 0xffff, 0x0001, 0xfffe, 0x8000, 0x7fff]
        for _ in 0..<50_000 {
            var words = (0..<(1 + rng.below(12))).map { _ in rng.oneIn(4) ? specials[rng.below(specials.count)] : rng.u16() }
            if words.allSatisfy({ $0 == 0 }) { words.append(6) }   // a real segment never sums to 0
            let before = fullChecksum(words)
            let i = rng.below(words.count)
            let old = words[i]
            words[i] = rng.oneIn(3) ? specials[rng.below(specials.count)] : rng.u16()
            if words.allSatisfy({ $0 == 0 }) { continue }
            let updated = Checksum.update(before, old: old, new: words[i])
            #expect(updated == fullChecksum(words), "seed \(seed)")
        }
    }

    @Test("32-bit update equals recomputation and two 16-bit updates")
    func update32() {
        let seed = testSeed(default: 0x1c_0002)
        var rng = SplitMix64(seed: seed)
        for _ in 0..<50_000 {
            var words = (0..<(2 + 2 * rng.below(8))).map { _ in rng.u16() }
            words.append(6)
            let before = fullChecksum(words)
            let i = 2 * rng.below((words.count - 1) / 2)
            let old = UInt32(words[i]) << 16 | UInt32(words[i + 1])
            let new = rng.oneIn(5) ? [0, UInt32.max, 0xffff, 0xffff_0000][rng.below(4)] : rng.u32()
            words[i] = UInt16(new >> 16)
            words[i + 1] = UInt16(new & 0xffff)
            let updated = Checksum.update(before, old: old, new: new)
            #expect(updated == fullChecksum(words), "seed \(seed)")
            let twice = Checksum.update(Checksum.update(before, old: UInt16(old >> 16), new: UInt16(new >> 16)),
                                        old: UInt16(old & 0xffff), new: UInt16(new & 0xffff))
            #expect(twice == updated, "seed \(seed)")
        }
    }

    @Test("update with the sums of a changed range equals recomputation")
    func updateRange() {
        let seed = testSeed(default: 0x1c_0003)
        var rng = SplitMix64(seed: seed)
        for _ in 0..<5_000 {
            var data = rng.bytes(2 * (4 + rng.below(40)))
            data[0] = 0x06   // never all zero
            let before = ~Fixtures.onesComplementSum(data)
            let start = 2 * rng.below(data.count / 2)
            let end = start + 2 * rng.below((data.count - start) / 2 + 1)
            let oldSum = Fixtures.onesComplementSum(data[start..<end])
            for i in start..<end { data[i] = rng.oneIn(3) ? 0 : rng.u8() }
            if data.allSatisfy({ $0 == 0 }) { continue }
            let newSum = Fixtures.onesComplementSum(data[start..<end])
            #expect(Checksum.update(before, oldSum: oldSum, newSum: newSum) == ~Fixtures.onesComplementSum(data),
                    "seed \(seed)")
        }
    }

    @Test("unchanged data leaves the checksum unchanged")
    func noChange() {
        for hc: UInt16 in [0x0000, 0x1234, 0xfffe] {
            for w: UInt16 in [0x0000, 0xffff, 0xabcd] {
                #expect(Checksum.update(hc, old: w, new: w) == hc)
            }
            #expect(Checksum.update(hc, old: UInt32(0xdead_beef), new: UInt32(0xdead_beef)) == hc)
        }
    }

    @Test("partial update: the field stays the folded pseudo-header sum, never complemented")
    func partialUpdate() {
        let seed = testSeed(default: 0x1c_0004)
        var rng = SplitMix64(seed: seed)
        for _ in 0..<50_000 {
            // A pseudo-header: addresses, protocol 6 (so never all zero) and a length.
            var words = (0..<(rng.bool() ? 4 : 16)).map { _ in rng.u16() } + [6, rng.u16()]
            var acc = Checksum.Accumulator()
            for w in words { acc.add(w) }
            var partial = acc.folded
            let i = rng.below(words.count - 2)
            let new = rng.oneIn(4) ? [0, 0xffff][rng.below(2)] : rng.u16()
            partial = Checksum.updatePartial(partial, old: words[i], new: new)
            words[i] = new
            var expected = Checksum.Accumulator()
            for w in words { expected.add(w) }
            #expect(partial == expected.folded, "seed \(seed)")
        }
    }
}
