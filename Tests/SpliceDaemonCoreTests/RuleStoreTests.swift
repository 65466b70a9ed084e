import Testing
import SpliceControlProtocol
import SpliceDaemonCore

@Suite("RuleStore: the daemon's splice rules and their edits")
struct RuleStoreTests {
    func rule(_ port: UInt16, _ action: RuleAction = .splice, id: Int = 0) -> SpliceRule {
        SpliceRule(id: id, name: "p\(port)", match: RuleMatch(ports: [port]), action: action)
    }
    /// A rule the validation refuses: "host '' is empty".
    let invalid = SpliceRule(match: RuleMatch(host: ""), action: .splice)

    func ids(_ s: RuleStore) -> [Int] { s.set.rules.map(\.id) }
    func ports(_ s: RuleStore) -> [UInt16] { s.set.rules.map { $0.match.ports?.first ?? 0 } }

    @Test("ids are given from 1, in order of adding; the version bumps at each accepted change")
    func idsFromOne() throws {
        var s = RuleStore()
        #expect(s.set.rules.isEmpty && s.set.version == 0)
        try s.add(rule(80), at: nil)
        #expect(ids(s) == [1] && s.set.version == 1)
        try s.add(rule(81), at: nil)
        try s.add(rule(82), at: nil)
        #expect(ids(s) == [1, 2, 3] && ports(s) == [80, 81, 82] && s.set.version == 3)
    }

    @Test("an id is never given again after its rule is removed")
    func idsNotReused() throws {
        var s = RuleStore()
        for p: UInt16 in [80, 81, 82] { try s.add(rule(p), at: nil) }
        try s.remove(3)
        #expect(ids(s) == [1, 2] && s.set.version == 4)
        try s.add(rule(83), at: nil)
        #expect(ids(s) == [1, 2, 4])
        try s.remove(1); try s.remove(2); try s.remove(4)
        #expect(s.set.rules.isEmpty && s.set.version == 8)
        try s.add(rule(84), at: nil)
        #expect(ids(s) == [5])
        // A replacing set's id-less rules get new ids too.
        try s.replace(RuleSet(rules: [rule(85), rule(86)]))
        #expect(ids(s) == [6, 7])
    }

    @Test("an id given by the caller of add is not kept: the rule gets a new one")
    func addIgnoresGivenID() throws {
        var s = RuleStore()
        try s.add(rule(80), at: nil)
        try s.add(rule(81, id: 1), at: nil)
        #expect(ids(s) == [1, 2])
    }

    @Test("add at position 1, at n + 1, and in the middle")
    func addPositions() throws {
        var s = RuleStore()
        try s.add(rule(80), at: 1)             // empty: 1 is n + 1
        try s.add(rule(81), at: 1)             // first
        try s.add(rule(82), at: 3)             // n + 1: last
        try s.add(rule(83), at: 2)             // middle
        #expect(ports(s) == [81, 83, 80, 82])
        #expect(ids(s) == [2, 4, 1, 3])
        #expect(s.set.version == 4)
    }

