import Testing
@testable import SpliceRules

@Suite("Chunked body framing (keep-alive re-routing of chunked responses)")
struct ChunkedBodyTests {
    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// Feeds `input` in pieces of `piece` bytes; returns the bytes taken and the final state.
    static func run(_ input: [UInt8], piece: Int) -> (Int, ChunkedBody.State) {
        var c = ChunkedBody()
        var taken = 0
        var i = 0
        while i < input.count {
            let slice = input[i..<min(input.count, i + piece)]
            let n = c.consume(slice)
            taken += n
            if n < slice.count { break }
            i += piece
        }
        return (taken, c.state)
    }

    @Test("a body of chunks with extensions and a trailer ends exactly after its last empty line, in any piece size",
          arguments: [1, 2, 3, 7, 64, 10_000])
    func wholeBody(piece: Int) {
        let body = Self.bytes("5\r\nhello\r\n1a;name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Checksum: 1\r\n\r\n")
        let (taken, state) = Self.run(body + Self.bytes("HTTP/1.1 200 OK\r\n"), piece: piece)
        #expect(state == .done)
        #expect(taken == body.count)
    }

    @Test("the last chunk without trailers; upper-case hex and whitespace before an extension")
    func noTrailers() {
        let body = Self.bytes("A \r\n0123456789\r\n0\r\n\r\n")
        var c = ChunkedBody()
        #expect(c.consume(body) == body.count)
        #expect(c.state == .done)
    }

    @Test("chunk data skipped unseen: only the framing is read")
    func skipData() {
        var c = ChunkedBody()
        #expect(c.consume(Self.bytes("10000\r\n")) == 7)
        #expect(c.dataLeft == 0x10000)
        c.skip(0x8000)
        #expect(c.dataLeft == 0x8000)
        c.skip(0x8000)
        #expect(c.state == .dataEnd)
        let rest = Self.bytes("\r\n0\r\n\r\n")
        #expect(c.consume(rest) == rest.count)
        #expect(c.state == .done)
    }

    @Test("not chunked framing: invalid, never done", arguments: [
        "zz\r\n", "\r\n", ";x\r\n", "5\r\nhello0\r\n", "5\rX", "11111111111111111\r\n", "0\r\nField\rX",
    ])
    func invalid(_ s: String) {
        var c = ChunkedBody()
        _ = c.consume(Self.bytes(s))
        #expect(c.state == .invalid)
    }

    @Test("a size line longer than the bound is invalid")
    func lineTooLong() {
        var c = ChunkedBody()
        _ = c.consume(Self.bytes("5;" + String(repeating: "x", count: ChunkedBody.maxLineLength)))
        #expect(c.state == .invalid)
    }

    @Test("Transfer-Encoding: chunked, also after another coding; not when chunked is not last")
    func isChunked() {
        func head(_ te: String) -> HTTPResponseHead? {
            if case .complete(let h) = HTTPResponseHead.parse(Self.bytes("HTTP/1.1 200 OK\r\n\(te)\r\n\r\n")) { return h }
            return nil
        }
        #expect(head("Transfer-Encoding: chunked")?.isChunked == true)
        #expect(head("Transfer-Encoding: gzip, Chunked")?.isChunked == true)
        #expect(head("Transfer-Encoding: chunked, gzip")?.isChunked == false)
        #expect(head("Content-Length: 5")?.isChunked == false)
    }
}
