import Testing
@testable import SpliceRules
import TestSupport

/// Random and mutated inputs through every parser: no traps, and two properties of a parser
/// that reads a stream's start: once `.invalid`, more bytes keep it invalid; once
/// `.complete`, more bytes do not change the value.
@Suite("Parser fuzz")
struct ParseFuzzTests {
    static let corpus: [[UInt8]] = [
        bytes(HTTPHeadTests.curlGET),
        bytes(HTTPHeadTests.post),
        bytes("GET / HTTP/1.0\nHost: x\n\n"),
        bytes("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/html\r\n\r\nhello world!"),
        bytes("HTTP/1.0 404\n\n"),
        TLSBuilder.records(TLSBuilder.clientHello(sni: "example.com")),
        TLSBuilder.records(TLSBuilder.clientHello(sni: "example.com"), cutAt: [3, 90]),
        TLSBuilder.records(TLSBuilder.clientHello(sni: nil, withExtensions: false)),
        bytes("5\r\nhello\r\n1a;x=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: 1\r\n\r\n"),
    ]

    /// Runs every parser on `input` and on `input + more`, checking the two properties.
    static func check(_ input: [UInt8], more: [UInt8]) {
        checkStream(HTTPRequestHead.parse(input), HTTPRequestHead.parse(input + more))
        checkStream(HTTPResponseHead.parse(input), HTTPResponseHead.parse(input + more))
        checkStream(TLSClientHello.parse(input), TLSClientHello.parse(input + more))
        _ = RequestFacts(firstBytes: input, isFinal: false)
        // The chunked framing: the same end, and the same bytes taken, whether the bytes come
        // at once or one by one (nothing taken after `.done` or past the byte that is invalid).
        let all = input + more
        var whole = ChunkedBody()
        let taken = whole.consume(all)
        var split = ChunkedBody()
        var takenSplit = 0
        for b in all {
            let k = split.consume(CollectionOfOne(b))
            takenSplit += k
            if k == 0 { break }
        }
        #expect(whole == split && taken == takenSplit)
        #expect(taken == all.count || whole.state == .done || whole.state == .invalid)
    }

    static func checkStream<V: Equatable>(_ short: Peek<V>, _ long: Peek<V>) {
        switch short {
        case .incomplete: break
        case .invalid: #expect(long.isInvalid)
        case .complete: #expect(long == short)
        }
    }

    @Test("2000 random byte strings, some starting like a request or a ClientHello")
    func randomBytes() {
        var rng = SplitMix64(seed: testSeed(default: 20_240_611))
        let starts: [[UInt8]] = [[], bytes("1a\r\n"), bytes("GET / HTTP/1.1\r\n"), bytes("HTTP/1.1 200 OK\r\n"), [22, 3, 1], [22, 3, 1, 0, 200, 1, 0]]
        for _ in 0..<2000 {
            let start = starts.randomElement(using: &rng)!
            let input = start + rng.bytes(Int.random(in: 0...300, using: &rng))
            Self.check(input, more: rng.bytes(Int.random(in: 0...40, using: &rng)))
        }
    }

    @Test("2000 mutations of valid inputs: flipped, inserted, removed bytes and truncations")
    func mutations() {
        var rng = SplitMix64(seed: testSeed(default: 7))
        for _ in 0..<2000 {
            var input = Self.corpus.randomElement(using: &rng)!
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let i = Int.random(in: 0..<input.count, using: &rng)
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: input[i] = UInt8.random(in: 0...255, using: &rng)
                case 1: input.insert(UInt8.random(in: 0...255, using: &rng), at: i)
                case 2: input.remove(at: i)
                default: input = Array(input[..<i])
                }
                if input.isEmpty { break }
            }
            Self.check(input, more: rng.bytes(Int.random(in: 0...20, using: &rng)))
        }
    }

    @Test("every truncation of every valid input: never invalid")
    func truncations() {
        for input in Self.corpus {
            for n in 0...input.count {
                let prefix = Array(input[..<n])
                #expect(!(HTTPRequestHead.parse(prefix).isInvalid && HTTPRequestHead.parse(input).value != nil))
                #expect(!(HTTPResponseHead.parse(prefix).isInvalid && HTTPResponseHead.parse(input).value != nil))
                #expect(!(TLSClientHello.parse(prefix).isInvalid && TLSClientHello.parse(input).value != nil))
                Self.check(prefix, more: Array(input[n...]))
            }
        }
    }
}