    @Test("add out of range is refused, naming the range; nothing changes", arguments: [0, 4, -1, 100])
    func addOutOfRange(position: Int) throws {
        var s = RuleStore()
        try s.add(rule(80), at: nil)
        try s.add(rule(81), at: nil)
        let before = s.set
        #expect(throws: RuleError("position \(position) is out of range (1 to 3)")) {
            try s.add(rule(82), at: position)
        }
        #expect(s.set == before)
        // And the refused add used up no id.
        try s.add(rule(83), at: nil)
        #expect(ids(s) == [1, 2, 3] && s.set.version == before.version + 1)
    }

    @Test("remove and move of an unknown id are refused (\"no rule N\"), the version unchanged")
    func unknownIDs() throws {
        var s = RuleStore()
        try s.add(rule(80), at: nil)
        try s.remove(1)
        let before = s.set
        #expect(throws: RuleError("no rule 1")) { try s.remove(1) }
        #expect(throws: RuleError("no rule 7")) { try s.move(7, to: 1) }
        #expect(throws: RuleError("no rule 0")) { try s.remove(0) }
        #expect(s.set == before && s.set.version == 2)
    }

    @Test("move reorders, keeping ids; an out-of-range position is refused naming the range")
    func move() throws {
        var s = RuleStore()
        for p: UInt16 in [80, 81, 82] { try s.add(rule(p), at: nil) }
        try s.move(3, to: 1)
        #expect(ids(s) == [3, 1, 2] && ports(s) == [82, 80, 81] && s.set.version == 4)
        try s.move(3, to: 3)
        #expect(ids(s) == [1, 2, 3] && s.set.version == 5)
        try s.move(1, to: 2)
        #expect(ids(s) == [2, 1, 3] && s.set.version == 6)
        let before = s.set
        #expect(throws: RuleError("position 4 is out of range (1 to 3)")) { try s.move(2, to: 4) }
        #expect(throws: RuleError("position 0 is out of range (1 to 3)")) { try s.move(2, to: 0) }
        #expect(s.set == before)
    }

    @Test("replace: given ids are kept, id-less rules numbered after the highest; the set's own version is ignored")
    func replace() throws {
        var s = RuleStore()
        try s.add(rule(80), at: nil)
        try s.replace(RuleSet(rules: [rule(81, id: 10), rule(82)], defaultAction: .bypass,
                              firstBytesTimeoutMilliseconds: 500, version: 99))
        #expect(ids(s) == [10, 11] && s.set.version == 2)
        #expect(s.set.defaultAction == .bypass && s.set.firstBytesTimeoutMilliseconds == 500)
        try s.add(rule(83), at: nil)
        #expect(ids(s) == [10, 11, 12])
    }

    @Test("replace with duplicate, negative or too large ids is refused; nothing changes")
    func replaceDuplicates() throws {
        var s = RuleStore()
        try s.add(rule(80), at: nil)
        let before = s.set
        #expect(throws: RuleError("rule id 2 is given twice, or is not from 1 to 65535")) {
            try s.replace(RuleSet(rules: [rule(81, id: 2), rule(82), rule(83, id: 2)]))
        }
        #expect(throws: RuleError.self) { try s.replace(RuleSet(rules: [rule(81, id: -3)])) }
        #expect(throws: RuleError("rule id 65536 is given twice, or is not from 1 to 65535")) {
            try s.replace(RuleSet(rules: [rule(81, id: 65536)]))
        }
        #expect(s.set == before)
        try s.add(rule(84), at: nil)
        #expect(ids(s) == [1, 2] && s.set.version == 2)
    }

    @Test("ids run out at 65535 (never reused): a rule without an id is refused past it, one with an id is taken")
    func idsRunOut() throws {
        var s = RuleStore()
        try s.replace(RuleSet(rules: [rule(80, id: 65535)]))
        #expect(throws: RuleError.self) { try s.add(rule(81), at: nil) }
        #expect(ids(s) == [65535])
        try s.replace(RuleSet(rules: [rule(82, id: 7)]))
        #expect(ids(s) == [7])
    }

    @Test("an invalid rule is refused with the validation's message; nothing changes, no id is used up")
    func invalidRule() throws {
        var s = RuleStore()
        try s.add(rule(80), at: nil)
        let before = s.set
        do {
            try s.add(invalid, at: nil)
            Issue.record("an empty host was accepted")
        } catch let e as RuleError {
            #expect(e.description.contains("host '' is empty"), "\(e)")
        }
        #expect(s.set == before)
        // In a replacing set (with a high id, which must not move the numbering either).
        var bad = invalid
        bad.id = 50
        do {
            try s.replace(RuleSet(rules: [rule(81), bad]))
            Issue.record("an empty host was accepted")
        } catch let e as RuleError {
            #expect(e.description == "rule 50: host '' is empty", "\(e)")
        }
        // A timeout out of range, the set's own field.
        #expect(throws: RuleError.self) { try s.replace(RuleSet(rules: [], firstBytesTimeoutMilliseconds: 1)) }
        #expect(s.set == before)
        try s.add(rule(82), at: nil)
        #expect(ids(s) == [1, 2] && s.set.version == 2)
    }

    @Test("the initial set's id-less rules are numbered; its version is kept")
    func initialSet() throws {
        var s = RuleStore(RuleSet(rules: [rule(80), rule(81, id: 4), rule(82)], version: 3))
        #expect(ids(s) == [5, 4, 6] && s.set.version == 3)
        try s.add(rule(83), at: 1)
        #expect(ids(s) == [7, 5, 4, 6] && s.set.version == 4)
    }
}

