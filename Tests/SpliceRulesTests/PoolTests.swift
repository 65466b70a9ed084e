import Foundation
import Testing
import SpliceWire
@testable import SpliceRules

@Suite("Pools: members, JSON, validation")
struct PoolTests {
    static func problem(_ set: RuleSet) -> String? {
        do { try set.validate(); return nil } catch { return error.description }
    }

    let web = Pool(name: "web", backends: [Backend(address: "10.0.0.11", port: 80),
                                           Backend(address: "10.0.0.12", port: 80, weight: 2)])

    // MARK: Backend text

    @Test("members as the CLI writes them", arguments: [
        ("10.0.0.11:80", Backend(address: "10.0.0.11", port: 80), "10.0.0.11:80"),
        ("10.0.0.11:8080:3", Backend(address: "10.0.0.11", port: 8080, weight: 3), "10.0.0.11:8080"),
        ("[2001:db8::11]:443", Backend(address: "2001:db8::11", port: 443), "[2001:db8::11]:443"),
        ("[2001:DB8:0:0::11]:443:256", Backend(address: "2001:db8::11", port: 443, weight: 256), "[2001:db8::11]:443"),
        ("[::ffff:10.0.0.1]:80", Backend(address: "10.0.0.1", port: 80), "10.0.0.1:80"),
        ("1.2.3.4:65535:1", Backend(address: "1.2.3.4", port: 65535), "1.2.3.4:65535"),
    ] as [(String, Backend, String)])
    func parseGood(_ text: String, _ expected: Backend, _ key: String) throws {
        let b = try Backend.parse(text)
        #expect(b == expected)
        #expect(b.key == key)
    }

