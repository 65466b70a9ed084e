import SpliceWire

extension RuleSet {
    /// Checks the set and every rule, and throws the first problem found, naming the rule (by
    /// its id, or by its position from 1 when it has no id yet) and the field, as in
    /// "rule 3: host '' is empty".
    ///
    /// Refused: more than 256 rules; a timeout outside 10...600000; two rules with the same
    /// non-zero id; and in a rule: a name longer than 64 characters, an empty list, a prefix
    /// that does not parse, port 0, an unknown proto, a method that is not an HTTP token, an
    /// empty or malformed host or sni pattern, an empty pathPrefix, a pathPattern not starting
    /// with '/' or '*', a header name that is not an HTTP token, afterBytes outside 1...16384,
    /// a status outside 100...599, a negative contentLengthAbove, an empty contentType, and
    /// combinations that can never match (HTTP fields or a response match with proto tls or
    /// other or with sni; sni with proto http or other); a `pool` that is not in the set, or
    /// given with an action other than splice.
    ///
    /// The pools are checked before the rules (`Pool.problem()`), each named by its name, as
    /// in "pool 'web': backend 10.0.0.1:80: weight 0 is out of range (1-256)", or by its
    /// position from 1 when the name itself is wrong ("pool 2: name '' is empty"). Refused:
    /// more than 64 pools, two pools with the same name. A pool may be empty.
    public func validate() throws(RuleError) {
        if rules.count > RuleSet.maxRules {
            throw RuleError("\(rules.count) rules: more than \(RuleSet.maxRules)")
        }
        if !RuleSet.timeoutRange.contains(firstBytesTimeoutMilliseconds) {
            throw RuleError("firstBytesTimeoutMilliseconds \(firstBytesTimeoutMilliseconds) is out of range (10-600000)")
        }
        if pools.count > RuleSet.maxPools {
            throw RuleError("\(pools.count) pools: more than \(RuleSet.maxPools)")
        }
        var poolNames: Set<String> = []
        for (i, pool) in pools.enumerated() {
            if let problem = Pool.nameProblem(pool.name) { throw RuleError("pool \(i + 1): \(problem)") }
            if !poolNames.insert(pool.name).inserted {
                throw RuleError("pool '\(pool.name)': name is used by an earlier pool")
            }
            if let problem = pool.problem() { throw RuleError("pool '\(pool.name)': \(problem)") }
        }
        var seenIDs: Set<Int> = []
        for (i, rule) in rules.enumerated() {
            let label = "rule \(rule.id != 0 ? rule.id : i + 1)"
            if rule.id != 0 && !seenIDs.insert(rule.id).inserted {
                throw RuleError("\(label): id \(rule.id) is used by an earlier rule")
            }
            if let problem = rule.problem() { throw RuleError("\(label): \(problem)") }
            if let pool = rule.pool {
                if !poolNames.contains(pool) { throw RuleError("\(label): pool '\(pool)' is not a pool of the set") }
                if rule.action == .bypass {
                    throw RuleError("\(label): pool '\(pool)' is only for actions splice and proxy, not \(rule.action.rawValue)")
                }
            }
            if rule.perRequest && rule.action != .splice {
                throw RuleError("\(label): perRequest is only for action splice, not \(rule.action.rawValue)")
            }
            if rule.oneWay != nil && rule.action != .splice {
                throw RuleError("\(label): oneWay is only for action splice, not \(rule.action.rawValue)")
            }
            if rule.oneWay != nil && rule.perRequest {
                throw RuleError("\(label): oneWay and perRequest do not go together (a one-way join lasts the connection's life)")
            }
            if rule.fin == .process && !rule.perRequest {
                throw RuleError("\(label): fin process needs perRequest (the client's connection must come back to the proxy)")
            }
        }
    }
}