// MARK: Pools

extension RuleStoreTests {
    func member(_ last: Int, weight: Int = 1) -> Backend { Backend(address: "10.0.0.\(last)", port: 80, weight: weight) }
    func members(_ s: RuleStore, _ pool: String) -> [String] {
        s.set.pools.first { $0.name == pool }?.backends.map { $0.key + ($0.drained ? " drained" : "") } ?? []
    }

    /// The RuleError an edit throws (its description), nil when it is accepted.
    func refusal(_ edit: () throws -> Void) -> String? {
        do { try edit(); return nil } catch { return "\(error)" }
    }

    @Test("pools and members are added, drained, taken back and removed; each edit bumps the version")
    func poolEdits() throws {
        var s = RuleStore()
        try s.addPool(Pool(name: "web", backends: [member(1)]))
        #expect(s.set.pools.map(\.name) == ["web"] && s.set.version == 1)
        try s.addPool(Pool(name: "images", method: .sourceHash))
        #expect(s.set.pools.map(\.name) == ["web", "images"] && s.set.version == 2)
        try s.addMember(pool: "web", member(2, weight: 3))
        #expect(members(s, "web") == ["10.0.0.1:80", "10.0.0.2:80"] && s.set.version == 3)
        #expect(s.set.pools[0].backends[1].weight == 3)
        try s.setDrained(pool: "web", key: "10.0.0.1:80", true)
        #expect(members(s, "web") == ["10.0.0.1:80 drained", "10.0.0.2:80"] && s.set.version == 4)
        try s.setDrained(pool: "web", key: "10.0.0.1:80", false)
        #expect(members(s, "web") == ["10.0.0.1:80", "10.0.0.2:80"] && s.set.version == 5)
        try s.removeMember(pool: "web", key: "10.0.0.1:80")
        #expect(members(s, "web") == ["10.0.0.2:80"] && s.set.version == 6)
        try s.removePool("images")
        #expect(s.set.pools.map(\.name) == ["web"] && s.set.version == 7)
        // The rules are untouched by it all.
        #expect(s.set.rules.isEmpty)
    }

