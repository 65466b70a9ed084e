/// What the proxy does with a connection once a rule (or the default) decides.
public enum RuleAction: String, Codable, Sendable, CaseIterable {
    /// Keep relaying the connection through the proxy.
    case proxy
    /// Step out of the connection; the kernel forwards the rest.
    case splice
    /// Step out at once.
    case bypass
}

/// A request header that must be present. When `value` is set, the header's value must equal
/// it, compared case-insensitively; the name is always compared case-insensitively. When the
/// request has the header several times, any one of them may match.
public struct HeaderMatch: Codable, Sendable, Equatable {
    public var name: String
    public var value: String?

    public init(name: String, value: String? = nil) {
        self.name = name
        self.value = value
    }
}

/// What a rule matches. Every field is optional and an absent field matches anything; all the
/// fields that are present must match.
///
/// The fields come in three groups, in the order the proxy learns them:
/// - the connection (`clients`, `servers`, `ports`), known before any byte;
/// - the client's first bytes (`proto`, `method`, `host`, `pathPrefix`, `pathPattern`,
///   `header`, `sni`, `afterBytes`);
/// - the server's response head (`status`, `contentLengthAbove`, `contentType`). These only
///   match an HTTP exchange, so a rule that has them also needs the request, and it must be
///   HTTP.
public struct RuleMatch: Codable, Sendable, Equatable {
    /// Client address prefixes ("10.0.0.0/8", "2001:db8::/32" or a bare address); any of them.
    public var clients: [String]?
    /// Server address prefixes; any of them.
    public var servers: [String]?
    /// Server ports; any of them.
    public var ports: [UInt16]?

    /// "http" (an HTTP/1.x request), "tls" (a TLS ClientHello) or "other" (neither).
    public var proto: String?
    /// The HTTP method, compared exactly ("GET").
    public var method: String?
    /// The HTTP Host (its port removed), compared case-insensitively. "*.example.com" matches
    /// any subdomain of example.com but not example.com itself; "*" matches any request that
    /// has a Host.
    public var host: String?
    /// The HTTP request target starts with this (byte for byte).
    public var pathPrefix: String?
    /// A glob the whole HTTP request target (query included) must match: '*' is any run of
    /// characters, '?' exactly one. There is no escape: a literal '?' in a query is matched by
    /// '?' or '*'.
    public var pathPattern: String?
    /// A request header that must be present (and may have to have a value).
    public var header: HeaderMatch?
    /// The TLS ClientHello's server name; the same wildcards as `host`.
    public var sni: String?
    /// Matches once at least this many bytes came from the client (1...16384).
    public var afterBytes: Int?

    /// The response status code is one of these.
    public var status: [Int]?
    /// The response has a Content-Length greater than this (no Transfer-Encoding).
    public var contentLengthAbove: Int?
    /// The response Content-Type starts with this, compared case-insensitively ("video/").
    public var contentType: String?

    public init(
        clients: [String]? = nil, servers: [String]? = nil, ports: [UInt16]? = nil,
        proto: String? = nil, method: String? = nil, host: String? = nil,
        pathPrefix: String? = nil, pathPattern: String? = nil, header: HeaderMatch? = nil,
        sni: String? = nil, afterBytes: Int? = nil,
        status: [Int]? = nil, contentLengthAbove: Int? = nil, contentType: String? = nil
    ) {
        self.clients = clients
        self.servers = servers
        self.ports = ports
        self.proto = proto
        self.method = method
        self.host = host
        self.pathPrefix = pathPrefix
        self.pathPattern = pathPattern
        self.header = header
        self.sni = sni
        self.afterBytes = afterBytes
        self.status = status
        self.contentLengthAbove = contentLengthAbove
        self.contentType = contentType
    }

    /// Whether the rule looks at the client's first bytes.
    public var needsRequest: Bool {
        proto != nil || usesHTTPRequestFields || sni != nil || afterBytes != nil
    }

    /// Whether the rule looks at the server's response head.
    public var needsResponse: Bool {
        status != nil || contentLengthAbove != nil || contentType != nil
    }

    /// Whether any field that only an HTTP request has is set.
    var usesHTTPRequestFields: Bool {
        method != nil || host != nil || pathPrefix != nil || pathPattern != nil || header != nil
    }
}

/// One rule: when `match` matches, `action` is taken.
public struct SpliceRule: Codable, Sendable, Equatable {
    /// Given by the daemon when the rule is added, and kept when the rule moves (0 until then).
    public var id: Int
    /// An optional label the CLI shows.
    public var name: String?
    public var match: RuleMatch
    public var action: RuleAction
    /// The pool (of the set's `pools`) the balancer sends the rule's connections to; only with
    /// `splice`. Nil: the service's own pool (Docs/balancer.md).
    public var pool: String?
    /// The balancer's keep-alive re-routing, with `splice`: each request of a connection is
    /// decided on its own, and only its response is joined; at the response's end the flow
    /// returns to the proxy, which reads the next request (Docs/balancer.md).
    public var perRequest: Bool
    /// With `perRequest`: what becomes of a backend's FIN after a response (Connection: close).
    public var fin: FinHandling
    /// With `splice` on a balancer service: join only this direction; the proxy keeps relaying
    /// the other (seed 003's unidirectional splice). Nil: both ways.
    public var oneWay: OneWay?

    public init(id: Int = 0, name: String? = nil, match: RuleMatch, action: RuleAction, pool: String? = nil,
                perRequest: Bool = false, fin: FinHandling = .propagate, oneWay: OneWay? = nil) {
        self.id = id
        self.name = name
        self.match = match
        self.action = action
        self.pool = pool
        self.perRequest = perRequest
        self.fin = fin
        self.oneWay = oneWay
    }