extension Pool {
    /// Why `name` cannot be a pool's name, or nil: it must be 1 to 64 of A-Z a-z 0-9 _ . -.
    static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "name '' is empty" }
        if name.utf8.count > 64 { return "name '\(name)' is longer than 64 characters" }
        let allowed = name.utf8.allSatisfy { c in
            let lower = c | 0x20
            return isDigit(c) || (lower >= UInt8(ascii: "a") && lower <= UInt8(ascii: "z"))
                || c == UInt8(ascii: "_") || c == UInt8(ascii: ".") || c == UInt8(ascii: "-")
        }
        if !allowed { return "name '\(name)' may hold only A-Z a-z 0-9 _ . -" }
        return nil
    }

    /// The first thing wrong with the pool, past its name, or nil: a hashHeader that is
    /// missing for header-hash, given for another method, or not a header name; more than 64
    /// backends; a backend whose address does not parse, with port 0 or a weight outside
    /// 1...256; two backends with the same key.
    func problem() -> String? {
        switch (method, hashHeader) {
        case (.headerHash, nil):
            return "method header-hash needs a hashHeader"
        case (.headerHash, let header?):
            if header.isEmpty || !header.utf8.allSatisfy(isTokenByte) {
                return "hashHeader '\(header)' is not a header name (a token: no ':', whitespace or other separator)"
            }
        case (_, .some):
            return "hashHeader is only for method header-hash, not \(method.rawValue)"
        case (_, nil):
            break
        }
        if let problem = check?.problem() { return problem }
        if backends.count > Pool.maxBackends {
            return "\(backends.count) backends: more than \(Pool.maxBackends)"
        }
        var keys: Set<String> = []
        for b in backends {
            guard IPAddress(b.address) != nil else {
                return "backend \(b.key): address '\(b.address)' is not an IPv4 or IPv6 address"
            }
            if b.port == 0 { return "backend \(b.key): port 0 is not a port" }
            if !Backend.weightRange.contains(b.weight) {
                return "backend \(b.key): weight \(b.weight) is out of range (\(Backend.weightRange.lowerBound)-\(Backend.weightRange.upperBound))"
            }
            if !keys.insert(b.key).inserted { return "backend \(b.key) is given twice" }
        }
        return nil
    }
}

extension SpliceRule {
    /// The first thing wrong with the rule, or nil.
    func problem() -> String? {
        let m = match
        if let name, name.count > 64 { return "name is longer than 64 characters" }

        for (field, list) in [("clients", m.clients), ("servers", m.servers)] {
            guard let list else { continue }
            if list.isEmpty { return "\(field) is an empty list" }
            for p in list where IPPrefix(p) == nil { return "prefix '\(p)' is not an address prefix" }
        }
        if let ports = m.ports {
            if ports.isEmpty { return "ports is an empty list" }
            if ports.contains(0) { return "port 0 is not a port" }
        }

        if let proto = m.proto, !["http", "tls", "other"].contains(proto) {
            return "proto '\(proto)' is not one of http, tls, other"
        }
        if let method = m.method {
            if method.isEmpty { return "method '' is empty" }
            if !isToken(method) { return "method '\(method)' is not an HTTP method (a token: no whitespace or separators)" }
        }
        for (field, pattern) in [("host", m.host), ("sni", m.sni)] {
            guard let pattern else { continue }
            if let problem = namePatternProblem(pattern) { return "\(field) '\(pattern)' \(problem)" }
        }
        if let prefix = m.pathPrefix {
            if prefix.isEmpty { return "pathPrefix '' is empty" }
            if prefix.contains(where: \.isWhitespace) { return "pathPrefix '\(prefix)' contains whitespace" }
        }
        if let pattern = m.pathPattern {
            if !(pattern.hasPrefix("/") || pattern.hasPrefix("*")) { return "pathPattern must start with '/' or '*'" }
            if pattern.contains(where: \.isWhitespace) { return "pathPattern '\(pattern)' contains whitespace" }
        }
        if let header = m.header {
            if header.name.isEmpty { return "header name '' is empty" }
            if !isToken(header.name) { return "header name '\(header.name)' contains ':', whitespace or another separator" }
        }
        if let n = m.afterBytes, !(1...maxPeekLength).contains(n) {
            return "afterBytes \(n) is out of range (1-\(maxPeekLength))"
        }

        if let status = m.status {
            if status.isEmpty { return "status is an empty list" }
            for s in status where !(100...599).contains(s) { return "status \(s) is out of range (100-599)" }
        }
        if let n = m.contentLengthAbove, n < 0 { return "contentLengthAbove \(n) is negative" }
        if let t = m.contentType, t.isEmpty { return "contentType '' is empty" }

        let notHTTP = m.proto == "tls" || m.proto == "other" || m.sni != nil
        if m.needsResponse && notHTTP {
            return "a response match (status, contentLengthAbove, contentType) cannot be combined with proto tls or other, or with sni"
        }
        if m.usesHTTPRequestFields && notHTTP {
            return "HTTP fields (method, host, pathPrefix, pathPattern, header) cannot be combined with proto tls or other, or with sni"
        }
        if m.sni != nil && (m.proto == "http" || m.proto == "other") {
            return "sni cannot be combined with proto \(m.proto ?? "")"
        }
        return nil
    }

