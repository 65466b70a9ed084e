import Foundation
import Testing
@testable import SpliceRules

@Suite("Rule sets: validation, JSON, description")
struct RuleSetTests {
    /// The message `validate()` throws for a set holding `match` as its only rule (or at
    /// `position` after valid rules), nil when it is accepted.
    static func problem(_ match: RuleMatch, id: Int = 0, position: Int = 1, name: String? = nil) -> String? {
        let filler = Array(repeating: SpliceRule(match: RuleMatch(ports: [80]), action: .proxy), count: position - 1)
        let set = RuleSet(rules: filler + [SpliceRule(id: id, name: name, match: match, action: .splice)])
        do {
            try set.validate()
            return nil
        } catch {
            return error.description
        }
    }

    @Test("each bad field is named, with the rule's position or id", arguments: [
        (RuleMatch(host: ""), "rule 3: host '' is empty"),
        (RuleMatch(clients: ["10.0.0.0/33"]), "rule 3: prefix '10.0.0.0/33' is not an address prefix"),
        (RuleMatch(servers: ["10.0.0.0/8", "example.com"]), "rule 3: prefix 'example.com' is not an address prefix"),
        (RuleMatch(clients: []), "rule 3: clients is an empty list"),
        (RuleMatch(ports: [80, 0]), "rule 3: port 0 is not a port"),
        (RuleMatch(ports: []), "rule 3: ports is an empty list"),
        (RuleMatch(afterBytes: 0), "rule 3: afterBytes 0 is out of range (1-16384)"),
        (RuleMatch(afterBytes: 16385), "rule 3: afterBytes 16385 is out of range (1-16384)"),
        (RuleMatch(proto: "ftp"), "rule 3: proto 'ftp' is not one of http, tls, other"),
        (RuleMatch(proto: "tls", status: [200]),
         "rule 3: a response match (status, contentLengthAbove, contentType) cannot be combined with proto tls or other, or with sni"),
        (RuleMatch(sni: "a.example", contentType: "video/"),
         "rule 3: a response match (status, contentLengthAbove, contentType) cannot be combined with proto tls or other, or with sni"),
        (RuleMatch(proto: "other", host: "a"),
         "rule 3: HTTP fields (method, host, pathPrefix, pathPattern, header) cannot be combined with proto tls or other, or with sni"),
        (RuleMatch(proto: "http", sni: "a"), "rule 3: sni cannot be combined with proto http"),
        (RuleMatch(pathPattern: "videos/*"), "rule 3: pathPattern must start with '/' or '*'"),
        (RuleMatch(pathPattern: "/a b"), "rule 3: pathPattern '/a b' contains whitespace"),
        (RuleMatch(pathPrefix: ""), "rule 3: pathPrefix '' is empty"),
        (RuleMatch(status: [200, 600]), "rule 3: status 600 is out of range (100-599)"),
        (RuleMatch(status: [99]), "rule 3: status 99 is out of range (100-599)"),
        (RuleMatch(status: []), "rule 3: status is an empty list"),
        (RuleMatch(contentLengthAbove: -1), "rule 3: contentLengthAbove -1 is negative"),
        (RuleMatch(contentType: ""), "rule 3: contentType '' is empty"),
        (RuleMatch(header: HeaderMatch(name: "")), "rule 3: header name '' is empty"),
        (RuleMatch(header: HeaderMatch(name: "X-A:")), "rule 3: header name 'X-A:' contains ':', whitespace or another separator"),
        (RuleMatch(header: HeaderMatch(name: "X A")), "rule 3: header name 'X A' contains ':', whitespace or another separator"),
        (RuleMatch(method: ""), "rule 3: method '' is empty"),
        (RuleMatch(method: "G T"), "rule 3: method 'G T' is not an HTTP method (a token: no whitespace or separators)"),
        (RuleMatch(sni: "a.*.example"), "rule 3: sni 'a.*.example' has a '*' that is not a whole leading label ('*.example.com')"),
        (RuleMatch(host: "*."), "rule 3: host '*.' has nothing after '*.'"),
        (RuleMatch(host: "a b"), "rule 3: host 'a b' contains whitespace"),
    ] as [(RuleMatch, String)])
    func badField(_ match: RuleMatch, _ message: String) {
        #expect(Self.problem(match, position: 3) == message)
    }

    @Test("a rule with an id is named by it")
    func namedByID() {
        #expect(Self.problem(RuleMatch(host: ""), id: 17, position: 2) == "rule 17: host '' is empty")
    }