    private enum CodingKeys: String, CodingKey { case id, name, match, action, pool, perRequest, fin, oneWay }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encodeIfPresent(name, forKey: .name)
        try c.encode(match, forKey: .match)
        try c.encode(action, forKey: .action)
        try c.encodeIfPresent(pool, forKey: .pool)
        if perRequest { try c.encode(perRequest, forKey: .perRequest) }
        if fin != .propagate { try c.encode(fin, forKey: .fin) }
        try c.encodeIfPresent(oneWay, forKey: .oneWay)
    }

    /// Decodes a rule; `id` may be left out (0) and so may `match` (a rule that matches
    /// anything) and `pool`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decodeIfPresent(Int.self, forKey: .id) ?? 0
        name = try c.decodeIfPresent(String.self, forKey: .name)
        match = try c.decodeIfPresent(RuleMatch.self, forKey: .match) ?? RuleMatch()
        action = try c.decode(RuleAction.self, forKey: .action)
        pool = try c.decodeIfPresent(String.self, forKey: .pool)
        perRequest = try c.decodeIfPresent(Bool.self, forKey: .perRequest) ?? false
        fin = try c.decodeIfPresent(FinHandling.self, forKey: .fin) ?? .propagate
        oneWay = try c.decodeIfPresent(OneWay.self, forKey: .oneWay)
    }
}

/// The direction a one-way splice joins (Docs/balancer.md).
public enum OneWay: String, Codable, Sendable, CaseIterable {
    /// The backend's bytes to the client (a large response); the proxy keeps reading the client.
    case toClient = "to-client"
    /// The client's bytes to the backend (a large upload); the proxy keeps reading the backend.
    case toServer = "to-server"
}

/// A backend's FIN at the end of a response joined for one request (seed 003: a FIN is
/// propagated through the splice or processed by the node).
public enum FinHandling: String, Codable, Sendable, CaseIterable {
    /// The FIN goes through: the client's connection ends with the backend's.
    case propagate
    /// The proxy's socket takes it: the backend connection ends there, the client's stays
    /// open for its next request (told so: the response's `Connection: close` is taken out).
    case process
}

/// The proxy's rules: an ordered list, where the first rule that matches decides, and what to
/// do when none does.
/// Who reads a connection's first bytes for the rules that need them.
public enum RequestReader: String, Codable, Sendable, CaseIterable {
    /// The engine, from its queue, before the proxy is engaged: a connection its request rules
    /// splice or bypass never reaches the proxy (the default).
    case engine
    /// The proxy, after the handshake was replayed to it: it reads the request, decides, and
    /// steps out of the connections it splices (PENDING, drained, TCP_REPAIR).
    case proxy
}

public struct RuleSet: Codable, Sendable, Equatable {
    /// The rules in order; see `decide(connection:request:)` for how they are walked.
    public var rules: [SpliceRule]
    /// The action when no rule matches, when the client's first bytes do not come in time, or
    /// when they cannot be parsed.
    public var defaultAction: RuleAction
    /// How long the client's first bytes are awaited (10...600000).
    public var firstBytesTimeoutMilliseconds: Int
    /// Who reads them. The rules on the response are always applied by the proxy.
    public var requestReader: RequestReader
    /// Bumped by the daemon at every change.
    public var version: Int
    /// The layer-7 balancer's backend pools, which rules name (`SpliceRule.pool`).
    public var pools: [Pool]

    /// The most rules a set may hold.
    public static let maxRules = 256
    /// The most pools a set may hold.
    public static let maxPools = 64
    /// The valid range of `firstBytesTimeoutMilliseconds`.
    public static let timeoutRange = 10...600_000

    public init(rules: [SpliceRule] = [], defaultAction: RuleAction = .proxy,
                firstBytesTimeoutMilliseconds: Int = 2000, requestReader: RequestReader = .engine, version: Int = 0,
                pools: [Pool] = []) {
        self.rules = rules
        self.defaultAction = defaultAction
        self.firstBytesTimeoutMilliseconds = firstBytesTimeoutMilliseconds
        self.requestReader = requestReader
        self.version = version
        self.pools = pools
    }

    /// No rules: every connection takes the default action, `proxy`.
    public static let empty = RuleSet()

    private enum CodingKeys: String, CodingKey {
        case rules, defaultAction, firstBytesTimeoutMilliseconds, requestReader, version, pools
    }

    /// Decodes a rule set; every field may be left out and then takes its default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rules = try c.decodeIfPresent([SpliceRule].self, forKey: .rules) ?? []
        defaultAction = try c.decodeIfPresent(RuleAction.self, forKey: .defaultAction) ?? .proxy
        firstBytesTimeoutMilliseconds = try c.decodeIfPresent(Int.self, forKey: .firstBytesTimeoutMilliseconds) ?? 2000
        requestReader = try c.decodeIfPresent(RequestReader.self, forKey: .requestReader) ?? .engine
        version = try c.decodeIfPresent(Int.self, forKey: .version) ?? 0
        pools = try c.decodeIfPresent([Pool].self, forKey: .pools) ?? []
    }

    /// Whether any rule needs the client's first bytes (a rule on the response needs them too:
    /// the request must be HTTP). When none does, the proxy decides at once.
    public var needsFirstBytes: Bool {
        rules.contains { $0.match.needsRequest || $0.match.needsResponse }
    }
}

/// Why a rule set was refused. The description names the rule and the field.
public struct RuleError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