    /// Why a host or sni pattern is malformed, or nil: it must be "*", "*.suffix" or a plain
    /// name, without whitespace and without any other '*'.
    private func namePatternProblem(_ p: String) -> String? {
        if p.isEmpty { return "is empty" }
        if p.contains(where: \.isWhitespace) { return "contains whitespace" }
        if p == "*" { return nil }
        let rest = p.hasPrefix("*.") ? p.dropFirst(2) : p[...]
        if rest.isEmpty { return "has nothing after '*.'" }
        if rest.contains("*") { return "has a '*' that is not a whole leading label ('*.example.com')" }
        return nil
    }

    /// Whether `s` is a non-empty HTTP token (RFC 9110 section 5.6.2).
    private func isToken(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy(isTokenByte)
    }
}

extension SpliceRule {
    /// A one-line human form for the CLI: the id, the action and the fields that are set, in a
    /// fixed order, then the name if there is one:
    ///
    ///     #3 splice  host=*.example.com path-prefix=/videos/ content-length>1000000  # big videos
    ///
    /// A rule with no field set shows "any"; the pool comes after the fields ("any pool=web").
    public func describe() -> String {
        let m = match
        var fields: [String] = []
        func add(_ key: String, _ value: String?) { if let value { fields.append(key + value) } }
        add("clients=", m.clients?.joined(separator: ","))
        add("servers=", m.servers?.joined(separator: ","))
        add("ports=", m.ports?.map(String.init).joined(separator: ","))
        add("proto=", m.proto)
        add("method=", m.method)
        add("host=", m.host)
        add("path-prefix=", m.pathPrefix)
        add("path-pattern=", m.pathPattern)
        add("header=", m.header.map { h in h.value.map { "\(h.name):\($0)" } ?? h.name })
        add("sni=", m.sni)
        add("after-bytes=", m.afterBytes.map(String.init))
        add("status=", m.status?.map(String.init).joined(separator: ","))
        add("content-length>", m.contentLengthAbove.map(String.init))
        add("content-type=", m.contentType)
        if fields.isEmpty { fields.append("any") }
        add("pool=", pool)
        if perRequest { fields.append("per-request") }
        if fin == .process { fields.append("fin=process") }
        add("one-way=", oneWay?.rawValue)
        let action = padded(action.rawValue, width: 6)
        var line = "#\(id) \(action)  " + fields.joined(separator: " ")
        if let name { line += "  # \(name)" }
        return line
    }

    private func padded(_ s: String, width: Int) -> String {
        s + String(repeating: " ", count: max(0, width - s.count))
    }
}
