import SpliceRules

/// The daemon's splice rules and pools, and the edits `splicectl rules` and `splicectl pools`
/// make to them. Every edit is checked whole before it takes effect (a refused edit changes
/// nothing), gives new rules ids no rule had before, and bumps the version the proxies compare.
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

    // MARK: Pools

    /// Adds a pool at the end of the pools; refused when one has its name.
    public mutating func addPool(_ pool: Pool) throws {
        var r = set
        if r.pools.contains(where: { $0.name == pool.name }) { throw RuleError("pool '\(pool.name)' exists already") }
        r.pools.append(pool)
        try commit(r)
    }

    /// Removes a pool; refused while rules name it (the error lists them).
    public mutating func removePool(_ name: String) throws {
        var r = set
        let i = try poolIndex(name)
        let users = r.rules.filter { $0.pool == name }.map { String($0.id) }
        if !users.isEmpty {
            throw RuleError("pool '\(name)' is used by rule\(users.count == 1 ? "" : "s") \(users.joined(separator: ", ")): remove \(users.count == 1 ? "it" : "them") or give \(users.count == 1 ? "it" : "them") another pool first")
        }
        r.pools.remove(at: i)
        try commit(r)
    }

    /// Adds a member at the end of a pool's backends; refused when one has its key.
    public mutating func addMember(pool: String, _ b: Backend) throws {
        var r = set
        let i = try poolIndex(pool)
        if r.pools[i].backends.contains(where: { $0.key == b.key }) {
            throw RuleError("pool '\(pool)' has a member \(b.key) already")
        }
        r.pools[i].backends.append(b)
        try commit(r)
    }

    /// Removes a pool's member by its key ("10.0.0.11:80", "[2001:db8::11]:80").
    public mutating func removeMember(pool: String, key: String) throws {
        var r = set
        let (i, m) = try memberIndex(pool: pool, key: key)
        r.pools[i].backends.remove(at: m)
        try commit(r)
    }

    /// Drains a pool's member (it takes no new requests) or takes it back.
    public mutating func setDrained(pool: String, key: String, _ drained: Bool) throws {
        var r = set
        let (i, m) = try memberIndex(pool: pool, key: key)
        r.pools[i].backends[m].drained = drained
        try commit(r)
    }

    private func poolIndex(_ name: String) throws -> Int {
        guard let i = set.pools.firstIndex(where: { $0.name == name }) else { throw RuleError("no pool '\(name)'") }
        return i
    }

    /// The pool's index and its member's; `key` is matched as `Backend.key` writes it, so any
    /// spelling of the address will do.
    private func memberIndex(pool: String, key: String) throws -> (Int, Int) {
        let i = try poolIndex(pool)
        let wanted = (try? Backend.parse(key))?.key ?? key
        guard let m = set.pools[i].backends.firstIndex(where: { $0.key == wanted }) else {
            throw RuleError("pool '\(pool)' has no member \(wanted)")
        }
        return (i, m)
    }
}
