import Testing
@testable import SpliceWire

/// Reading the option block: every kind, wrong lengths, malformed blocks, the summary, and the
/// SYN option encoder.
@Suite("TCPOptions: reading")
struct TCPOptionsTests {
    /// Runs `body` on the options of `block`.
    func withOptions<R>(_ block: [UInt8], _ body: (TCPOptions) throws -> R) rethrows -> R {
        var bytes = block
        return try bytes.withUnsafeMutableBytes { try body(TCPOptions($0)) }
    }

    /// Every option the iterator yields, with its value, and whether it stopped on a malformed one.
    func read(_ block: [UInt8]) -> (options: [TCPOption], values: [TCPOption.Value], malformed: Bool) {
        withOptions(block) { opts in
            var it = opts.makeIterator()
            var list: [TCPOption] = []
            while let o = it.next() { list.append(o) }
            return (list, list.map { opts.value(of: $0) }, it.malformed)
        }
    }

    /// What Linux puts in a SYN: MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
    static let linuxSyn: [UInt8] = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 1, 3, 3, 7]

    @Test("a Linux SYN block reads as MSS, SACK-permitted, timestamps, NOP, window scale")
    func linuxSynBlock() {
        let r = read(Self.linuxSyn)
        #expect(!r.malformed)
        #expect(r.options == [TCPOption(kind: 2, offset: 0, length: 4), TCPOption(kind: 4, offset: 4, length: 2),
                              TCPOption(kind: 8, offset: 6, length: 10), TCPOption(kind: 1, offset: 16, length: 1),
                              TCPOption(kind: 3, offset: 17, length: 3)])
        #expect(r.values == [.maximumSegmentSize(1460), .sackPermitted, .timestamps(value: 1000, echo: 0),
                             .noOperation, .windowScale(7)])
        let summary = withOptions(Self.linuxSyn) { $0.summary }
        var expected = TCPOptionSummary()
        expected.maximumSegmentSize = 1460
        expected.windowScale = 7
        expected.sackPermitted = true
        expected.timestamps = TCPTimestamps(value: 1000, echo: 0)
        #expect(summary == expected)
    }

    @Test("an empty block has no options and is not malformed")
    func empty() {
        let r = read([])
        #expect(r.options.isEmpty)
        #expect(!r.malformed)
        #expect(withOptions([]) { $0.summary } == TCPOptionSummary())
    }

    @Test("EOL ends the list: whatever follows, even garbage, is not read")
    func endOfList() {
        let r = read([1, 0, 2, 4, 0x05, 0xb4, 0xff, 1])
        #expect(r.options == [TCPOption(kind: 1, offset: 0, length: 1), TCPOption(kind: 0, offset: 1, length: 1)])
        #expect(r.values == [.noOperation, .endOfList])
        #expect(!r.malformed)
        #expect(withOptions([0, 2, 4, 0x05, 0xb4]) { $0.summary.maximumSegmentSize } == nil)
    }

    @Test("NOPs are one byte each")
    func nops() {
        let r = read([1, 1, 1, 1])
        #expect(r.options.map(\.offset) == [0, 1, 2, 3])
        #expect(r.options.allSatisfy { $0.length == 1 && $0.kind == 1 })
    }

    @Test("each known kind with its right length", arguments: [
        ([2, 4, 0x23, 0x28] as [UInt8], TCPOption.Value.maximumSegmentSize(9000)),
        ([3, 3, 14], .windowScale(14)),
        ([4, 2], .sackPermitted),
        ([8, 10, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04], .timestamps(value: 0xdead_beef, echo: 0x0102_0304)),
        ([5, 10] + [UInt8](repeating: 7, count: 8), .sack(count: 1)),
        ([5, 18] + [UInt8](repeating: 7, count: 16), .sack(count: 2)),
        ([5, 26] + [UInt8](repeating: 7, count: 24), .sack(count: 3)),
        ([5, 34] + [UInt8](repeating: 7, count: 32), .sack(count: 4)),
    ] as [([UInt8], TCPOption.Value)])
    func knownKinds(block: [UInt8], value: TCPOption.Value) {
        let r = read(block)
        #expect(!r.malformed)
        #expect(r.options == [TCPOption(kind: block[0], offset: 0, length: block.count)])
        #expect(r.values == [value])
        #expect(withOptions(block) { $0.first(kind: block[0]) } == r.options.first)
    }

    @Test("known kinds with the wrong length, and unknown kinds, are kept as unknown and ignored (a signature only marks the summary signed)", arguments: [
        [2, 3, 0x05] as [UInt8], [2, 5, 0x05, 0xb4, 0], [2, 2],
        [3, 2], [3, 4, 7, 0],
        [4, 3, 0], [4, 4, 0, 0],
        [8, 8, 1, 2, 3, 4, 5, 6], [8, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        [5, 2], [5, 9, 1, 2, 3, 4, 5, 6, 7], [5, 11, 1, 2, 3, 4, 5, 6, 7, 8, 9], [5, 17] + [UInt8](repeating: 0, count: 15),
        [19, 18] + [UInt8](repeating: 0xaa, count: 16),    // TCP MD5 signature
        [30, 4, 0, 0], [34, 2], [253, 6, 0xf9, 0x89, 0, 0], [254, 2], [255, 3, 0], [6, 6, 0, 0, 0, 0],
    ])
    func unknownKinds(block: [UInt8]) {
        let r = read(block)
        #expect(!r.malformed)
        #expect(r.options == [TCPOption(kind: block[0], offset: 0, length: block.count)])
        #expect(r.values == [.unknown(kind: block[0], length: block.count)])
        #expect(withOptions(block) { $0.first(kind: block[0]) } == nil)
        var expected = TCPOptionSummary()
        expected.signed = block[0] == TCPOptionKind.md5Signature   // recognised, not read (below)
        #expect(withOptions(block) { $0.summary } == expected)
    }

    @Test("a malformed option stops the walk and sets malformed; what came before is still read", arguments: [
        ("kind with no length byte", [2, 4, 0x05, 0xb4, 1, 1, 8] as [UInt8]),
        ("length 0", [2, 4, 0x05, 0xb4, 8, 0, 3, 3, 7, 1]),
        ("length 1", [2, 4, 0x05, 0xb4, 8, 1, 3, 3, 7, 1]),
        ("length past the end", [2, 4, 0x05, 0xb4, 3, 3, 7, 8, 10, 1, 2, 3]),
        ("length 255", [2, 4, 0x05, 0xb4, 3, 3, 7, 254, 255, 4, 2, 1]),
        ("unknown kind with length 0", [2, 4, 0x05, 0xb4, 3, 3, 7, 99, 0, 4, 2, 0]),
    ] as [(String, [UInt8])])
    func malformed(name: String, block: [UInt8]) {
        let r = read(block)
        #expect(r.malformed, "\(name)")
        #expect(r.values.first == .maximumSegmentSize(1460), "\(name)")
        let summary = withOptions(block) { $0.summary }
        #expect(summary.malformed, "\(name)")
        #expect(summary.maximumSegmentSize == 1460, "\(name)")
        #expect(!summary.sackPermitted, "\(name): nothing after the malformed option is interpreted")
        // The iterator is done for good once it stopped.
        withOptions(block) { opts in
            var it = opts.makeIterator()
            while it.next() != nil {}
            #expect(it.next() == nil)
            #expect(it.malformed)
        }
    }

    @Test("every length byte 0...255 after a kind: well-formed only when 2...remaining")
    func everyLength() {
        for len in 0...255 {
            let block: [UInt8] = [77, UInt8(len)] + [UInt8](repeating: 1, count: 38)
            let r = read(block)
            if len >= 2 && len <= 40 {
                #expect(!r.malformed, "length \(len)")
                #expect(r.options.first == TCPOption(kind: 77, offset: 0, length: len))
                #expect(r.options.count == 1 + (40 - len), "length \(len): the rest are NOPs")
            } else {
                #expect(r.malformed, "length \(len)")
                #expect(r.options.isEmpty, "length \(len)")
            }
        }
    }

    @Test("SACK blocks read their edges")
    func sackBlocks() throws {
        let block: [UInt8] = [1, 1, 5, 26,
                              0, 0, 0, 1, 0, 0, 0, 2,
                              0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0x10,
                              0x80, 0, 0, 0, 0x80, 0, 0x10, 0]
        try withOptions(block) { opts in
            let sack = try #require(opts.first(kind: TCPOptionKind.sack))
            #expect(opts.value(of: sack) == .sack(count: 3))
            #expect(opts.sackBlock(sack, 0) == (SeqNumber(1), SeqNumber(2)))
            #expect(opts.sackBlock(sack, 1) == (SeqNumber(0xffff_fff0), SeqNumber(0x10)))
            #expect(opts.sackBlock(sack, 2) == (SeqNumber(0x8000_0000), SeqNumber(0x8000_1000)))
            #expect(opts.summary.sackBlocks == 3)
        }
    }

    @Test("first(kind:) skips a wrong-length copy and finds a later right one")
    func firstSkipsWrongLength() throws {
        try withOptions([2, 3, 0, 2, 4, 0x05, 0xb4, 0]) { opts in
            let mss = try #require(opts.first(kind: 2))
            #expect(mss.offset == 3)
            #expect(opts.first(kind: 8) == nil)
        }
    }

    @Test("the last of repeated options wins in the summary")
    func repeated() {
        let s = withOptions([2, 4, 0x05, 0xb4, 2, 4, 0x02, 0x18]) { $0.summary }
        #expect(s.maximumSegmentSize == 536)
    }

    @Test("a TCP-MD5 or TCP-AO option marks the summary signed, whatever its length; other kinds do not", arguments: [
        ([1, 1, 19, 18] + [UInt8](repeating: 0xa5, count: 16) + Self.linuxSyn, true),   // MD5, as Linux puts it first
        (Self.linuxSyn + [29, 16, 7, 7] + [UInt8](repeating: 0x5a, count: 12), true),   // AO after the rest
        ([19, 6, 0, 0, 0, 0, 1, 1], true),                                                // MD5 of a wrong length
        (Self.linuxSyn, false),
        ([30, 4, 0x01, 0x81] + Self.linuxSyn, false),                                     // MPTCP's MP_CAPABLE
        ([34, 10, 1, 2, 3, 4, 5, 6, 7, 8], false),                                        // a Fast Open cookie
    ] as [([UInt8], Bool)])
    func signed(block: [UInt8], signed: Bool) {
        let s = withOptions(block) { $0.summary }
        #expect(s.signed == signed && !s.malformed)
    }

    // MARK: SYN option encoding

    static let synCases: [SynOptions] = {
        var out: [SynOptions] = []
        for mss in [nil, UInt16(1460)] {
            for ws in [nil, UInt8(7)] {
                for sack in [false, true] {
                    for ts in [nil, TCPTimestamps(value: 0x0102_0304, echo: 0x0506_0708)] {
                        out.append(SynOptions(maximumSegmentSize: mss, windowScale: ws, sackPermitted: sack, timestamps: ts))
                    }
                }
            }
        }
        return out
    }()

    @Test("SynOptions encodes what it says, 4-byte aligned, and reads back the same", arguments: synCases)
    func synEncode(syn: SynOptions) {
        var out = [UInt8](repeating: 0xee, count: 24)
        let n = out.withUnsafeMutableBytes { syn.encode(into: $0) }
        #expect(n == syn.encodedLength)
        #expect(n % 4 == 0 && n <= 20)
        #expect(out[n...].allSatisfy { $0 == 0xee }, "nothing written past the block")
        let back = withOptions(Array(out[0..<n])) { $0.summary }
        #expect(!back.malformed)
        #expect(SynOptions(back) == syn)
    }

    @Test("SynOptions uses Linux's layout")
    func synLayout() {
        func encoded(_ s: SynOptions) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: s.encodedLength)
            out.withUnsafeMutableBytes { _ = s.encode(into: $0) }
            return out
        }
        let ts = TCPTimestamps(value: 1000, echo: 0)
        #expect(encoded(SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true, timestamps: ts))
                == [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 1, 3, 3, 7])
        #expect(encoded(SynOptions(maximumSegmentSize: 1460, timestamps: ts))
                == [2, 4, 0x05, 0xb4, 1, 1, 8, 10, 0, 0, 0x03, 0xe8, 0, 0, 0, 0])
        #expect(encoded(SynOptions(maximumSegmentSize: 1460, windowScale: 2, sackPermitted: true))
                == [2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 2])
        #expect(encoded(SynOptions()) == [])
        let s = SynOptions(maximumSegmentSize: 1400, windowScale: 9, sackPermitted: true, timestamps: ts)
        var summary = TCPOptionSummary()
        summary.maximumSegmentSize = 1400
        summary.windowScale = 9
        summary.sackPermitted = true
        summary.timestamps = ts
        summary.sackBlocks = 2
        #expect(SynOptions(summary) == s)
    }
}
