import SpliceWire

/// What is known of a connection before any byte.
public struct ConnectionFacts: Sendable, Equatable {
    public var client: IPAddress
    public var server: IPAddress
    public var serverPort: UInt16

    public init(client: IPAddress, server: IPAddress, serverPort: UInt16) {
        self.client = client
        self.server = server
        self.serverPort = serverPort
    }
}

/// What the client's first bytes showed so far.
public struct RequestFacts: Sendable, Equatable {
    /// What the first bytes are.
    public enum Proto: Sendable, Equatable {
        case http(HTTPRequestHead)
        case tls(TLSClientHello)
        /// Neither an HTTP/1.x request nor a TLS ClientHello.
        case other
    }

    /// What the first bytes are; nil while that is not known yet (a parser still says
    /// `.incomplete`).
    public var proto: Proto?
    /// How many bytes came from the client.
    public var bytesSeen: Int
    /// True when no more bytes will be looked at (the wait for them ended, the client
    /// half-closed, or the peek is full). Then a rule that needs more than was seen (an
    /// unknown proto, afterBytes not reached) does not match; while false, such a rule makes
    /// the decision `.needRequest`.
    public var isFinal: Bool

    public init(proto: Proto?, bytesSeen: Int, isFinal: Bool = false) {
        self.proto = proto
        self.bytesSeen = bytesSeen
        self.isFinal = isFinal
    }

    /// The facts of the client's first bytes: the HTTP request parser, then the ClientHello
    /// parser; `.other` when both say `.invalid`, nil (not known yet) while one says
    /// `.incomplete`. A peek of `maxPeekLength` bytes or more is final whatever `isFinal` says.
    public init(firstBytes bytes: some Collection<UInt8>, isFinal: Bool) {
        let count = bytes.count
        var pending = false
        var proto: Proto?
        switch HTTPRequestHead.parse(bytes) {
        case .complete(let head): proto = .http(head)
        case .incomplete: pending = true
        case .invalid: break
        }
        if proto == nil {
            switch TLSClientHello.parse(bytes) {
            case .complete(let hello): proto = .tls(hello)
            case .incomplete: pending = true
            case .invalid: break
            }
        }
        if proto == nil && !pending { proto = .other }
        self.init(proto: proto, bytesSeen: count, isFinal: isFinal || count >= maxPeekLength)
    }
}

/// The outcome of an evaluation step.
public enum Decision: Sendable, Equatable {
    /// Take `action`; `ruleID` is the rule that decided, nil for the default action.
    case decided(action: RuleAction, ruleID: Int?)
    /// A rule that could still match needs (more of) the client's bytes: peek more, and decide
    /// again.
    case needRequest
    /// The rules (ids, in order) whose request part matched but which need the response head;
    /// if none of them matches it, `fallback` (from rule `fallbackRuleID`, nil for the default)
    /// is taken.
    case needResponse(candidates: [Int], fallback: RuleAction, fallbackRuleID: Int?)
}

extension RuleSet {
    /// Decides before any byte: the first rule whose connection part matches decides when it
    /// needs no bytes; when it needs some, the answer is `.needRequest`. When no rule's
    /// connection part matches, the default action.
    public func decide(connection: ConnectionFacts) -> Decision {
        for rule in rules where rule.match.matches(connection) {
            if rule.match.needsRequest || rule.match.needsResponse { return .needRequest }
            return .decided(action: rule.action, ruleID: rule.id)
        }
        return .decided(action: defaultAction, ruleID: nil)
    }

    /// Decides with the client's first bytes (`request` nil: they did not come in time or could
    /// not be parsed, and the default action is taken).
    ///
    /// The rules are walked in order, skipping those whose connection or request part does not
    /// match (a rule on fields of another proto, such as sni for an HTTP request, does not
    /// match). A rule that cannot be told yet (its proto is not known, or its afterBytes not
    /// reached, and the facts are not final) ends the walk with `.needRequest`, even after
    /// response candidates, as it may be their fallback. A matching rule that needs the
    /// response becomes a candidate and the walk goes on; the first matching rule that does not
    /// need the response ends it: `.decided` with its action, or `.needResponse` with it as
    /// the fallback when there are candidates. At the end of the rules the default action takes
    /// its place.
    public func decide(connection: ConnectionFacts, request: RequestFacts?) -> Decision {
        guard let request else { return .decided(action: defaultAction, ruleID: nil) }
        var candidates: [Int] = []
        for rule in rules where rule.match.matches(connection) {
            switch rule.match.matches(request) {
            case .no:
                continue
            case .notYet:
                return .needRequest
            case .yes:
                if rule.match.needsResponse {
                    candidates.append(rule.id)
                    continue
                }
                if candidates.isEmpty { return .decided(action: rule.action, ruleID: rule.id) }
                return .needResponse(candidates: candidates, fallback: rule.action, fallbackRuleID: rule.id)
            }
        }
        if candidates.isEmpty { return .decided(action: defaultAction, ruleID: nil) }
        return .needResponse(candidates: candidates, fallback: defaultAction, fallbackRuleID: nil)
    }

