import SpliceWire

/// How a pool's member is picked for a new request (Balancing.swift).
public enum BalanceMethod: String, Codable, Sendable, CaseIterable {
    /// Each member in turn, in list order.
    case roundRobin = "round-robin"
    /// Each member in turn, as often as its weight says, spread out (nginx's smooth weighted
    /// round robin).
    case weightedRoundRobin = "weighted-round-robin"
    /// The member with the fewest open connections for its weight.
    case leastConnections = "least-connections"
    /// A hash of the client's address: a client keeps its member.
    case sourceHash = "source-hash"
    /// A hash of the HTTP Host (its port removed).
    case hostHash = "host-hash"
    /// A hash of the HTTP request target without its query string.
    case pathHash = "path-hash"
    /// A hash of the value of the request header the pool's `hashHeader` names.
    case headerHash = "header-hash"
    /// A hash of the TLS ClientHello's server name.
    case sniHash = "sni-hash"

    /// The method hashes a field of the request (its key needs the request parsed).
    public var readsRequest: Bool {
        switch self {
        case .hostHash, .pathHash, .headerHash, .sniHash: return true
        case .roundRobin, .weightedRoundRobin, .leastConnections, .sourceHash: return false
        }
    }
}

/// A pool member: a server the balancer connects to.
public struct Backend: Codable, Sendable, Equatable, Hashable {
    /// An IPv4 or IPv6 address literal ("10.0.0.11", "2001:db8::11"), without brackets.
    public var address: String
    /// The server's port, 1...65535.
    public var port: UInt16
    /// Its share of the requests against the other members', 1...256 (default 1).
    public var weight: Int
    /// True: the member takes no new requests; those already sent to it go on.
    public var drained: Bool

    /// The valid range of `weight`.
    public static let weightRange = 1...256

    public init(address: String, port: UInt16, weight: Int = 1, drained: Bool = false) {
        self.address = address
        self.port = port
        self.weight = weight
        self.drained = drained
    }

    /// The member's identity in its pool: "address:port", "[address]:port" for IPv6. The
    /// address is written as SpliceWire writes it (lowercase, `::` for the longest run of
    /// zeros), so that two spellings of one address are one member; an address that does not
    /// parse is kept as it is.
    public var key: String {
        guard let ip = IPAddress(address) else { return "\(address):\(port)" }
        return ip.isIPv4 ? "\(ip):\(port)" : "[\(ip)]:\(port)"
    }

    private enum CodingKeys: String, CodingKey { case address, port, weight, drained }

    /// Decodes a member; `weight` (1) and `drained` (false) may be left out.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        address = try c.decode(String.self, forKey: .address)
        port = try c.decode(UInt16.self, forKey: .port)
        weight = try c.decodeIfPresent(Int.self, forKey: .weight) ?? 1
        drained = try c.decodeIfPresent(Bool.self, forKey: .drained) ?? false
    }

    /// Parses a member as the CLI takes it: "ADDRESS:PORT" or "ADDRESS:PORT:WEIGHT", an IPv6
    /// address in brackets ("[2001:db8::11]:80:2"). The address is kept as `key` writes it.
    /// The error names the text and what is wrong with it.
    public static func parse(_ text: String) throws(RuleError) -> Backend {
        func fail(_ why: String) -> RuleError {
            RuleError("backend '\(text)': \(why) (expected ADDRESS:PORT[:WEIGHT], [IPv6]:PORT[:WEIGHT])")
        }
        let host: Substring, rest: [Substring]
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw fail("no ']' after the IPv6 address") }
            host = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            guard after.hasPrefix(":") else { throw fail("no ':PORT' after ']'") }
            rest = after.dropFirst().split(separator: ":", omittingEmptySubsequences: false)
        } else {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            // Three colons or more, or two after something that is not IPv4 but could begin
            // an IPv6 address ("::1:80", "2001:db8::1"): an IPv6 address without brackets.
            let looksIPv6 = IPAddress(parts[0]) == nil && parts[0].allSatisfy(\.isHexDigit)
            if parts.count > 4 || (parts.count > 2 && looksIPv6) { throw fail("an IPv6 address must be in brackets") }
            host = parts[0]
            rest = Array(parts.dropFirst())
        }
        guard !rest.isEmpty else { throw fail("no port") }
        guard rest.count <= 2 else { throw fail("more than a port and a weight after the address") }
        guard let ip = IPAddress(host) else { throw fail("'\(host)' is not an IPv4 or IPv6 address") }
        guard let port = UInt16(rest[0]), port != 0 else { throw fail("port '\(rest[0])' is not a port (1-65535)") }
        var weight = 1
        if rest.count == 2 {
            guard let w = Int(rest[1]), weightRange.contains(w) else {
                throw fail("weight '\(rest[1])' is not a number from \(weightRange.lowerBound) to \(weightRange.upperBound)")
            }
            weight = w
        }
        return Backend(address: ip.description, port: port, weight: weight)
    }
}