    @Test("a bad member is refused, naming the text and what is wrong", arguments: [
        ("10.0.0.11", "no port"),
        ("10.0.0.11:", "port '' is not a port (1-65535)"),
        ("10.0.0.11:0", "port '0' is not a port (1-65535)"),
        ("10.0.0.11:65536", "port '65536' is not a port (1-65535)"),
        ("10.0.0.11:http", "port 'http' is not a port (1-65535)"),
        ("10.0.0.11:80:0", "weight '0' is not a number from 1 to 256"),
        ("10.0.0.11:80:257", "weight '257' is not a number from 1 to 256"),
        ("10.0.0.11:80:x", "weight 'x' is not a number from 1 to 256"),
        ("10.0.0.11:80:1:1", "more than a port and a weight after the address"),
        ("backend.example:80", "'backend.example' is not an IPv4 or IPv6 address"),
        ("10.0.0.256:80", "'10.0.0.256' is not an IPv4 or IPv6 address"),
        ("2001:db8::11:80", "an IPv6 address must be in brackets"),
        ("::1:80", "an IPv6 address must be in brackets"),
        ("[2001:db8::11:80", "no ']' after the IPv6 address"),
        ("[2001:db8::11]80", "no ':PORT' after ']'"),
        ("[2001:db8::11]", "no ':PORT' after ']'"),
        ("[2001:db8::zz]:80", "'2001:db8::zz' is not an IPv4 or IPv6 address"),
        ("", "no port"),
        (":80", "'' is not an IPv4 or IPv6 address"),
    ] as [(String, String)])
    func parseBad(_ text: String, _ why: String) {
        #expect(throws: RuleError("backend '\(text)': \(why) (expected ADDRESS:PORT[:WEIGHT], [IPv6]:PORT[:WEIGHT])")) {
            try Backend.parse(text)
        }
    }

    // MARK: JSON

    @Test("JSON round trip of pools and a rule naming one; absent fields are left out")
    func codable() throws {
        let set = RuleSet(rules: [SpliceRule(id: 1, match: RuleMatch(host: "img.example.com"), action: .splice, pool: "images"),
                                  SpliceRule(id: 2, match: RuleMatch(), action: .proxy)],
                          version: 4,
                          pools: [web,
                                  Pool(name: "images", method: .headerHash, hashHeader: "X-User",
                                       backends: [Backend(address: "2001:db8::21", port: 80, drained: true)]),
                                  Pool(name: "empty", method: .leastConnections)])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(set)
        #expect(try JSONDecoder().decode(RuleSet.self, from: data) == set)
        let json = String(decoding: data, as: UTF8.self)
        #expect(json.contains(#"{"action":"splice","id":1,"match":{"host":"img.example.com"},"pool":"images"}"#))
        #expect(json.contains(#"{"action":"proxy","id":2,"match":{}}"#))
        #expect(json.contains(#"{"backends":[],"method":"least-connections","name":"empty"}"#))
        #expect(json.contains(#"{"address":"2001:db8::21","drained":true,"port":80,"weight":1}"#))
        #expect(!json.contains("null"))
    }

    @Test("old JSON without pools still decodes: no pools, rules without one")
    func oldJSON() throws {
        let json = #"{"rules":[{"id":3,"action":"splice","match":{"ports":[80]}}],"defaultAction":"proxy","version":7}"#
        let set = try JSONDecoder().decode(RuleSet.self, from: Data(json.utf8))
        #expect(set.pools.isEmpty && set.rules.count == 1 && set.rules[0].pool == nil && set.version == 7)
        #expect(Self.problem(set) == nil)
    }

    @Test("JSON written by hand: a pool's method, hashHeader and backends, a member's weight and drained may be left out")
    func decodeDefaults() throws {
        let json = #"{"pools":[{"name":"web","backends":[{"address":"10.0.0.11","port":80}]},{"name":"none"}]}"#
        let set = try JSONDecoder().decode(RuleSet.self, from: Data(json.utf8))
        #expect(set.pools == [Pool(name: "web", backends: [Backend(address: "10.0.0.11", port: 80)]), Pool(name: "none")])
        #expect(set.pools[0].backends[0].weight == 1 && set.pools[0].backends[0].drained == false)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(Pool.self, from: Data(#"{"name":"x","method":"random"}"#.utf8))
        }
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(Backend.self, from: Data(#"{"address":"10.0.0.1","port":70000}"#.utf8))
        }
    }

    // MARK: Validation

    @Test("each bad pool or pool reference is refused, naming the pool or rule and the field", arguments: [
        (RuleSet(pools: [Pool(name: "")]), "pool 1: name '' is empty"),
        (RuleSet(pools: [Pool(name: "a"), Pool(name: "a b")]), "pool 2: name 'a b' may hold only A-Z a-z 0-9 _ . -"),
        (RuleSet(pools: [Pool(name: "wéb")]), "pool 1: name 'wéb' may hold only A-Z a-z 0-9 _ . -"),
        (RuleSet(pools: [Pool(name: String(repeating: "p", count: 65))]),
         "pool 1: name '\(String(repeating: "p", count: 65))' is longer than 64 characters"),
        (RuleSet(pools: [Pool(name: "web"), Pool(name: "web")]), "pool 'web': name is used by an earlier pool"),
        (RuleSet(pools: [Pool(name: "web", method: .headerHash)]), "pool 'web': method header-hash needs a hashHeader"),
        (RuleSet(pools: [Pool(name: "web", method: .headerHash, hashHeader: "")]),
         "pool 'web': hashHeader '' is not a header name (a token: no ':', whitespace or other separator)"),
        (RuleSet(pools: [Pool(name: "web", method: .headerHash, hashHeader: "X-User:")]),
         "pool 'web': hashHeader 'X-User:' is not a header name (a token: no ':', whitespace or other separator)"),
        (RuleSet(pools: [Pool(name: "web", method: .sourceHash, hashHeader: "X-User")]),
         "pool 'web': hashHeader is only for method header-hash, not source-hash"),
        (RuleSet(pools: [Pool(name: "web", backends: [Backend(address: "backend.example", port: 80)])]),
         "pool 'web': backend backend.example:80: address 'backend.example' is not an IPv4 or IPv6 address"),
        (RuleSet(pools: [Pool(name: "web", backends: [Backend(address: "10.0.0.1", port: 0)])]),
         "pool 'web': backend 10.0.0.1:0: port 0 is not a port"),
        (RuleSet(pools: [Pool(name: "web", backends: [Backend(address: "10.0.0.1", port: 80, weight: 0)])]),
         "pool 'web': backend 10.0.0.1:80: weight 0 is out of range (1-256)"),
        (RuleSet(pools: [Pool(name: "web", backends: [Backend(address: "2001:db8::1", port: 80, weight: 257)])]),
         "pool 'web': backend [2001:db8::1]:80: weight 257 is out of range (1-256)"),
        (RuleSet(pools: [Pool(name: "web", backends: [Backend(address: "10.0.0.1", port: 80),
                                                      Backend(address: "10.0.0.1", port: 80, weight: 2)])]),
         "pool 'web': backend 10.0.0.1:80 is given twice"),
        (RuleSet(pools: [Pool(name: "web", backends: [Backend(address: "2001:db8::1", port: 80),
                                                      Backend(address: "2001:DB8:0::1", port: 80)])]),
         "pool 'web': backend [2001:db8::1]:80 is given twice"),
        (RuleSet(pools: [Pool(name: "web", backends: (1...65).map { Backend(address: "10.0.0.\($0)", port: 80) })]),
         "pool 'web': 65 backends: more than 64"),
        (RuleSet(pools: (1...65).map { Pool(name: "p\($0)") }), "65 pools: more than 64"),
        (RuleSet(rules: [SpliceRule(match: RuleMatch(), action: .proxy),
                         SpliceRule(match: RuleMatch(), action: .splice, pool: "web")]),
         "rule 2: pool 'web' is not a pool of the set"),
        (RuleSet(rules: [SpliceRule(id: 9, match: RuleMatch(), action: .splice, pool: "")], pools: [Pool(name: "web")]),
         "rule 9: pool '' is not a pool of the set"),
        (RuleSet(rules: [SpliceRule(match: RuleMatch(), action: .bypass, pool: "web")], pools: [Pool(name: "web")]),
         "rule 1: pool 'web' is only for actions splice and proxy, not bypass"),
    ] as [(RuleSet, String)])
    func bad(_ set: RuleSet, _ message: String) {
        #expect(Self.problem(set) == message)
    }

    @Test("good pools pass: every method, 64 pools of 64 members, an empty pool a rule uses")
    func good() {
        let members = (1...64).map { Backend(address: "10.0.1.\($0)", port: 80, weight: $0 * 4) }
        #expect(Self.problem(RuleSet(pools: (1...64).map { Pool(name: "p-\($0).x_Y", backends: members) })) == nil)
        for method in BalanceMethod.allCases {
            let pool = Pool(name: "m", method: method, hashHeader: method == .headerHash ? "X-User" : nil, backends: members)
            #expect(Self.problem(RuleSet(pools: [pool])) == nil, "\(method)")
        }
        let set = RuleSet(rules: [SpliceRule(match: RuleMatch(host: "a.example"), action: .splice, pool: "empty")],
                          pools: [Pool(name: "empty")])
        #expect(Self.problem(set) == nil)
        #expect(Self.problem(RuleSet(pools: [Pool(name: String(repeating: "p", count: 64))])) == nil)
    }

    @Test("describe shows a rule's pool after its fields")
    func describe() {
        #expect(SpliceRule(id: 4, match: RuleMatch(host: "img.example.com"), action: .splice, pool: "images").describe()
            == "#4 splice  host=img.example.com pool=images")
        #expect(SpliceRule(id: 5, name: "rest", match: RuleMatch(), action: .splice, pool: "web").describe()
            == "#5 splice  any pool=web  # rest")
    }
}

