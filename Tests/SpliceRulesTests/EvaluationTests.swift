import Testing
import SpliceWire
@testable import SpliceRules

@Suite("Rule evaluation")
struct EvaluationTests {
    static let conn = ConnectionFacts(client: IPAddress("10.1.2.3")!, server: IPAddress("192.0.2.10")!, serverPort: 80)
    static let tlsConn = ConnectionFacts(client: IPAddress("2001:db8::5")!, server: IPAddress("192.0.2.10")!, serverPort: 443)

    /// Facts from the text of a request; final unless told otherwise.
    static func request(_ text: String, isFinal: Bool = true) -> RequestFacts {
        RequestFacts(firstBytes: bytes(text), isFinal: isFinal)
    }

    static func tls(_ sni: String?, isFinal: Bool = true) -> RequestFacts {
        RequestFacts(firstBytes: TLSBuilder.records(TLSBuilder.clientHello(sni: sni)), isFinal: isFinal)
    }

    static func rules(_ list: [(RuleMatch, RuleAction)], default action: RuleAction = .proxy) -> RuleSet {
        RuleSet(rules: list.enumerated().map { SpliceRule(id: $0.offset + 1, match: $0.element.0, action: $0.element.1) },
                defaultAction: action)
    }

    static func get(host: String = "www.example.com", target: String = "/", extra: String = "") -> String {
        "GET \(target) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: curl/8.5.0\r\n\(extra)\r\n"
    }

    @Test("request facts from bytes: http, tls, other, or not known yet")
    func facts() {
        #expect(Self.request(Self.get()).proto.map { if case .http = $0 { true } else { false } } == true)
        #expect(Self.tls("a.example").proto == .tls(TLSClientHello(serverName: "a.example", alpnProtocols: ["h2", "http/1.1"])))
        #expect(Self.request("SSH-2.0-OpenSSH_9.6\r\n").proto == .other)
        #expect(Self.request("GET / HTTP/1.1\r\n", isFinal: false).proto == nil)
        #expect(RequestFacts(firstBytes: [], isFinal: false).proto == nil)
        #expect(Self.request("GET / HTTP/1.1\r\n").bytesSeen == 16)
        #expect(RequestFacts(firstBytes: [UInt8](repeating: 0x41, count: maxPeekLength), isFinal: false).isFinal)
    }

    @Test("the first matching rule wins")
    func firstMatchWins() {
        let set = Self.rules([
            (RuleMatch(host: "other.example"), .bypass),
            (RuleMatch(host: "www.example.com"), .splice),
            (RuleMatch(host: "*"), .bypass),
        ])
        #expect(set.decide(connection: Self.conn, request: Self.request(Self.get())) == .decided(action: .splice, ruleID: 2))
        #expect(set.decide(connection: Self.conn, request: Self.request(Self.get(host: "x.example"))) == .decided(action: .bypass, ruleID: 3))
    }

    @Test("connection-only rules decide before any byte; a rule needing bytes asks for them")
    func connectionOnly() {
        let set = Self.rules([
            (RuleMatch(clients: ["10.9.0.0/16"], host: "*"), .bypass),
            (RuleMatch(clients: ["10.0.0.0/8"], ports: [80, 8080]), .splice),
            (RuleMatch(proto: "tls"), .bypass),
        ])
        #expect(set.decide(connection: Self.conn) == .decided(action: .splice, ruleID: 2))
        #expect(set.decide(connection: Self.tlsConn) == .needRequest)
        var inner = Self.conn
        inner.client = IPAddress("10.9.1.1")!
        #expect(set.decide(connection: inner) == .needRequest)
        #expect(set.needsFirstBytes)

        let none = Self.rules([(RuleMatch(servers: ["198.51.100.0/24"]), .bypass)], default: .splice)
        #expect(none.decide(connection: Self.conn) == .decided(action: .splice, ruleID: nil))
        #expect(!none.needsFirstBytes)
        #expect(!RuleSet.empty.needsFirstBytes)
        #expect(RuleSet.empty.decide(connection: Self.conn) == .decided(action: .proxy, ruleID: nil))
    }

    @Test("a rule on the response needs the request first (it must be HTTP)")
    func responseRuleNeedsBytes() {
        let set = Self.rules([(RuleMatch(contentType: "video/"), .splice)])
        #expect(set.needsFirstBytes)
        #expect(set.decide(connection: Self.conn) == .needRequest)
        #expect(set.decide(connection: Self.tlsConn, request: Self.tls("a.example")) == .decided(action: .proxy, ruleID: nil))
    }