/// A named set of backends a rule (or a service) sends its connections to.
public struct Pool: Codable, Sendable, Equatable {
    /// 1 to 64 of A-Z a-z 0-9 _ . -; unique in the rule set.
    public var name: String
    /// How a member is picked (default round robin).
    public var method: BalanceMethod
    /// The request header whose value `headerHash` hashes (a header name); set for that method
    /// only.
    public var hashHeader: String?
    /// The members, at most 64, with unique keys. May be empty: connections a rule sends to an
    /// empty pool (or one whose members are all down or drained) are reset by the proxy: there
    /// is no backend to relay them to.
    public var backends: [Backend]
    /// How the proxy checks its members (none: every member is taken as up).
    public var check: HealthCheck?

    /// The most backends a pool may hold.
    public static let maxBackends = 64

    public init(name: String, method: BalanceMethod = .roundRobin, hashHeader: String? = nil, backends: [Backend] = [],
                check: HealthCheck? = nil) {
        self.name = name
        self.method = method
        self.hashHeader = hashHeader
        self.backends = backends
        self.check = check
    }

    private enum CodingKeys: String, CodingKey { case name, method, hashHeader, backends, check }

    /// Decodes a pool; `method` (round robin), `hashHeader` and `backends` (none) may be left
    /// out.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        method = try c.decodeIfPresent(BalanceMethod.self, forKey: .method) ?? .roundRobin
        hashHeader = try c.decodeIfPresent(String.self, forKey: .hashHeader)
        backends = try c.decodeIfPresent([Backend].self, forKey: .backends) ?? []
        check = try c.decodeIfPresent(HealthCheck.self, forKey: .check)
    }
}

/// A pool's health check, run by each proxy against each member: a TCP connect, or an HTTP
/// request whose answer must carry the expected status. A member failing `fall` checks in a
/// row is taken out (no new request goes to it) until it passes `rise` in a row.
public struct HealthCheck: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable { case tcp, http }
    public var kind: Kind
    /// HTTP: the path asked for ("/" by default) and the status expected (200 by default).
    public var path: String?
    public var expectStatus: Int?
    /// Between two checks of a member, and how long one may take (milliseconds).
    public var intervalMilliseconds: Int
    public var timeoutMilliseconds: Int
    public var fall: Int
    public var rise: Int

    public static let intervalRange = 50...60_000
    public static let timeoutRange = 10...60_000
    public static let countRange = 1...100

    public init(kind: Kind, path: String? = nil, expectStatus: Int? = nil, intervalMilliseconds: Int = 1000,
                timeoutMilliseconds: Int = 1000, fall: Int = 2, rise: Int = 2) {
        self.kind = kind
        self.path = path
        self.expectStatus = expectStatus
        self.intervalMilliseconds = intervalMilliseconds
        self.timeoutMilliseconds = timeoutMilliseconds
        self.fall = fall
        self.rise = rise
    }

    private enum CodingKeys: String, CodingKey { case kind, path, expectStatus, intervalMilliseconds, timeoutMilliseconds, fall, rise }

    /// Decodes a check; everything but `kind` may be left out.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(Kind.self, forKey: .kind)
        path = try c.decodeIfPresent(String.self, forKey: .path)
        expectStatus = try c.decodeIfPresent(Int.self, forKey: .expectStatus)
        intervalMilliseconds = try c.decodeIfPresent(Int.self, forKey: .intervalMilliseconds) ?? 1000
        timeoutMilliseconds = try c.decodeIfPresent(Int.self, forKey: .timeoutMilliseconds) ?? 1000
        fall = try c.decodeIfPresent(Int.self, forKey: .fall) ?? 2
        rise = try c.decodeIfPresent(Int.self, forKey: .rise) ?? 2
    }

    /// The first thing wrong with the check, or nil.
    public func problem() -> String? {
        if !HealthCheck.intervalRange.contains(intervalMilliseconds) {
            return "check: intervalMilliseconds \(intervalMilliseconds) is out of range (50-60000)"
        }
        if !HealthCheck.timeoutRange.contains(timeoutMilliseconds) {
            return "check: timeoutMilliseconds \(timeoutMilliseconds) is out of range (10-60000)"
        }
        if !HealthCheck.countRange.contains(fall) { return "check: fall \(fall) is out of range (1-100)" }
        if !HealthCheck.countRange.contains(rise) { return "check: rise \(rise) is out of range (1-100)" }
        if kind == .tcp && (path != nil || expectStatus != nil) {
            return "check: path and expectStatus are for kind http, not tcp"
        }
        if let p = path, !p.hasPrefix("/") || p.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f }) {
            return "check: path '\(p)' must start with '/' and hold no space or control character"
        }
        if let s = expectStatus, !(100...599).contains(s) { return "check: expectStatus \(s) is out of range (100-599)" }
        return nil
    }
}