@Suite("Balancing: picking a pool member")
struct BalancingTests {
    let client = IPAddress("192.0.2.1")!
    let three = [Backend(address: "10.0.0.1", port: 80), Backend(address: "10.0.0.2", port: 80),
                 Backend(address: "10.0.0.3", port: 80)]

    func pool(_ method: BalanceMethod, _ backends: [Backend]? = nil, name: String = "p") -> Pool {
        Pool(name: name, method: method, hashHeader: method == .headerHash ? "X-User" : nil, backends: backends ?? three)
    }

    /// How many of `picks` went to each member key.
    func counts(_ picks: [Backend?]) -> [String: Int] {
        picks.reduce(into: [:]) { $0[$1?.key ?? "nil", default: 0] += 1 }
    }

    /// The i-th distinct request: its own client, Host, path, header and SNI.
    func key(_ i: Int) -> BalanceKey {
        BalanceKey(client: IPAddress(ipv4: 0x0a80_0000 + UInt32(i)), host: "host\(i).example.com", path: "/item/\(i)",
                   header: "user-\(i)", sni: "sni\(i).example.com")
    }

    static let hashMethods: [BalanceMethod] = [.sourceHash, .hostHash, .pathHash, .headerHash, .sniHash]

    // MARK: Round robin

    @Test("round robin: in list order, exactly even; drained and down members are passed over")
    func roundRobin() {
        var b = Balancer()
        let p = pool(.roundRobin)
        #expect((0..<4).map { _ in b.pick(p, key: key(0))!.address } == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1"])
        var fresh = Balancer()
        let picks = (0..<3000).map { _ in fresh.pick(p, key: key(0)) }
        #expect(counts(picks) == ["10.0.0.1:80": 1000, "10.0.0.2:80": 1000, "10.0.0.3:80": 1000])

        var drained = p
        drained.backends[1].drained = true
        var c = Balancer()
        let skip = (0..<3000).map { _ in c.pick(drained, key: key(0)) }
        #expect(counts(skip) == ["10.0.0.1:80": 1500, "10.0.0.3:80": 1500])
        let down = (0..<3000).map { _ in c.pick(p, key: key(0), down: ["10.0.0.3:80"]) }
        #expect(counts(down) == ["10.0.0.1:80": 1500, "10.0.0.2:80": 1500])
    }