    @Test("a member is found by its key in any spelling of its address")
    func memberKeys() throws {
        var s = RuleStore()
        try s.addPool(Pool(name: "v6", backends: [Backend(address: "2001:db8::11", port: 443)]))
        try s.setDrained(pool: "v6", key: "[2001:DB8:0::11]:443", true)
        #expect(members(s, "v6") == ["[2001:db8::11]:443 drained"])
        #expect(refusal { try s.addMember(pool: "v6", Backend(address: "2001:db8:0:0::11", port: 443)) }
            == "pool 'v6' has a member [2001:db8::11]:443 already")
        try s.removeMember(pool: "v6", key: "[2001:db8::11]:443")
        #expect(members(s, "v6").isEmpty)
    }

    @Test("refused pool edits name the pool (and the rules using it); nothing changes")
    func refusedPoolEdits() throws {
        var s = RuleStore()
        try s.addPool(Pool(name: "web", backends: [member(1)]))
        try s.addPool(Pool(name: "idle"))
        try s.add(SpliceRule(match: RuleMatch(host: "a.example"), action: .splice, pool: "web"), at: nil)
        try s.add(rule(81), at: nil)
        try s.add(SpliceRule(match: RuleMatch(host: "b.example"), action: .splice, pool: "web"), at: nil)
        let before = s.set
        let cases: [(String, () throws -> Void)] = [
            ("pool 'web' exists already", { try s.addPool(Pool(name: "web")) }),
            ("pool 3: name '' is empty", { try s.addPool(Pool(name: "")) }),
            ("pool 'hh': method header-hash needs a hashHeader", { try s.addPool(Pool(name: "hh", method: .headerHash)) }),
            ("pool 'web' is used by rules 1, 3: remove them or give them another pool first", { try s.removePool("web") }),
            ("no pool 'nope'", { try s.removePool("nope") }),
            ("no pool 'nope'", { try s.addMember(pool: "nope", self.member(2)) }),
            ("pool 'web' has a member 10.0.0.1:80 already", { try s.addMember(pool: "web", self.member(1, weight: 2)) }),
            ("pool 'web': backend 10.0.0.2:80: weight 300 is out of range (1-256)",
             { try s.addMember(pool: "web", self.member(2, weight: 300)) }),
            ("pool 'web': backend 10.0.0.2:0: port 0 is not a port",
             { try s.addMember(pool: "web", Backend(address: "10.0.0.2", port: 0)) }),
            ("pool 'web' has no member 10.0.0.9:80", { try s.removeMember(pool: "web", key: "10.0.0.9:80") }),
            ("no pool 'nope'", { try s.removeMember(pool: "nope", key: "10.0.0.1:80") }),
            ("pool 'web' has no member 10.0.0.9:80", { try s.setDrained(pool: "web", key: "10.0.0.9:80", true) }),
            ("no pool 'nope'", { try s.setDrained(pool: "nope", key: "10.0.0.1:80", true) }),
            ("rule 4: pool 'nope' is not a pool of the set",
             { try s.add(SpliceRule(match: RuleMatch(), action: .splice, pool: "nope"), at: nil) }),
            ("rule 4: pool 'web' is only for actions splice and proxy, not bypass",
             { try s.add(SpliceRule(match: RuleMatch(), action: .bypass, pool: "web"), at: nil) }),
        ]
        for (message, edit) in cases {
            #expect(refusal(edit) == message)
        }
        #expect(s.set == before)
        // One rule left using it: named alone.
        try s.remove(1)
        #expect(refusal { try s.removePool("web") } == "pool 'web' is used by rule 3: remove it or give it another pool first")
        try s.remove(3)
        try s.removePool("web")
        #expect(s.set.pools.map(\.name) == ["idle"])
    }

    @Test("a pool a rule uses may be emptied, and drained whole")
    func emptyPoolInUse() throws {
        var s = RuleStore()
        try s.addPool(Pool(name: "web", backends: [member(1)]))
        try s.add(SpliceRule(match: RuleMatch(), action: .splice, pool: "web"), at: nil)
        try s.setDrained(pool: "web", key: "10.0.0.1:80", true)
        try s.removeMember(pool: "web", key: "10.0.0.1:80")
        #expect(members(s, "web").isEmpty && s.set.rules[0].pool == "web")
    }

    @Test("pools come and go with a replacing set; rules naming them are checked against it")
    func replaceWithPools() throws {
        var s = RuleStore()
        try s.replace(RuleSet(rules: [SpliceRule(match: RuleMatch(), action: .splice, pool: "web")],
                              pools: [Pool(name: "web", backends: [member(1)])]))
        #expect(s.set.pools.count == 1 && ids(s) == [1] && s.set.version == 1)
        #expect(refusal { try s.replace(RuleSet(rules: [SpliceRule(match: RuleMatch(), action: .splice, pool: "web")])) }
            == "rule 2: pool 'web' is not a pool of the set")
        #expect(s.set.pools.count == 1)
    }
}
