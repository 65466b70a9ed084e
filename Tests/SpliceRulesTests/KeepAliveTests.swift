import Foundation
import Testing
@testable import SpliceRules

/// What the balancer's keep-alive re-routing reads of a request and its response
/// (SpliceRules/KeepAlive.swift), and the per-request rule fields.
@Suite("Keep-alive re-routing: requests, responses, rules")
struct KeepAliveTests {
    @Test("a whole HTTP/1.1 request (with a small body or none), one still coming, and what is not one")
    func framing() {
        func framing(_ text: String, limit: Int = 100) -> HTTPRequestHead.PerRequestFraming {
            HTTPRequestHead.perRequestFraming(Array(text.utf8), limit: limit)
        }
        let get = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        #expect(framing(get) == .whole)
        #expect(framing("DELETE /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n") == .whole)
        #expect(framing("POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc") == .whole)
        // The body still coming; larger than the limit (here 100 bytes in all).
        #expect(framing("POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nab") == .awaitingBody)
        #expect(framing("POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\n") == .awaitingBody)
        #expect(framing("POST /a HTTP/1.1\r\nContent-Length: 80\r\n\r\n") == .unsuitable)
        // Chunked, Expect: 100-continue, two lengths, a bad length, a pipelined second request,
        // bytes past the body, half a head, HTTP/1.0.
        #expect(framing("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == .unsuitable)
        #expect(framing("POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n") == .unsuitable)
        #expect(framing("POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc") == .unsuitable)
        #expect(framing("POST /a HTTP/1.1\r\nContent-Length: -3\r\n\r\n") == .unsuitable)
        #expect(framing(get + get) == .unsuitable)
        #expect(framing("POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcd") == .unsuitable)
        #expect(framing(String(get.dropLast(2))) == .unsuitable)
        #expect(framing("GET /a HTTP/1.0\r\n\r\n") == .unsuitable)
    }

    func head(_ text: String) -> HTTPResponseHead? {
        if case .complete(let h) = HTTPResponseHead.parse(Array(text.utf8)) { return h }
        return nil
    }

    @Test("the body's length, and whether the backend closes after it")
    func responses() throws {
        let ok = try #require(head("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"))
        #expect(ok.body(method: "GET") == .length(1000))
        #expect(ok.body(method: "HEAD") == .length(0))
        #expect(!ok.closesConnection)
        #expect(try #require(head("HTTP/1.1 304 Not Modified\r\n\r\n")).body(method: "GET") == .length(0))
        #expect(try #require(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")).body(method: "GET") == .chunked)
        #expect(try #require(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n")).body(method: "GET") == .chunked)
        #expect(try #require(head("HTTP/1.0 200 OK\r\n\r\n")).body(method: "GET") == .untilClose)
        #expect(try #require(head("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\n\r\n")).closesConnection)
        #expect(try #require(head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")).closesConnection)
        #expect(!(try #require(head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n")).closesConnection))
    }

    @Test("the head a client keeps its connection with: HTTP/1.1, no Connection header")
    func keepingAlive() {
        let text = "HTTP/1.0 200 OK\r\nServer: x\r\nConnection: close\r\nContent-Length: 5\r\nconnection:close\r\n\r\n"
        let out = String(decoding: HTTPResponseHead.keepingAlive(Array(text.utf8)[...]), as: UTF8.self)
        #expect(out == "HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 5\r\n\r\n")
        let parsed = head(out)
        #expect(parsed?.closesConnection == false && parsed?.contentLength == 5)
    }

    @Test("perRequest only with splice; fin process only with perRequest; JSON leaves defaults out")
    func ruleFields() throws {
        let any = RuleMatch(pathPrefix: "/a/")
        #expect(throws: RuleError.self) { try RuleSet(rules: [SpliceRule(match: any, action: .proxy, perRequest: true)]).validate() }
        #expect(throws: RuleError.self) { try RuleSet(rules: [SpliceRule(match: any, action: .splice, fin: .process)]).validate() }
        let good = SpliceRule(id: 1, match: any, action: .splice, perRequest: true, fin: .process)
        try RuleSet(rules: [good]).validate()
        #expect(good.describe().contains("per-request fin=process"))
        let data = try JSONEncoder().encode(RuleSet(rules: [good, SpliceRule(id: 2, match: any, action: .splice)]))
        let json = String(decoding: data, as: UTF8.self)
        #expect(json.contains(#""perRequest":true"#) && json.contains(#""fin":"process""#))
        #expect(json.components(separatedBy: "perRequest").count == 2)
        #expect(try JSONDecoder().decode(RuleSet.self, from: data).rules.first == good)
    }
}
