#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SpliceWire

/// What the picking knows of a request (any field may be nil).
public struct BalanceKey: Sendable, Equatable {
    /// The client's address: source-hash, and the fallback of the other hashes.
    public var client: IPAddress
    /// The HTTP Host, lowercased, its port removed.
    public var host: String?
    /// The HTTP request target without its query string ("/a/b" of "/a/b?c=1").
    public var path: String?
    /// The value of the request header the pool's `hashHeader` names (the first, when the
    /// request has it several times).
    public var header: String?
    /// The TLS ClientHello's server name.
    public var sni: String?

    public init(client: IPAddress, host: String? = nil, path: String? = nil, header: String? = nil, sni: String? = nil) {
        self.client = client
        self.host = host
        self.path = path
        self.header = header
        self.sni = sni
    }

    /// Fills host/path/header/sni from the client's first bytes as the rules parsed them:
    /// host, path and header from an HTTP request head (`hashHeader` compared
    /// case-insensitively), sni from a TLS ClientHello; nothing from other bytes or none.
    public init(client: IPAddress, request: RequestFacts?, hashHeader: String?) {
        self.init(client: client)
        switch request?.proto {
        case .http(let head)?:
            host = head.host
            path = String(head.target.prefix { $0 != "?" })
            if let name = hashHeader?.lowercased() {
                header = head.headers.first { $0.name == name }?.value
            }
        case .tls(let hello)?:
            sni = hello.serverName
        case .other?, nil:
            break
        }
    }
}

/// Picks pool members for new requests. Pure and deterministic: the same calls in the same
/// order give the same members, in any process (no per-process hash seed). The state it
/// keeps (the turns of the round robins, the smooth weighted round robin's current weights)
/// is per pool name.
public struct Balancer: Sendable {
    /// The member index each pool's round robin (and least connections' ties) starts from.
    private var turns: [String: Int] = [:]
    /// The smooth weighted round robin's state of each pool.
    private var smooth: [String: SmoothState] = [:]

    /// Smooth weighted round robin's current weights, for the member list they were made for.
    private struct SmoothState: Sendable {
        var keys: [String]
        var weights: [Int]
        var current: [Int]
    }

    public init() {}

    /// Picks a member of `pool` for a new request: never a drained member nor one in `down`
    /// (keys of members the health check took out); nil when none is left. `active`: open
    /// connections per member key (for least-connections; missing = 0).
    ///
    /// - round-robin: each member left in turn, in list order; the turn is kept per pool name.
    /// - weighted-round-robin: nginx's smooth weighted round robin (weights 5, 1, 1 give
    ///   a a b a c a a); its state is per pool name, and starts again when the pool's keys or
    ///   weights change. Drained and down members sit out without changing it.
    /// - least-connections: the lowest active/weight; ties go to the first from the pool's
    ///   turn, which moves past each pick (so that equal members take turns).
    /// - source-hash, host-hash, path-hash, header-hash, sni-hash: weighted rendezvous
    ///   (highest random weight) hashing of the field over the member keys: the member with
    ///   the highest `weight / -ln(u)`, where u in (0, 1) is a stable hash of the member's key
    ///   and the field. Taking a member out (drained, down, removed) moves only the requests
    ///   that went to it; adding one moves only those it now wins. A missing or empty field
    ///   falls back to source-hash on the client's address.
    public mutating func pick(_ pool: Pool, key: BalanceKey, down: Set<String> = [], active: [String: Int] = [:]) -> Backend? {
        let members = pool.backends
        let keys = members.map(\.key)
        let eligible = members.indices.map { !members[$0].drained && !down.contains(keys[$0]) }
        guard eligible.contains(true) else { return nil }
        let chosen: Int
        switch pool.method {
        case .roundRobin:
            chosen = roundRobin(pool.name, eligible)
        case .weightedRoundRobin:
            chosen = smoothWeighted(pool.name, members, keys, eligible)
        case .leastConnections:
            chosen = leastConnections(pool.name, members, keys, eligible, active)
        case .sourceHash:
            chosen = rendezvous(members, keys, eligible, Balancer.hash(key.client))
        case .hostHash:
            chosen = rendezvous(members, keys, eligible, Balancer.hash(key.host, else: key.client))
        case .pathHash:
            chosen = rendezvous(members, keys, eligible, Balancer.hash(key.path, else: key.client))
        case .headerHash:
            chosen = rendezvous(members, keys, eligible, Balancer.hash(key.header, else: key.client))
        case .sniHash:
            chosen = rendezvous(members, keys, eligible, Balancer.hash(key.sni, else: key.client))
        }
        return members[chosen]
    }

