import Testing
@testable import SpliceRules

@Suite("TLS ClientHello")
struct TLSClientHelloTests {
    typealias B = TLSBuilder

    @Test("a ClientHello with SNI and ALPN in one record")
    func withSNI() throws {
        let input = B.records(B.clientHello(sni: "Example.COM"))
        let hello = try #require(TLSClientHello.parse(input).value)
        #expect(hello.serverName == "example.com")
        #expect(hello.alpnProtocols == ["h2", "http/1.1"])
        #expect(hello.legacyVersion == 0x0303)
        // What follows the ClientHello (early data, say) does not matter.
        #expect(TLSClientHello.parse(input + [23, 3, 3, 0, 5, 1, 2, 3, 4, 5]).value == hello)
    }

    @Test("no extensions at all, or extensions without server_name: no server name")
    func withoutSNI() {
        #expect(TLSClientHello.parse(B.records(B.clientHello(sni: nil, withExtensions: false))).value
            == TLSClientHello(legacyVersion: 0x0303, serverName: nil, alpnProtocols: []))
        let hello = TLSClientHello.parse(B.records(B.clientHello(sni: nil, alpn: []))).value
        #expect(hello != nil)
        #expect(hello?.serverName == nil)
    }

    @Test("a ClientHello split across records, at any cut, parses the same", arguments: [
        [1], [3], [4], [40], [100], [150, 151], [2, 60, 200],
    ])
    func splitAcrossRecords(_ cuts: [Int]) throws {
        let message = B.clientHello(sni: "video.example.org")
        let hello = try #require(TLSClientHello.parse(B.records(message, cutAt: cuts)).value)
        #expect(hello.serverName == "video.example.org")
        #expect(hello == TLSClientHello.parse(B.records(message)).value)
    }

    @Test("one record per byte", arguments: [false, true])
    func recordPerByte(_ withSNI: Bool) {
        let message = B.clientHello(sni: withSNI ? "a.example" : nil)
        let input = B.records(message, cutAt: Array(1..<message.count))
        #expect(TLSClientHello.parse(input).value?.serverName == (withSNI ? "a.example" : nil))
    }

    @Test("every prefix of one or two records is incomplete", arguments: [[], [70]])
    func everyPrefix(_ cuts: [Int]) {
        let input = B.records(B.clientHello(sni: "example.com"), cutAt: cuts)
        for n in 0..<input.count {
            #expect(TLSClientHello.parse(input[..<n]).isIncomplete, "\(n) bytes")
        }
        #expect(TLSClientHello.parse(input).value?.serverName == "example.com")
    }

    @Test("the first bytes that show it is not a ClientHello make it invalid")
    func earlyInvalid() {
        #expect(TLSClientHello.parse([0x17]).isInvalid)                       // application data
        #expect(TLSClientHello.parse([0x16, 0x02]).isInvalid)                 // major version 2
        #expect(TLSClientHello.parse(bytes("GET / HTTP/1.1\r\n")).isInvalid)
        #expect(TLSClientHello.parse([0x16, 0x03, 0x01, 0x00, 0x00]).isInvalid)   // an empty record
        #expect(TLSClientHello.parse([0x16, 0x03, 0x01, 0x40, 0x01]).isInvalid)   // a record over 16384
        #expect(TLSClientHello.parse([0x16, 0x03, 0x01, 0x00, 0x30, 0x02]).isInvalid)  // a ServerHello
        // A handshake length that cannot fit in 16384 bytes.
        #expect(TLSClientHello.parse([0x16, 0x03, 0x01, 0x00, 0x30, 0x01, 0x00, 0x40, 0x00]).isInvalid)
        // The second record is not a handshake record.
        let message = B.clientHello(sni: "example.com")
        var two = B.records(message, cutAt: [50])
        two[5 + 50] = 23
        #expect(TLSClientHello.parse(two).isInvalid)
    }

    @Test("malformed bodies are invalid")
    func malformedBodies() {
        var message = B.clientHello(sni: "example.com")
        // legacy_session_id length 33: the lengths that follow no longer add up either.
        var badSession = message
        badSession[4 + 2 + 32] = 33
        #expect(TLSClientHello.parse(B.records(badSession)).isInvalid)

        // A byte after the extensions.
        let body = Array(message[4...]) + [0]
        let grown = [1, 0, UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
        #expect(TLSClientHello.parse(B.records(grown)).isInvalid)

        // A server name with a space in it.
        message = B.clientHello(sni: "bad name")
        #expect(TLSClientHello.parse(B.records(message)).isInvalid)

        // A ClientHello cut short of its cipher suites, with a length that says so.
        let short: [UInt8] = [1, 0, 0, 34, 3, 3] + [UInt8](repeating: 0, count: 32)
        #expect(TLSClientHello.parse(B.records(short)).isInvalid)
    }

    @Test("a ClientHello that needs more than 16384 bytes is invalid; just under is fine")
    func sizeLimit() {
        let base = B.clientHello(sni: "example.com").count
        // A padding extension (type 21) brings the message to the wanted size.
        func padded(to size: Int) -> [UInt8] {
            B.clientHello(sni: "example.com", extra: B.ext(21, [UInt8](repeating: 0, count: size - base - 4)))
        }
        let fits = B.records(padded(to: 16384 - 5 - 5), cutAt: [8000])
        #expect(fits.count == 16384)
        #expect(TLSClientHello.parse(fits).value?.serverName == "example.com")
        let over = B.records(padded(to: 16384 - 5 - 5 + 1), cutAt: [8000])
        #expect(TLSClientHello.parse(over).isInvalid)
        #expect(TLSClientHello.parse(over.prefix(16384)).isInvalid)
        #expect(TLSClientHello.parse(over.prefix(16383)).isIncomplete)
    }
}