    /// Decides with the response head (nil: the response is not HTTP, or no head came): the
    /// first candidate whose response part matches, else the fallback. A candidate id that is
    /// not in the set (it changed meanwhile) is passed over.
    public func decide(response: HTTPResponseHead?, candidates: [Int], fallback: RuleAction,
                       fallbackRuleID: Int?) -> Decision {
        if let response {
            for id in candidates {
                if let rule = rules.first(where: { $0.id == id }), rule.match.matches(response) {
                    return .decided(action: rule.action, ruleID: id)
                }
            }
        }
        return .decided(action: fallback, ruleID: fallbackRuleID)
    }
}

// MARK: Matching

extension RuleMatch {
    /// Whether a rule's request part matches: yes, no, or not yet (more bytes could tell).
    enum RequestOutcome { case yes, no, notYet }

    /// The connection part: client, server and port. A prefix that does not parse (in a set
    /// that was not validated) matches nothing.
    func matches(_ c: ConnectionFacts) -> Bool {
        if let ports, !ports.contains(c.serverPort) { return false }
        if let servers, !servers.contains(where: { IPPrefix($0)?.contains(c.server) == true }) { return false }
        if let clients, !clients.contains(where: { IPPrefix($0)?.contains(c.client) == true }) { return false }
        return true
    }

    /// The request part. A response match implies an HTTP request.
    func matches(_ r: RequestFacts) -> RequestOutcome {
        var pending = false
        if proto != nil || usesHTTPRequestFields || sni != nil || needsResponse {
            if let p = r.proto {
                if !matches(p) { return .no }
            } else {
                pending = true
            }
        }
        if let afterBytes, r.bytesSeen < afterBytes { pending = true }
        if pending { return r.isFinal ? .no : .notYet }
        return .yes
    }

    /// The fields that depend on what the first bytes are.
    func matches(_ p: RequestFacts.Proto) -> Bool {
        switch p {
        case .http(let h):
            if let proto, proto != "http" { return false }
            if sni != nil { return false }
            if let method, method != h.method { return false }
            if let host, !RuleMatch.name(h.host, matches: host) { return false }
            if let pathPrefix, !h.target.utf8.starts(with: pathPrefix.utf8) { return false }
            if let pathPattern, !RuleMatch.glob(Array(pathPattern.utf8), matches: Array(h.target.utf8)) { return false }
            if let header {
                let name = header.name.lowercased(), value = header.value?.lowercased()
                if !h.headers.contains(where: { $0.name == name && (value == nil || $0.value.lowercased() == value) }) {
                    return false
                }
            }
            return true
        case .tls(let t):
            if let proto, proto != "tls" { return false }
            if usesHTTPRequestFields || needsResponse { return false }
            if let sni, !RuleMatch.name(t.serverName, matches: sni) { return false }
            return true
        case .other:
            if let proto, proto != "other" { return false }
            return !(usesHTTPRequestFields || needsResponse || sni != nil)
        }
    }

    /// The response part.
    func matches(_ h: HTTPResponseHead) -> Bool {
        if let status, !status.contains(h.status) { return false }
        if let contentLengthAbove {
            guard let length = h.contentLength, length > contentLengthAbove else { return false }
        }
        if let contentType {
            guard let t = h.contentType, t.lowercased().hasPrefix(contentType.lowercased()) else { return false }
        }
        return true
    }

    /// A host or server name against a pattern, case-insensitively (one trailing dot of the
    /// name is ignored): "*" matches any name, "*.example.com" any name ending in
    /// ".example.com" with something before it, anything else only itself. A missing name
    /// matches no pattern.
    static func name(_ name: String?, matches pattern: String) -> Bool {
        guard var n = name?.lowercased(), !n.isEmpty else { return false }
        if n.hasSuffix(".") { n.removeLast() }
        let p = pattern.lowercased()
        if p == "*" { return true }
        if p.hasPrefix("*.") {
            let suffix = p.dropFirst()   // ".example.com"
            return n.hasSuffix(suffix) && n.count > suffix.count
        }
        return n == p
    }

    /// A glob against the whole text, byte by byte: '*' is any run of bytes, '?' one byte.
    /// Backtracks only to the last '*', so it is linear in practice and O(n·m) at worst.
    static func glob(_ pattern: [UInt8], matches text: [UInt8]) -> Bool {
        let star = UInt8(ascii: "*"), any = UInt8(ascii: "?")
        var p = 0, t = 0
        var lastStar = -1, resume = 0
        while t < text.count {
            if p < pattern.count && (pattern[p] == any || pattern[p] == text[t]) {
                p += 1
                t += 1
            } else if p < pattern.count && pattern[p] == star {
                lastStar = p
                resume = t
                p += 1
            } else if lastStar >= 0 {
                p = lastStar + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.count && pattern[p] == star { p += 1 }
        return p == pattern.count
    }
}