    @Test("good rules pass", arguments: [
        RuleMatch(),
        RuleMatch(clients: ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"], servers: ["::/0"], ports: [443]),
        RuleMatch(proto: "http", method: "GET", host: "*.example.com", pathPrefix: "/v/", pathPattern: "*.mp4",
                  header: HeaderMatch(name: "Range"), afterBytes: 1, status: [200, 206],
                  contentLengthAbove: 0, contentType: "video/"),
        RuleMatch(proto: "tls", sni: "*"),
        RuleMatch(proto: "other", afterBytes: 16384),
    ])
    func goodRules(_ match: RuleMatch) {
        #expect(Self.problem(match) == nil)
    }

    @Test("set-level limits: rule count, timeout, duplicate ids, name length")
    func setLimits() {
        func problem(_ set: RuleSet) -> String? {
            do { try set.validate(); return nil } catch { return error.description }
        }
        let rule = SpliceRule(match: RuleMatch(), action: .splice)
        #expect(problem(RuleSet(rules: Array(repeating: rule, count: 256))) == nil)
        #expect(problem(RuleSet(rules: Array(repeating: rule, count: 257))) == "257 rules: more than 256")
        #expect(problem(RuleSet(firstBytesTimeoutMilliseconds: 9)) == "firstBytesTimeoutMilliseconds 9 is out of range (10-600000)")
        #expect(problem(RuleSet(firstBytesTimeoutMilliseconds: 600_001)) == "firstBytesTimeoutMilliseconds 600001 is out of range (10-600000)")
        #expect(problem(RuleSet(firstBytesTimeoutMilliseconds: 10)) == nil)
        let twice = RuleSet(rules: [SpliceRule(id: 4, match: RuleMatch(), action: .splice),
                                    SpliceRule(id: 4, match: RuleMatch(), action: .proxy)])
        #expect(problem(twice) == "rule 4: id 4 is used by an earlier rule")
        #expect(Self.problem(RuleMatch(), name: String(repeating: "n", count: 64)) == nil)
        #expect(Self.problem(RuleMatch(), name: String(repeating: "n", count: 65)) == "rule 1: name is longer than 64 characters")
    }

    @Test("JSON round trip; absent optional fields are left out")
    func codable() throws {
        let set = RuleSet(rules: [
            SpliceRule(id: 1, name: "videos", match: RuleMatch(host: "*.example.com", contentLengthAbove: 1_000_000), action: .splice),
            SpliceRule(id: 2, match: RuleMatch(ports: [443], sni: "*.example.com"), action: .bypass),
            SpliceRule(id: 3, match: RuleMatch(header: HeaderMatch(name: "Upgrade", value: "websocket")), action: .bypass),
        ], defaultAction: .splice, firstBytesTimeoutMilliseconds: 500, version: 9)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(set)
        #expect(try JSONDecoder().decode(RuleSet.self, from: data) == set)

        let json = String(decoding: data, as: UTF8.self)
        #expect(json.contains(#"{"action":"bypass","id":2,"match":{"ports":[443],"sni":"*.example.com"}}"#))
        #expect(json.contains(#"{"name":"Upgrade","value":"websocket"}"#))
        #expect(!json.contains("null"))
        #expect(!json.contains("clients"))
    }

    @Test("JSON written by hand: left-out fields take their defaults")
    func decodeDefaults() throws {
        let json = #"{"rules":[{"action":"splice","match":{"host":"a.example"}},{"action":"bypass"}]}"#
        let set = try JSONDecoder().decode(RuleSet.self, from: Data(json.utf8))
        #expect(set == RuleSet(rules: [SpliceRule(match: RuleMatch(host: "a.example"), action: .splice),
                                       SpliceRule(match: RuleMatch(), action: .bypass)]))
        #expect(try JSONDecoder().decode(RuleSet.self, from: Data("{}".utf8)) == .empty)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(RuleSet.self, from: Data(#"{"rules":[{"action":"drop"}]}"#.utf8))
        }
    }

    @Test("describe: one line, fields in a fixed order, only those set")
    func describe() {
        let rule = SpliceRule(id: 3, match: RuleMatch(host: "*.example.com", pathPrefix: "/videos/", contentLengthAbove: 1_000_000),
                              action: .splice)
        #expect(rule.describe() == "#3 splice  host=*.example.com path-prefix=/videos/ content-length>1000000")
        let all = SpliceRule(id: 12, name: "everything", match: RuleMatch(
            clients: ["10.0.0.0/8", "::1"], servers: ["192.0.2.0/24"], ports: [80, 8080], proto: "http", method: "GET",
            host: "a", pathPrefix: "/p", pathPattern: "/p/*", header: HeaderMatch(name: "Range", value: "bytes=0-"),
            afterBytes: 10, status: [200, 206], contentLengthAbove: 5, contentType: "video/"), action: .proxy)
        #expect(all.describe() == "#12 proxy   clients=10.0.0.0/8,::1 servers=192.0.2.0/24 ports=80,8080 proto=http method=GET host=a "
            + "path-prefix=/p path-pattern=/p/* header=Range:bytes=0- after-bytes=10 status=200,206 content-length>5 "
            + "content-type=video/  # everything")
        #expect(SpliceRule(match: RuleMatch(sni: "x"), action: .bypass).describe() == "#0 bypass  sni=x")
        #expect(SpliceRule(match: RuleMatch(), action: .bypass).describe() == "#0 bypass  any")
    }
}