    @Test("round robin turns per pool name")
    func perPool() {
        var b = Balancer()
        let a = pool(.roundRobin, name: "a"), z = pool(.roundRobin, name: "z")
        #expect(b.pick(a, key: key(0))?.address == "10.0.0.1")
        #expect(b.pick(a, key: key(0))?.address == "10.0.0.2")
        #expect(b.pick(z, key: key(0))?.address == "10.0.0.1")
        #expect(b.pick(a, key: key(0))?.address == "10.0.0.3")
    }

    // MARK: Smooth weighted round robin

    @Test("smooth weighted round robin: weights 1:2:3 give exactly 500/1000/1500 of 3000, spread out")
    func weighted() {
        var weighted = three
        weighted[1].weight = 2
        weighted[2].weight = 3
        var b = Balancer()
        let p = pool(.weightedRoundRobin, weighted)
        let picks = (0..<3000).map { _ in b.pick(p, key: key(0)) }
        #expect(counts(picks) == ["10.0.0.1:80": 500, "10.0.0.2:80": 1000, "10.0.0.3:80": 1500])
        // Never the same member more than twice in a row with these weights (smooth).
        #expect(!zip(zip(picks, picks.dropFirst()), picks.dropFirst(2)).contains { $0.0 == $0.1 && $0.1 == $1 })
    }

    @Test("smooth weighted round robin: weights 5, 1, 1 give a a b a c a a, as nginx's")
    func nginxSequence() {
        var b = Balancer()
        let p = pool(.weightedRoundRobin, [Backend(address: "10.0.0.1", port: 80, weight: 5),
                                           Backend(address: "10.0.0.2", port: 80), Backend(address: "10.0.0.3", port: 80)])
        let names = (0..<14).map { _ in ["10.0.0.1": "a", "10.0.0.2": "b", "10.0.0.3": "c"][b.pick(p, key: key(0))!.address]! }
        #expect(names.joined() == "aabacaa" + "aabacaa")
    }

    @Test("smooth weighted round robin: a drained member sits out; a changed member list starts again")
    func weightedChanges() {
        var weighted = three
        weighted[2].weight = 2
        var b = Balancer()
        var p = pool(.weightedRoundRobin, weighted)
        p.backends[0].drained = true
        let picks = (0..<300).map { _ in b.pick(p, key: key(0)) }
        #expect(counts(picks) == ["10.0.0.2:80": 100, "10.0.0.3:80": 200])
        // A new member: the state starts from zero, and the new one takes its share at once.
        p.backends.append(Backend(address: "10.0.0.4", port: 80, weight: 2))
        let after = (0..<500).map { _ in b.pick(p, key: key(0)) }
        #expect(counts(after) == ["10.0.0.2:80": 100, "10.0.0.3:80": 200, "10.0.0.4:80": 200])
        #expect(after.first??.address == "10.0.0.3")
    }

    // MARK: Least connections

    @Test("least connections follows active, for each member's weight")
    func leastConnections() {
        var b = Balancer()
        let p = pool(.leastConnections)
        #expect(b.pick(p, key: key(0), active: ["10.0.0.1:80": 5, "10.0.0.2:80": 0, "10.0.0.3:80": 3])?.address == "10.0.0.2")
        #expect(b.pick(p, key: key(0), active: ["10.0.0.1:80": 5, "10.0.0.2:80": 4, "10.0.0.3:80": 3])?.address == "10.0.0.3")
        // Missing counts are 0.
        #expect(b.pick(p, key: key(0), active: ["10.0.0.1:80": 5, "10.0.0.3:80": 3])?.address == "10.0.0.2")
        // Per weight: 4 of weight 2 (2 each) is less than 3 of weight 1.
        var heavy = p
        heavy.backends[0].weight = 2
        #expect(b.pick(heavy, key: key(0), active: ["10.0.0.1:80": 4, "10.0.0.2:80": 3, "10.0.0.3:80": 3])?.address == "10.0.0.1")
        // Down and drained members are not picked, however idle.
        var drained = p
        drained.backends[1].drained = true
        #expect(b.pick(drained, key: key(0), down: ["10.0.0.3:80"], active: ["10.0.0.1:80": 100])?.address == "10.0.0.1")
    }

