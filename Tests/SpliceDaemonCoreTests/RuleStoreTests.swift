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
