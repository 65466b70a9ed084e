import Testing
@testable import SpliceWire
import TestSupport

/// The full Internet checksum: known vectors, odd and empty lengths, the fast sum against the
/// reference loop at every length and alignment, and the fold.
@Suite("Checksum: full sum")
struct ChecksumTests {
    func sum(_ bytes: [UInt8]) -> UInt16 { bytes.withUnsafeBytes { Checksum.sum($0) } }
    func referenceSum(_ bytes: [UInt8]) -> UInt16 { bytes.withUnsafeBytes { Checksum.referenceSum($0) } }

    @Test("RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2")
    func rfc1071Example() {
        let bytes: [UInt8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
        #expect(sum(bytes) == 0xddf2)
        #expect(referenceSum(bytes) == 0xddf2)
        #expect(~sum(bytes) == 0x220d)
    }

    @Test("byte order independence (RFC 1071 2(B)): swapped bytes give the swapped sum")
    func byteSwapped() {
        let bytes: [UInt8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
        let swapped: [UInt8] = [0x01, 0x00, 0x03, 0xf2, 0xf5, 0xf4, 0xf7, 0xf6]
        #expect(sum(swapped) == sum(bytes).byteSwapped)
        #expect(sum(swapped) == 0xf2dd)
    }

    @Test("zero length sums to 0")
    func zeroLength() {
        #expect(sum([]) == 0)
        #expect(referenceSum([]) == 0)
        #expect(Checksum.sum(UnsafeRawBufferPointer(start: nil, count: 0)) == 0)
    }

    @Test("an odd trailing byte is the high byte of a zero-padded word", arguments: [
        ([UInt8(0xab)], UInt16(0xab00)),
        ([0x12, 0x34, 0x56], 0x1234 &+ 0x5600),
        ([0xff, 0xff, 0xff], 0xff00),         // 0xffff + 0xff00 = 0x1feff -> 0xff00
        ([0x00, 0x00, 0x01], 0x0100),
    ] as [([UInt8], UInt16)])
    func oddLengths(bytes: [UInt8], expected: UInt16) {
        #expect(sum(bytes) == expected)
        #expect(referenceSum(bytes) == expected)
    }

    @Test("all-zero data sums to 0, all-ones to ffff, at every length")
    func degenerateData() {
        for n in 1...130 {
            #expect(sum([UInt8](repeating: 0, count: n)) == 0)
            let ones = [UInt8](repeating: 0xff, count: n)
            // Whole words of ffff sum to ffff; an odd tail adds a padded ff00, leaving ff00.
            #expect(sum(ones) == (n % 2 == 0 ? 0xffff : 0xff00), "length \(n)")
            #expect(referenceSum(ones) == sum(ones), "length \(n)")
        }
    }

    @Test("IPv4 header checksums of real packets verify and recompute", arguments: [
        // The classic example: 172.16.10.99 -> 172.16.10.12, TCP, checksum b1e6.
        [0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0xb1, 0xe6,
         0xac, 0x10, 0x0a, 0x63, 0xac, 0x10, 0x0a, 0x0c] as [UInt8],
        // 192.168.0.1 -> 192.168.0.199, UDP, checksum b861.
        [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61,
         0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7],
    ])
    func realIPv4Header(header: [UInt8]) {
        #expect(sum(header) == 0xffff)
        var zeroed = header
        zeroed[10] = 0
        zeroed[11] = 0
        let expected = UInt16(header[10]) << 8 | UInt16(header[11])
        #expect(~sum(zeroed) == expected)
        #expect(~referenceSum(zeroed) == expected)
    }

    @Test("fast sum == reference sum for every length 0...300 at every alignment 0...15")
    func fastEqualsReferenceAllLengths() {
        var rng = SplitMix64(seed: testSeed(default: 0xc5_0001))
        let storage = rng.bytes(300 + 16)
        storage.withUnsafeBytes { all in
            for offset in 0..<16 {
                for length in 0...300 {
                    let slice = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
                    let fast = Checksum.sum(slice)
                    let reference = Checksum.referenceSum(slice)
                    #expect(fast == reference, "offset \(offset) length \(length)")
                    #expect(fast == Fixtures.onesComplementSum(slice), "offset \(offset) length \(length)")
                }
            }
        }
    }

    @Test("fast sum == reference sum on random buffers up to 64 KiB at random offsets")
    func fastEqualsReferenceRandom() {
        let seed = testSeed(default: 0xc5_0002)
        var rng = SplitMix64(seed: seed)
        let storage = rng.bytes(65_536 + 64)
        storage.withUnsafeBytes { all in
            for _ in 0..<300 {
                let offset = rng.below(64)
                let length = rng.oneIn(4) ? 65_536 - rng.below(8) : rng.below(65_536)
                let slice = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
                #expect(Checksum.sum(slice) == Checksum.referenceSum(slice),
                        "seed \(seed) offset \(offset) length \(length)")
            }
        }
    }

    @Test("64 KiB of ff bytes: the wide accumulators do not lose carries")
    func largeAllOnes() {
        let ones = [UInt8](repeating: 0xff, count: 65_535)
        // 32767 words of ffff (which sum to ffff) and a padded ff00.
        #expect(sum(ones) == 0xff00)
        #expect(referenceSum(ones) == 0xff00)
        let evenOnes = [UInt8](repeating: 0xff, count: 65_536)
        #expect(sum(evenOnes) == 0xffff)
    }

    @Test("fold: end-around carries, 0 stays 0, a nonzero multiple of ffff folds to ffff", arguments: [
        (UInt64(0), UInt16(0)),
        (0xffff, 0xffff),
        (0x1_0000, 0x0001),
        (0x1_ffff, 0x0001),
        (0x1_fffe, 0xffff),
        (0xffff_ffff, 0xffff),
        (0x1_0000_0000, 0x0001),
        (UInt64.max, 0xffff),
        (0x8000_0000_0000_0000, 0x8000),
        (0x0001_0002_0003_0004, 0x000a),
    ] as [(UInt64, UInt16)])
    func fold(wide: UInt64, expected: UInt16) {
        #expect(Checksum.fold(wide) == expected)
    }

    @Test("fold agrees with arithmetic mod 65535 on random values")
    func foldRandom() {
        var rng = SplitMix64(seed: testSeed(default: 0xc5_0003))
        for _ in 0..<100_000 {
            let x = rng.next() >> rng.below(64)
            let f = Checksum.fold(x)
            #expect(UInt64(f) % 0xffff == x % 0xffff)
            #expect((f == 0) == (x == 0))
        }
    }

    @Test("ones' complement add", arguments: [
        (UInt16(0), UInt16(0), UInt16(0)),
        (0xffff, 0x0001, 0x0001),
        (0x8000, 0x8000, 0x0001),
        (0x1234, 0x1111, 0x2345),
        (0xffff, 0xffff, 0xffff),
    ] as [(UInt16, UInt16, UInt16)])
    func add(a: UInt16, b: UInt16, expected: UInt16) {
        #expect(Checksum.add(a, b) == expected)
    }

    @Test("an accumulator over pieces equals one sum over the whole (even piece boundaries)")
    func accumulatorPieces() {
        var rng = SplitMix64(seed: testSeed(default: 0xc5_0004))
        let data = rng.bytes(1001)
        data.withUnsafeBytes { all in
            var acc = Checksum.Accumulator()
            acc.add(bytes: UnsafeRawBufferPointer(rebasing: all[0..<100]))
            acc.add(bytes: UnsafeRawBufferPointer(rebasing: all[100..<502]))
            acc.add(bytes: UnsafeRawBufferPointer(rebasing: all[502..<1001]))
            #expect(acc.folded == Checksum.sum(all))
            #expect(acc.checksum == ~Checksum.sum(all))

            var words = Checksum.Accumulator()
            words.add(UInt32(0x0102_0304))
            words.add(UInt16(0x0506))
            var other = Checksum.Accumulator(7)
            other.add(words)
            #expect(other.folded == 0x0102 + 0x0304 + 0x0506 + 7)
        }
    }
}