    // MARK: The methods (each given at least one eligible member)

    /// The first eligible member from the pool's turn; the turn moves past it.
    private mutating func roundRobin(_ name: String, _ eligible: [Bool]) -> Int {
        let n = eligible.count
        let start = (turns[name] ?? 0) % n
        var i = start
        while !eligible[i] { i = (i + 1) % n }
        turns[name] = (i + 1) % n
        return i
    }

    /// nginx's smooth weighted round robin: every eligible member's current weight grows by
    /// its weight, the largest (the first of equals) is picked and loses the eligible total.
    private mutating func smoothWeighted(_ name: String, _ members: [Backend], _ keys: [String], _ eligible: [Bool]) -> Int {
        let weights = members.map(\.weight)
        var state = smooth[name] ?? SmoothState(keys: [], weights: [], current: [])
        if state.keys != keys || state.weights != weights {
            state = SmoothState(keys: keys, weights: weights, current: Array(repeating: 0, count: members.count))
        }
        var best = -1, total = 0
        for i in members.indices where eligible[i] {
            state.current[i] += weights[i]
            total += weights[i]
            if best < 0 || state.current[i] > state.current[best] { best = i }
        }
        state.current[best] -= total
        smooth[name] = state
        return best
    }

    /// The eligible member with the lowest active/weight (compared as active·weight products,
    /// exactly), the first of equals counted from the pool's turn; the turn moves past it.
    private mutating func leastConnections(_ name: String, _ members: [Backend], _ keys: [String], _ eligible: [Bool],
                                           _ active: [String: Int]) -> Int {
        let n = members.count
        let start = (turns[name] ?? 0) % n
        var best = -1
        for step in 0..<n {
            let i = (start + step) % n
            guard eligible[i] else { continue }
            if best < 0 {
                best = i
                continue
            }
            let load = active[keys[i], default: 0], bestLoad = active[keys[best], default: 0]
            // load / weight < bestLoad / bestWeight, weights being positive.
            let (lhs, o1) = load.multipliedReportingOverflow(by: max(1, members[best].weight))
            let (rhs, o2) = bestLoad.multipliedReportingOverflow(by: max(1, members[i].weight))
            if !o1 && !o2 && lhs < rhs { best = i }
        }
        turns[name] = (best + 1) % n
        return best
    }

    /// Weighted rendezvous hashing: the eligible member with the highest weight / -ln(u),
    /// u from the member's key and the request's hash; the first of equals.
    private func rendezvous(_ members: [Backend], _ keys: [String], _ eligible: [Bool], _ request: UInt64) -> Int {
        var best = -1
        var bestScore = -Double.infinity
        for i in members.indices where eligible[i] {
            let h = Balancer.mix(Balancer.hash(Array(keys[i].utf8)) ^ request)
            // 53 bits, centred in their step: strictly between 0 and 1.
            let u = (Double(h >> 11) + 0.5) * 0x1p-53
            let score = Double(max(1, members[i].weight)) / -log(u)
            if score > bestScore {
                best = i
                bestScore = score
            }
        }
        return best
    }

    // MARK: The stable hash

    /// A field's hash, or the client address's when the field is missing or empty.
    static func hash(_ field: String?, else client: IPAddress) -> UInt64 {
        guard let field, !field.isEmpty else { return hash(client) }
        return hash(Array(field.utf8))
    }

    /// An address's hash: its 16 bytes (IPv4 as IPv4-mapped), big-endian.
    static func hash(_ address: IPAddress) -> UInt64 {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        for word in [address.high, address.low] {
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: word >> UInt64(shift))) }
        }
        return hash(bytes)
    }

    /// 64-bit FNV-1a of the bytes, then the splitmix64 finalizer (FNV-1a alone leaves the high
    /// bits of short, similar inputs alike).
    static func hash(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return mix(h)
    }

    /// splitmix64's finalizer: a bijection of 64 bits in which every input bit flips about half
    /// the output bits.
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
