import Testing
@testable import SpliceRules

@Suite("HTTP request and response heads")
struct HTTPHeadTests {
    static let curlGET = "GET /index.html?q=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"

    static let post = "POST /api/v1/upload HTTP/1.1\r\n"
        + "Host: upload.example.net\r\n"
        + "Content-Type:application/json\r\n"
        + "Content-Length: 13\r\n"
        + "X-Trace-Id:   abc 123  \r\n"
        + "Connection: keep-alive\r\n"
        + "\r\n"
        + "{\"a\": \"1234\"}"

    @Test("a curl GET: request line, headers, host without its port, lowercased")
    func curlGet() throws {
        let head = try #require(HTTPRequestHead.parse(bytes(Self.curlGET)).value)
        #expect(head.method == "GET")
        #expect(head.target == "/index.html?q=1")
        #expect(head.version == "HTTP/1.1")
        #expect(head.host == "example.com")
        #expect(head.headers == [
            HTTPHeaderField(name: "host", value: "Example.COM:8080"),
            HTTPHeaderField(name: "user-agent", value: "curl/8.5.0"),
            HTTPHeaderField(name: "accept", value: "*/*"),
        ])
        #expect(head.headLength == Self.curlGET.utf8.count)
    }

    @Test("a POST with a body: names lowercased, values trimmed, the body left out of the head")
    func postWithBody() throws {
        let head = try #require(HTTPRequestHead.parse(bytes(Self.post)).value)
        #expect(head.method == "POST")
        #expect(head.host == "upload.example.net")
        #expect(head.headers.count == 5)
        #expect(head.headers[1] == HTTPHeaderField(name: "content-type", value: "application/json"))
        #expect(head.headers[3] == HTTPHeaderField(name: "x-trace-id", value: "abc 123"))
        #expect(head.headLength == Self.post.utf8.count - 13)
    }

    @Test("bare LF line ends, and a mix of CRLF and LF")
    func bareLF() throws {
        let text = "GET / HTTP/1.0\nHost: a.example\r\nAccept: */*\n\n"
        let head = try #require(HTTPRequestHead.parse(bytes(text)).value)
        #expect(head.version == "HTTP/1.0")
        #expect(head.host == "a.example")
        #expect(head.headers.count == 2)
        #expect(head.headLength == text.utf8.count)
    }

    @Test("Host forms: IPv6 literal with a port, no Host, an empty Host")
    func hostForms() {
        #expect(HTTPRequestHead.parse(bytes("GET / HTTP/1.1\r\nHost: [2001:DB8::1]:8443\r\n\r\n")).value?.host == "[2001:db8::1]")
        #expect(HTTPRequestHead.parse(bytes("GET / HTTP/1.0\r\n\r\n")).value?.host == nil)
        #expect(HTTPRequestHead.parse(bytes("GET / HTTP/1.1\r\nHost:\r\n\r\n")).value?.host == nil)
    }

    @Test("a request cut at every offset is incomplete until its blank line, then complete",
          arguments: [curlGET, post, "GET / HTTP/1.1\nHost: x\n\n"])
    func everyPrefix(_ text: String) throws {
        let all = bytes(text)
        let length = try #require(HTTPRequestHead.parse(all).value).headLength
        for n in 0..<length {
            #expect(HTTPRequestHead.parse(all[..<n]).isIncomplete, "prefix of \(n) bytes")
        }
        for n in length...all.count {
            #expect(HTTPRequestHead.parse(all[..<n]).value?.headLength == length, "prefix of \(n) bytes")
        }
    }

    @Test("bytes that are not an HTTP/1.x request are invalid as soon as that shows", arguments: [
        ([0x16, 0x03, 0x01], 1),                        // a TLS record: the first byte tells
        ([0x00], 1),
        (bytes(" GET / HTTP/1.1\r\n"), 1),              // no method
        (bytes("\r\nGET / HTTP/1.1\r\n"), 1),           // a leading blank line
        (bytes("GE(T / HTTP/1.1\r\n"), 3),              // a non-token method
        (bytes("GET  / HTTP/1.1\r\n"), 5),              // an empty target
        (bytes("GET / HTTP/2.0\r\n"), 12),              // not HTTP/1.x
        (bytes("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 12), // the HTTP/2 preface
        (bytes("GET / HTTP/1.2\r\n"), 14),
        (bytes("GET / HTTP/1.1 \r\n"), 15),
        (bytes("GET / HT\rTP/1.1\r\n"), 9),              // a CR inside the version
        (bytes("GET / HTTP/1.1\r\nHost\r\n\r\n"), 21),   // a header line without a colon
        (bytes("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 21),   // a blank before the colon
        (bytes("GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n"), 23), // obsolete folding
        (bytes("GET / HTTP/1.1\r\nX: a\u{1}b\r\n\r\n"), 21),      // a control byte in a value
        (bytes("GET / HTTP/1.1\rX: a\r\n\r\n"), 16),               // a lone CR
        (bytes("GET / HTTP/1.1\r\nX:\u{1}\r\n"), 19),
    ] as [([UInt8], Int)])
    func notHTTP(_ input: [UInt8], invalidAfter n: Int) {
        #expect(HTTPRequestHead.parse(input[..<(n - 1)]).isIncomplete, "\(n - 1) bytes should still be incomplete")
        #expect(HTTPRequestHead.parse(input[..<n]).isInvalid, "\(n) bytes should be invalid")
        #expect(HTTPRequestHead.parse(input).isInvalid)
    }

    @Test("an SSH banner is invalid at its line end")
    func sshBanner() {
        let banner = bytes("SSH-2.0-OpenSSH_9.6\r\n")
        #expect(HTTPRequestHead.parse(banner.dropLast(2)).isIncomplete)
        #expect(HTTPRequestHead.parse(banner).isInvalid)
    }

    @Test("a head without its blank line in 16384 bytes is invalid")
    func tooLong() {
        let start = bytes("GET / HTTP/1.1\r\nX-Long: ")
        let almost = start + [UInt8](repeating: 0x61, count: maxPeekLength - 1 - start.count)
        #expect(HTTPRequestHead.parse(almost).isIncomplete)
        #expect(HTTPRequestHead.parse(almost + [0x61]).isInvalid)
        #expect(HTTPRequestHead.parse(almost + [0x61, 0x0d, 0x0a, 0x0d, 0x0a]).isInvalid)
        // Ending exactly at 16384 bytes is fine.
        let fits = start + [UInt8](repeating: 0x61, count: maxPeekLength - 4 - start.count) + bytes("\r\n\r\n")
        #expect(HTTPRequestHead.parse(fits).value?.headLength == maxPeekLength)
    }

    @Test("the parser takes any collection of bytes (an array slice not starting at 0)")
    func slices() {
        let padded = [0xff, 0xff] + bytes(Self.curlGET)
        #expect(HTTPRequestHead.parse(padded[2...]).value?.method == "GET")
        #expect(HTTPRequestHead.parse(Self.curlGET.utf8).value?.method == "GET")
    }

    // MARK: Responses

    @Test("a 200 with Content-Length and Content-Type")
    func ok200() throws {
        let text = "HTTP/1.1 200 OK\r\nContent-Type: video/MP4\r\nContent-Length: 104857600\r\nServer: nginx\r\n\r\n"
        let head = try #require(HTTPResponseHead.parse(bytes(text) + [1, 2, 3]).value)
        #expect(head.version == "HTTP/1.1")
        #expect(head.status == 200)
        #expect(head.reason == "OK")
        #expect(head.contentLength == 104_857_600)
        #expect(head.contentType == "video/MP4")
        #expect(head.headLength == text.utf8.count)
    }

    @Test("chunked: no content length, whatever Content-Length says")
    func chunked() throws {
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 10\r\n\r\n"
        let head = try #require(HTTPResponseHead.parse(bytes(text)).value)
        #expect(head.contentLength == nil)
    }

    @Test("a 404 with a reason of several words, bare LF")
    func notFound() throws {
        let head = try #require(HTTPResponseHead.parse(bytes("HTTP/1.0 404 Not Found\nContent-Length: 0\n\n")).value)
        #expect(head.status == 404)
        #expect(head.reason == "Not Found")
        #expect(head.version == "HTTP/1.0")
        #expect(head.contentLength == 0)
        #expect(head.contentType == nil)
    }

    @Test("status lines without a reason", arguments: ["HTTP/1.1 204\r\n\r\n", "HTTP/1.1 204 \r\n\r\n"])
    func noReason(_ text: String) {
        #expect(HTTPResponseHead.parse(bytes(text)).value?.status == 204)
        #expect(HTTPResponseHead.parse(bytes(text)).value?.reason == "")
    }

    @Test("Content-Length: equal repeats are kept, disagreeing or malformed ones are dropped", arguments: [
        (["Content-Length: 5", "Content-Length: 5"], 5),
        (["Content-Length: 5", "Content-Length: 6"], nil),
        (["Content-Length: -5"], nil),
        (["Content-Length: 5, 5"], nil),
        (["Content-Length: 99999999999999999999999"], nil),
        ([], nil),
    ] as [([String], Int?)])
    func contentLength(_ lines: [String], _ expected: Int?) {
        let text = "HTTP/1.1 200 OK\r\n" + lines.map { $0 + "\r\n" }.joined() + "\r\n"
        #expect(HTTPResponseHead.parse(bytes(text)).value?.contentLength == expected)
    }

    @Test("a response cut at every offset is incomplete until complete")
    func responsePrefixes() {
        let all = bytes("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\n\r\n")
        for n in 0..<all.count { #expect(HTTPResponseHead.parse(all[..<n]).isIncomplete, "\(n) bytes") }
        #expect(HTTPResponseHead.parse(all).value?.status == 206)
    }

    @Test("bytes that are not a response head are invalid", arguments: [
        "GET / HTTP/1.1\r\n", "HTTP/1.1 20\r\n\r\n", "HTTP/1.1 2000 OK\r\n", "HTTP/1.1 abc OK\r\n",
        "HTTP/1.1  200 OK\r\n", "HTTP/1.1 200OK\r\n", "HTTP/2 200\r\n", "SSH-2.0-x\r\n",
    ])
    func badResponses(_ text: String) {
        #expect(HTTPResponseHead.parse(bytes(text)).isInvalid)
    }
}