    @Test("host patterns", arguments: [
        ("*.example.com", "www.example.com", true),
        ("*.example.com", "a.b.EXAMPLE.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "badexample.com", false),
        ("*", "anything.test", true),
        ("WWW.example.com", "www.example.com:8080", true),
        ("www.example.com", "www.example.com.", true),
        ("www.example.com", "www.example.org", false),
    ])
    func hostPatterns(_ pattern: String, _ host: String, _ matches: Bool) {
        let set = Self.rules([(RuleMatch(host: pattern), .splice)])
        let expected: Decision = matches ? .decided(action: .splice, ruleID: 1) : .decided(action: .proxy, ruleID: nil)
        #expect(set.decide(connection: Self.conn, request: Self.request(Self.get(host: host))) == expected)
    }

    @Test("'*' needs a Host: a request without one does not match")
    func anyHostNeedsHost() {
        let set = Self.rules([(RuleMatch(host: "*"), .splice)])
        #expect(set.decide(connection: Self.conn, request: Self.request("GET / HTTP/1.0\r\n\r\n")) == .decided(action: .proxy, ruleID: nil))
    }

    @Test("path prefix and path pattern", arguments: [
        (RuleMatch(pathPrefix: "/videos/"), "/videos/a.mp4", true),
        (RuleMatch(pathPrefix: "/videos/"), "/video/a.mp4", false),
        (RuleMatch(pathPattern: "/videos/*.mp4"), "/videos/2024/a.mp4", true),
        (RuleMatch(pathPattern: "/videos/*.mp4"), "/videos/a.mp4?t=10", false),
        (RuleMatch(pathPattern: "/videos/*.mp4*"), "/videos/a.mp4?t=10", true),
        (RuleMatch(pathPattern: "/v?/*"), "/v1/x", true),
        (RuleMatch(pathPattern: "/v?/*"), "/v10/x", false),
        (RuleMatch(pathPattern: "*"), "/", true),
        (RuleMatch(pathPattern: "/a*b*c"), "/aXbYbZc", true),
        (RuleMatch(pathPattern: "/a*b*c"), "/aXbYbZ", false),
    ] as [(RuleMatch, String, Bool)])
    func paths(_ match: RuleMatch, _ target: String, _ matches: Bool) {
        let set = Self.rules([(match, .bypass)])
        let decision = set.decide(connection: Self.conn, request: Self.request(Self.get(target: target)))
        #expect(decision == (matches ? .decided(action: .bypass, ruleID: 1) : .decided(action: .proxy, ruleID: nil)))
    }

    @Test("method is exact; header present, or with a value (case-insensitive)")
    func methodAndHeader() {
        let upgrade = Self.get(extra: "Connection: Upgrade\r\nUpgrade: WebSocket\r\n")
        let set = Self.rules([
            (RuleMatch(method: "get"), .splice),
            (RuleMatch(header: HeaderMatch(name: "UPGRADE", value: "websocket")), .bypass),
            (RuleMatch(method: "GET", header: HeaderMatch(name: "user-agent")), .splice),
        ])
        #expect(set.decide(connection: Self.conn, request: Self.request(upgrade)) == .decided(action: .bypass, ruleID: 2))
        #expect(set.decide(connection: Self.conn, request: Self.request(Self.get())) == .decided(action: .splice, ruleID: 3))
        let post = "POST / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\n\r\n"
        #expect(set.decide(connection: Self.conn, request: Self.request(post)) == .decided(action: .proxy, ruleID: nil))
    }

    @Test("sni: wildcards, and rules of the other proto do not match")
    func sni() {
        let set = Self.rules([
            (RuleMatch(host: "*"), .splice),                 // HTTP only
            (RuleMatch(sni: "*.googlevideo.com"), .splice),
            (RuleMatch(proto: "tls"), .bypass),
            (RuleMatch(proto: "other"), .splice),
        ])
        #expect(set.decide(connection: Self.tlsConn, request: Self.tls("rr3.googlevideo.com")) == .decided(action: .splice, ruleID: 2))
        #expect(set.decide(connection: Self.tlsConn, request: Self.tls("example.com")) == .decided(action: .bypass, ruleID: 3))
        #expect(set.decide(connection: Self.tlsConn, request: Self.tls(nil)) == .decided(action: .bypass, ruleID: 3))
        #expect(set.decide(connection: Self.conn, request: Self.request("SSH-2.0-x\r\n")) == .decided(action: .splice, ruleID: 4))
        #expect(set.decide(connection: Self.conn, request: Self.request(Self.get())) == .decided(action: .splice, ruleID: 1))
    }

    @Test("afterBytes: not reached and more may come → needRequest; final → skipped")
    func afterBytes() {
        let set = Self.rules([(RuleMatch(afterBytes: 100), .splice), (RuleMatch(proto: "http"), .bypass)])
        let short = Self.get()
        #expect(set.decide(connection: Self.conn, request: Self.request(short, isFinal: false)) == .needRequest)
        #expect(set.decide(connection: Self.conn, request: Self.request(short)) == .decided(action: .bypass, ruleID: 2))
        let long = short + String(repeating: "x", count: 100)
        #expect(set.decide(connection: Self.conn, request: Self.request(long, isFinal: false)) == .decided(action: .splice, ruleID: 1))
    }

    @Test("a proto not known yet: needRequest before a rule that needs it, not after a decision")
    func unknownProto() {
        let partial = Self.request("GET / HTTP/1.1\r\nHo", isFinal: false)
        let set = Self.rules([(RuleMatch(ports: [443]), .bypass), (RuleMatch(host: "a"), .splice), (RuleMatch(), .bypass)])
        #expect(set.decide(connection: Self.conn, request: partial) == .needRequest)
        var final = partial
        final.isFinal = true
        #expect(set.decide(connection: Self.conn, request: final) == .decided(action: .bypass, ruleID: 3))
        let early = Self.rules([(RuleMatch(ports: [80]), .splice), (RuleMatch(host: "a"), .bypass)])
        #expect(early.decide(connection: Self.conn, request: partial) == .decided(action: .splice, ruleID: 1))
        // A rule whose connection part does not match is not waited for.
        let other = Self.rules([(RuleMatch(ports: [443], host: "a"), .bypass)], default: .splice)
        #expect(other.decide(connection: Self.conn, request: partial) == .decided(action: .splice, ruleID: nil))
    }

    @Test("no request facts (timeout, unparsable) → the default action")
    func noRequest() {
        let set = Self.rules([(RuleMatch(), .bypass)], default: .splice)
        #expect(set.decide(connection: Self.conn, request: nil) == .decided(action: .splice, ruleID: nil))
    }

    @Test("response candidates, in order, with the fallback that ends the walk")
    func responseCandidates() {
        let set = Self.rules([
            (RuleMatch(host: "*.example.com", contentLengthAbove: 1_000_000), .splice),
            (RuleMatch(host: "other.test"), .bypass),
            (RuleMatch(status: [206]), .splice),
            (RuleMatch(pathPrefix: "/"), .proxy),
            (RuleMatch(contentType: "video/"), .bypass),
        ], default: .bypass)
        let d = set.decide(connection: Self.conn, request: Self.request(Self.get()))
        #expect(d == .needResponse(candidates: [1, 3], fallback: .proxy, fallbackRuleID: 4))

        func respond(_ text: String) -> Decision {
            set.decide(response: HTTPResponseHead.parse(bytes(text)).value, candidates: [1, 3], fallback: .proxy, fallbackRuleID: 4)
        }
        #expect(respond("HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n") == .decided(action: .splice, ruleID: 1))
        #expect(respond("HTTP/1.1 206 Partial Content\r\nContent-Length: 500\r\n\r\n") == .decided(action: .splice, ruleID: 3))
        #expect(respond("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") == .decided(action: .proxy, ruleID: 4))
        #expect(set.decide(response: nil, candidates: [1, 3], fallback: .proxy, fallbackRuleID: 4) == .decided(action: .proxy, ruleID: 4))

        // Without the fallback rule the default takes its place.
        var noFallback = set
        noFallback.rules.remove(at: 3)
        #expect(noFallback.decide(connection: Self.conn, request: Self.request(Self.get()))
            == .needResponse(candidates: [1, 3, 5], fallback: .bypass, fallbackRuleID: nil))
        #expect(noFallback.decide(response: HTTPResponseHead.parse(bytes("HTTP/1.1 200 OK\r\nContent-Type: Video/mp4\r\n\r\n")).value,
                                  candidates: [1, 3, 5], fallback: .bypass, fallbackRuleID: nil) == .decided(action: .bypass, ruleID: 5))
    }

    @Test("an undecidable rule after a candidate still asks for more bytes (it may be the fallback)")
    func candidateThenUndecided() {
        let set = Self.rules([(RuleMatch(status: [200]), .splice), (RuleMatch(afterBytes: 1000), .bypass)])
        #expect(set.decide(connection: Self.conn, request: Self.request(Self.get(), isFinal: false)) == .needRequest)
        #expect(set.decide(connection: Self.conn, request: Self.request(Self.get()))
            == .needResponse(candidates: [1], fallback: .proxy, fallbackRuleID: nil))
    }
}