    @Test("least connections over 3000 connections that stay open: shares follow the weights 1:2:3")
    func leastConnectionsShares() {
        var weighted = three
        weighted[1].weight = 2
        weighted[2].weight = 3
        let p = pool(.leastConnections, weighted)
        var b = Balancer()
        var active: [String: Int] = [:]
        for _ in 0..<3000 {
            let m = b.pick(p, key: key(0), active: active)!
            active[m.key, default: 0] += 1
        }
        #expect(active == ["10.0.0.1:80": 500, "10.0.0.2:80": 1000, "10.0.0.3:80": 1500])
        // Connections that close at once (active stays 0): the ties take turns.
        var fresh = Balancer()
        let picks = (0..<3000).map { _ in fresh.pick(pool(.leastConnections), key: key(0)) }
        #expect(counts(picks) == ["10.0.0.1:80": 1000, "10.0.0.2:80": 1000, "10.0.0.3:80": 1000])
    }

    // MARK: Hashes

    @Test("hashes: the same request always goes to the same member", arguments: hashMethods)
    func sameKey(_ method: BalanceMethod) {
        var b = Balancer()
        let p = pool(method)
        for i in 0..<100 {
            let first = b.pick(p, key: key(i))
            #expect(first != nil)
            for _ in 0..<3 { #expect(b.pick(p, key: key(i)) == first) }
            // In a fresh balancer too: nothing but the request decides.
            var other = Balancer()
            #expect(other.pick(p, key: key(i)) == first)
        }
    }

    @Test("hashes: 3000 distinct requests spread over 3 members within 15%", arguments: hashMethods)
    func spread(_ method: BalanceMethod) {
        var b = Balancer()
        let c = counts((0..<3000).map { b.pick(pool(method), key: key($0)) })
        #expect(c.count == 3)
        for (member, n) in c { #expect((850...1150).contains(n), "\(method) \(member): \(n)") }
    }

    @Test("hashes: weights 1:2:3 share 3000 distinct requests about 500/1000/1500", arguments: hashMethods)
    func weightedSpread(_ method: BalanceMethod) {
        var weighted = three
        weighted[1].weight = 2
        weighted[2].weight = 3
        var b = Balancer()
        let c = counts((0..<3000).map { b.pick(pool(method, weighted), key: key($0)) })
        for (member, expected) in [("10.0.0.1:80", 500), ("10.0.0.2:80", 1000), ("10.0.0.3:80", 1500)] {
            let n = c[member, default: 0]
            #expect(abs(n - expected) <= expected * 15 / 100, "\(method) \(member): \(n)")
        }
    }

    @Test("hashes: removing, draining or taking down a member moves only the requests it had", arguments: hashMethods)
    func minimalMoves(_ method: BalanceMethod) {
        var b = Balancer()
        let full = pool(method)
        let before = (0..<3000).map { b.pick(full, key: key($0))! }
        let gone = three[1]
        var removed = full
        removed.backends.remove(at: 1)
        var drained = full
        drained.backends[1].drained = true
        let outs: [[Backend?]] = [
            (0..<3000).map { b.pick(removed, key: key($0)) },
            (0..<3000).map { b.pick(drained, key: key($0)) },
            (0..<3000).map { b.pick(full, key: key($0), down: [gone.key]) },
        ]
        for after in outs {
            var moved = 0
            for i in 0..<3000 {
                #expect(after[i] != nil && after[i]?.key != gone.key)
                if before[i].key == gone.key { moved += 1 } else { #expect(after[i]?.key == before[i].key) }
            }
            #expect(moved > 800)
        }
        // Adding a member moves requests only to it.
        var added = full
        added.backends.append(Backend(address: "10.0.0.4", port: 80))
        for i in 0..<3000 {
            let now = b.pick(added, key: key(i))!
            #expect(now.key == before[i].key || now.key == "10.0.0.4:80")
        }
    }

    @Test("hashes: a missing or empty field falls back to source-hash on the client", arguments: [
        BalanceMethod.hostHash, .pathHash, .headerHash, .sniHash,
    ])
    func fallback(_ method: BalanceMethod) {
        var b = Balancer()
        for i in 0..<200 {
            let bare = BalanceKey(client: IPAddress(ipv4: 0x0a00_0000 + UInt32(i)))
            let empty = BalanceKey(client: bare.client, host: "", path: "", header: "", sni: "")
            let bySource = b.pick(pool(.sourceHash), key: bare)
            #expect(b.pick(pool(method), key: bare) == bySource)
            #expect(b.pick(pool(method), key: empty) == bySource)
        }
    }

    @Test("each hash reads its own field")
    func ownField() {
        var b = Balancer()
        // Requests that differ only in one field: that field's hash spreads them, the others do not.
        let fields: [(BalanceMethod, (Int) -> BalanceKey)] = [
            (.hostHash, { BalanceKey(client: self.client, host: "h\($0)", path: "/", header: "u", sni: "s") }),
            (.pathHash, { BalanceKey(client: self.client, host: "h", path: "/\($0)", header: "u", sni: "s") }),
            (.headerHash, { BalanceKey(client: self.client, host: "h", path: "/", header: "u\($0)", sni: "s") }),
            (.sniHash, { BalanceKey(client: self.client, host: "h", path: "/", header: "u", sni: "s\($0)") }),
            (.sourceHash, { BalanceKey(client: IPAddress(ipv4: UInt32($0)), host: "h", path: "/", header: "u", sni: "s") }),
        ]
        for (varying, make) in fields {
            for method in Self.hashMethods {
                let members = Set((0..<300).map { b.pick(pool(method), key: make($0))!.key })
                #expect(members.count == (method == varying ? 3 : 1), "\(method) over requests varying in \(varying)'s field")
            }
        }
    }

    // MARK: Every method

    @Test("drained and down members are never picked; none left, or an empty pool: nil",
          arguments: BalanceMethod.allCases)
    func noneLeft(_ method: BalanceMethod) {
        var b = Balancer()
        var p = pool(method)
        p.backends[0].drained = true
        for i in 0..<300 {
            let m = b.pick(p, key: key(i), down: ["10.0.0.2:80"])
            #expect(m?.key == "10.0.0.3:80")
        }
        #expect(b.pick(p, key: key(0), down: ["10.0.0.2:80", "10.0.0.3:80"]) == nil)
        p.backends[1].drained = true
        p.backends[2].drained = true
        #expect(b.pick(p, key: key(0)) == nil)
        #expect(b.pick(pool(method, []), key: key(0)) == nil)
    }

    // MARK: The key and the hash

    @Test("BalanceKey from an HTTP request: Host without port, path without query, the named header")
    func keyFromHTTP() {
        let request = RequestFacts(firstBytes: bytes("GET /a/b?c=1&d=2 HTTP/1.1\r\nHost: Example.COM:8080\r\nx-user: alice\r\nX-User: bob\r\n\r\n"),
                                   isFinal: true)
        let k = BalanceKey(client: client, request: request, hashHeader: "X-USER")
        #expect(k == BalanceKey(client: client, host: "example.com", path: "/a/b", header: "alice"))
        #expect(BalanceKey(client: client, request: request, hashHeader: nil).header == nil)
        #expect(BalanceKey(client: client, request: request, hashHeader: "Cookie").header == nil)
    }

    @Test("BalanceKey from a ClientHello: the SNI; from other bytes or none: the client alone")
    func keyFromOthers() {
        let hello = RequestFacts(firstBytes: TLSBuilder.records(TLSBuilder.clientHello(sni: "api.example.com")), isFinal: true)
        #expect(BalanceKey(client: client, request: hello, hashHeader: "X-User") == BalanceKey(client: client, sni: "api.example.com"))
        let other = RequestFacts(firstBytes: bytes("SSH-2.0-OpenSSH\r\n"), isFinal: true)
        #expect(BalanceKey(client: client, request: other, hashHeader: nil) == BalanceKey(client: client))
        #expect(BalanceKey(client: client, request: nil, hashHeader: nil) == BalanceKey(client: client))
    }

    @Test("the hash is FNV-1a then splitmix64's finalizer: fixed values, the same in every process")
    func stableHash() {
        #expect(Balancer.mix(0) == 0xe220_a839_7b1d_cdaf)   // splitmix64's first output from seed 0
        #expect(Balancer.hash([]) == Balancer.mix(0xcbf2_9ce4_8422_2325))
        #expect(Balancer.hash(Array("a".utf8)) == Balancer.mix(0xaf63_dc4c_8601_ec8c))
        #expect(Balancer.hash(IPAddress("10.0.0.1")!) == Balancer.hash([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]))
    }
}
