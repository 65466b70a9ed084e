import SpliceRules

/// The daemon's splice rules and the edits `splicectl rules` makes to them. Every edit is
/// checked whole before it takes effect (a refused edit changes nothing), gives new rules ids
/// no rule had before, and bumps the version the proxies compare.
public struct RuleStore: Sendable {
    public private(set) var set: RuleSet
    private var nextID: Int
    /// The largest rule id (the flow table records the deciding rule in 16 bits).
    public static let maximumID = 65535

    public init(_ initial: RuleSet = .empty) {
        set = initial
        nextID = 1
        set = (try? numbered(initial)) ?? initial
    }

    /// Gives id-less rules (id 0) new ids; refuses duplicate ids.
    private mutating func numbered(_ r: RuleSet) throws -> RuleSet {
        var r = r
        var seen = Set<Int>()
        for rule in r.rules where rule.id != 0 {
            guard rule.id > 0, rule.id <= RuleStore.maximumID, seen.insert(rule.id).inserted else {
                throw RuleError("rule id \(rule.id) is given twice, or is not from 1 to \(RuleStore.maximumID)")
            }
            nextID = max(nextID, rule.id + 1)
        }
        for i in r.rules.indices where r.rules[i].id == 0 {
            // Ids are never reused; the flow table keeps them in 16 bits.
            guard nextID <= RuleStore.maximumID else {
                throw RuleError("no rule id left (ids go up to \(RuleStore.maximumID) and are never reused; load a set with explicit ids)")
            }
            r.rules[i].id = nextID
            nextID += 1
        }
        return r
    }

    private mutating func commit(_ r: RuleSet) throws {
        try r.validate()
        var r = r
        r.version = set.version + 1
        set = r
    }

    public mutating func replace(_ r: RuleSet) throws {
        let saved = nextID
        do { try commit(try numbered(r)) } catch { nextID = saved; throw error }
    }

    /// Adds a rule at a 1-based position (nil: last).
    public mutating func add(_ rule: SpliceRule, at position: Int?) throws {
        var r = set
        var rule = rule
        rule.id = 0
        let at = position ?? (r.rules.count + 1)
        guard at >= 1 && at <= r.rules.count + 1 else {
            throw RuleError("position \(at) is out of range (1 to \(r.rules.count + 1))")
        }
        r.rules.insert(rule, at: at - 1)
        try replace(r)
    }

    public mutating func remove(_ id: Int) throws {
        var r = set
        guard let i = r.rules.firstIndex(where: { $0.id == id }) else { throw RuleError("no rule \(id)") }
        r.rules.remove(at: i)
        try commit(r)
    }

    public mutating func move(_ id: Int, to position: Int) throws {
        var r = set
        guard let i = r.rules.firstIndex(where: { $0.id == id }) else { throw RuleError("no rule \(id)") }
        guard position >= 1 && position <= r.rules.count else {
            throw RuleError("position \(position) is out of range (1 to \(r.rules.count))")
        }
        let rule = r.rules.remove(at: i)
        r.rules.insert(rule, at: position - 1)
        try commit(r)
    }
}
