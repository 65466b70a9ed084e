#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SpliceWire
@_exported import SpliceCounters
@_exported import SpliceRules

/// The control protocol between `spliced` and its clients (`splicectl`, `splice-proxy`):
/// one JSON object per line over a Unix stream socket that only root can open.
/// Docs/control-protocol.md describes it for other implementations.
public enum ControlProtocol {
    /// Protocol version (Docs/control-protocol.md); no message carries it yet.
    public static let version = 1
    /// Where `spliced` listens unless told otherwise.
    public static let defaultSocketPath = "/run/tcpsplice/spliced.sock"
    /// The longest request line the daemon accepts.
    public static let maximumRequestBytes = 64 * 1024

    /// The longest socket path, in bytes: what `sun_path` of `sockaddr_un` holds (108 on
    /// Linux) less its terminating NUL.
    public static let maximumSocketPathBytes = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    /// Why `path` cannot be a control socket's path (for a usage error naming the option), or
    /// nil when it can.
    public static func socketPathProblem(_ path: String) -> String? {
        if path.isEmpty { return "the control socket path is empty" }
        if path.utf8.contains(0) { return "the control socket path contains a NUL byte" }
        let n = path.utf8.count
        if n > maximumSocketPathBytes {
            return "the control socket path is \(n) bytes long; a Unix socket path holds at most \(maximumSocketPathBytes) bytes (sun_path)"
        }
        return nil
    }

    /// A packet mark as the daemons' options and the rules take it: hex (`0x5a5e`) or
    /// decimal, non-zero (0 is every unmarked packet's). Nil when it is not one.
    public static func parseMark(_ s: String) -> UInt32? {
        let v = s.hasPrefix("0x") ? UInt32(s.dropFirst(2), radix: 16) : UInt32(s)
        return v == 0 ? nil : v
    }
}

/// A request from a client. `command` selects which of the optional fields matter.
public struct ControlRequest: Codable, Sendable, Equatable {
    public enum Command: String, Codable, Sendable, CaseIterable {
        /// Daemon counters, queues, flows by state, memory.
        case status
        /// One record per flow.
        case flows
        /// A proxy announces itself; the connection then stays open for its life.
        case register
        /// A registered proxy says it is alive.
        case heartbeat
        /// A registered proxy announces it closes one of its sockets on purpose.
        case closing
        /// The splice policy in force.
        case policy
        /// Replace the splice policy (new flows only).
        case setPolicy = "set-policy"
        /// A registered proxy reports its decision for a connection (`decision`); `splice` and
        /// `bypass` make the splice pending.
        case decide
        /// A registered proxy has written out what it held and asks to step out (`decision`,
        /// `force` past its drain bound). On `ok` it closes its sockets without a packet.
        case stepOut = "step-out"
        /// The splice rules in force.
        case rules
        /// Replace the whole rule set (`rules`; rules with id 0 get new ids).
        case setRules = "set-rules"
        /// Add `rule` at `position` (1-based; absent: at the end).
        case addRule = "add-rule"
        /// Remove the rule `ruleID`.
        case removeRule = "remove-rule"
        /// Move the rule `ruleID` to `position`.
        case moveRule = "move-rule"
        /// Add the pool `pool` (its name must be new).
        case addPool = "add-pool"
        /// Remove the pool `poolName` (no rule may name it).
        case removePool = "remove-pool"
        /// Add `member` to the pool `poolName`.
        case addMember = "add-member"
        /// Remove the member of the pool `poolName` whose key is `member`'s.
        case removeMember = "remove-member"
        /// Drain the member of the pool `poolName` whose key is `member`'s: no new requests.
        case drainMember = "drain-member"
        /// Take such a member back: it takes new requests again.
        case undrainMember = "undrain-member"
        /// A registered proxy's join of a client's connection to its connection to a backend
        /// (`join`: `prepare` shuts the windows, `join` joins when drained, `cancel`).
        case join
        /// Reset every flow joined to the backend `member` (address and port) at both ends:
        /// a proxy's health check took it out, or the operator does (`splicectl pools reset`).
        /// The answer's `flowsReset` says how many.
        case resetBackend = "reset-backend"
    }

    public var command: Command
    public var proxy: ProxyRegistration?
    public var close: CloseIntent?
    public var policy: PolicyConfig?
    public var decision: FlowDecision?
    public var force: Bool?
    public var rules: RuleSet?
    public var rule: SpliceRule?
    public var ruleID: Int?
    public var position: Int?
    public var join: JoinMessage?
    /// For `add-pool`: the pool.
    public var pool: Pool?
    /// For `remove-pool` and the member commands: the pool's name.
    public var poolName: String?
    /// For the member commands: the member (for all but `add-member`, only its key counts).
    public var member: Backend?

    public init(command: Command, proxy: ProxyRegistration? = nil, close: CloseIntent? = nil, policy: PolicyConfig? = nil,
                decision: FlowDecision? = nil, force: Bool? = nil, rules: RuleSet? = nil, rule: SpliceRule? = nil,
                ruleID: Int? = nil, position: Int? = nil, pool: Pool? = nil, poolName: String? = nil,
                member: Backend? = nil) {
        self.pool = pool
        self.poolName = poolName
        self.member = member
        self.decision = decision
        self.force = force
        self.rules = rules
        self.rule = rule
        self.ruleID = ruleID
        self.position = position
        self.command = command
        self.proxy = proxy
        self.close = close
        self.policy = policy
    }
}

/// Which flows go through the proxy (resilient mode); everything else stays in bypass.
public struct PolicyConfig: Codable, Sendable, Equatable {
    public var enabled: Bool
    /// Server ports and port ranges claimed, 1-65535 (in JSON a port is a number, a range the
    /// string "A:B"). An enabled policy names at least one (an empty list would claim every
    /// port: the daemon refuses it; "1:65535" says so); a disabled one may have none. A port
    /// past 65535 is refused by name when decoded (PortRange); port 0, an enabled policy
    /// without ports and the prefixes are SplicePolicy(validating:)'s to refuse.
    public var ports: [PortRange]
    /// Server prefixes claimed (empty: any), e.g. "10.0.0.0/8", "2001:db8::/32".
    public var servers: [String]
    /// Client prefixes claimed (empty: any).
    public var clients: [String]
    public init(enabled: Bool, ports: [PortRange] = [], servers: [String] = [], clients: [String] = []) {
        self.enabled = enabled
        self.ports = ports
        self.servers = servers
        self.clients = clients
    }
}

/// A proxy's announcement that it closes a socket on purpose (so its FIN or RST is not held).
public struct CloseIntent: Codable, Sendable, Equatable {
    public var client: String
    public var clientPort: UInt16
    public var server: String
    public var serverPort: UInt16
    /// true: the socket facing the client; false: the one facing the server.
    public var towardClient: Bool
    /// true: an abortive close (RST); false: a half-close (FIN).
    public var abortive: Bool
    public init(client: String, clientPort: UInt16, server: String, serverPort: UInt16, towardClient: Bool,
                abortive: Bool) {
        self.client = client
        self.clientPort = clientPort
        self.server = server
        self.serverPort = serverPort
        self.towardClient = towardClient
        self.abortive = abortive
    }
}

/// A proxy's decision for one of its connections (the client's tuple), and the rule behind it.
public struct FlowDecision: Codable, Sendable, Equatable {
    public var client: String
    public var clientPort: UInt16
    public var server: String
    public var serverPort: UInt16
    public var action: RuleAction
    /// The rule that matched; nil for the rules' default action.
    public var rule: Int?
    public init(client: String, clientPort: UInt16, server: String, serverPort: UInt16, action: RuleAction, rule: Int?) {
        self.client = client
        self.clientPort = clientPort
        self.server = server
        self.serverPort = serverPort
        self.action = action
        self.rule = rule
    }
}

/// A balancer join as the proxy asks for it (Docs/balancer.md): the client's connection to
/// the service address, the proxy's connection to the backend, and for `join` the bytes the
/// proxy read from and wrote to each of its two sockets.
public struct JoinMessage: Codable, Sendable, Equatable {
    /// `prepare`, `join`, `cancel`; for a join for one response (`returnAfter`, `chunkLeft`),
    /// `arm` once the proxy's sockets are back in place (the flow may return to them) and
    /// `release` to give the return up (answered `returned`, or `joined` for the connection's
    /// life); for a join for one chunked response, `end`: where does it end (answered with
    /// `returnAfter` and outcome `end`, outcome `open` while its last chunk has not gone by,
    /// or `joined` when its framing was lost; spliced also sends that answer unasked as soon
    /// as it knows).
    public enum Step: String, Codable, Sendable { case prepare, join, cancel, arm, release, end, relayed }
    public var step: Step
    public var client: String
    public var clientPort: UInt16
    public var service: String
    public var servicePort: UInt16
    public var local: String
    public var localPort: UInt16
    public var backend: String
    public var backendPort: UInt16
    public var readFromClient: UInt64?
    public var writtenToClient: UInt64?
    public var readFromBackend: UInt64?
    public var writtenToBackend: UInt64?
    /// For `join`: join for one response, whose bytes still to come from the backend (after
    /// `readFromBackend`) are these; the flow then returns to the proxy (keep-alive
    /// re-routing, Docs/balancer.md). Nil: joined for the connection's life.
    public var returnAfter: UInt64?
    /// With `returnAfter`: the bytes past the response's end that the proxy's socket facing
    /// the backend takes after the return (the receive window it is given when taken over).
    /// The windows the engine carries to the backend never reach further than that, so the
    /// backend's next response never overruns the socket. Nil: not capped.
    public var returnWindow: UInt32?
    /// For `join`, instead of `returnAfter`: join for one chunked response, whose backend's
    /// next `chunkLeft` bytes (after `readFromBackend`) are the rest of a chunk's data; the
    /// engine follows the framing from there and finds the response's end (step `end`).
    public var chunkLeft: UInt64?
    /// For `join`: join only this direction ("to-client": the backend's bytes; "to-server":
    /// the client's), the proxy relaying the other on its sockets. Nil: both ways. A `join`
    /// on a pair joined one way, once the relayed direction is over at the proxy, joins it
    /// too (the counts say where the proxy left it).
    public var oneWay: String?
    /// The rule that decided (nil: the default action) and the pool it named.
    public var rule: Int?
    public var pool: String?
    public init(step: Step, client: String, clientPort: UInt16, service: String, servicePort: UInt16,
                local: String, localPort: UInt16, backend: String, backendPort: UInt16) {
        self.step = step
        self.client = client; self.clientPort = clientPort
        self.service = service; self.servicePort = servicePort
        self.local = local; self.localPort = localPort
        self.backend = backend; self.backendPort = backendPort
    }
}

/// What a proxy says about itself when it registers.
public struct ProxyRegistration: Codable, Sendable, Equatable {
    public var name: String
    public var pid: Int32
    /// The local port its transparent listener accepts on.
    public var listenPort: UInt16?
    /// The balancer's service addresses it listens on ("address:port"; Docs/balancer.md).
    public var services: [String]?
    public init(name: String, pid: Int32, listenPort: UInt16? = nil, services: [String]? = nil) {
        self.name = name
        self.pid = pid
        self.listenPort = listenPort
        self.services = services
    }
}

/// The daemon's answer to one request.
public struct ControlResponse: Codable, Sendable {
    public var ok: Bool
    public var error: String?
    public var status: StatusReport?
    public var flows: [FlowRecord]?
    /// For `register`: the id the daemon gave the proxy.
    public var proxyID: Int?
    /// For `policy` and `set-policy`: the policy in force.
    public var policy: PolicyConfig?
    /// For `register` and the rule commands, and pushed unasked to every registered proxy at
    /// each change: the splice rules in force.
    public var rules: RuleSet?
    /// For `decide` and `step-out`: the decision answered (the proxy matches it to its
    /// connection), and for `step-out` the outcome: "drained", "fell-back", or "not-drained"
    /// (with `ok` false: keep writing, ask again).
    public var decision: FlowDecision?
    public var outcome: String?
    /// For `reset-backend`: the joined flows reset.
    public var flowsReset: Int?
    /// For `decide` and `step-out`: which of the two this answers (the proxy may have both
    /// under way for one connection).
    public var answers: ControlRequest.Command?
    /// For `join`: the join answered.
    public var join: JoinMessage?

    public init(ok: Bool, error: String? = nil, status: StatusReport? = nil, flows: [FlowRecord]? = nil,
                proxyID: Int? = nil, policy: PolicyConfig? = nil, rules: RuleSet? = nil, decision: FlowDecision? = nil,
                outcome: String? = nil) {
        self.rules = rules
        self.decision = decision
        self.outcome = outcome
        self.ok = ok
        self.error = error
        self.status = status
        self.flows = flows
        self.proxyID = proxyID
        self.policy = policy
    }

    public static func failure(_ message: String) -> ControlResponse { ControlResponse(ok: false, error: message) }
}

public struct StatusReport: Codable, Sendable, Equatable {
    public var version: String
    public var pid: Int32
    public var uptimeSeconds: Double
    public var queues: [QueueReport]
    public var packets: PacketCounters
    public var verdicts: VerdictCounters
    public var flows: FlowCounts
    public var memory: MemoryReport
    public var proxies: [ProxyReport]
    public var resilient: ResilientReport?
    public var policy: PolicyConfig?
    /// The control socket's connections and the timer thread (absent from older daemons' reports).
    public var control: ControlReport?
    /// Splices by outcome (absent from older daemons' reports).
    public var splices: SpliceCounters?
    /// The layer-7 balancer's joins.
    public var balancer: BalancerCounters?
    /// The NFLOG group of spliced flows' FINs (`spliced --fin-log-group`; absent when none).
    public var finLog: PacketLogReport?
    /// The NFLOG group of the intercepted handshakes as they leave the router (`spliced
    /// --syn-log-group`; absent when none).
    public var synLog: PacketLogReport?

    public init(version: String, pid: Int32, uptimeSeconds: Double, queues: [QueueReport], packets: PacketCounters,
                verdicts: VerdictCounters, flows: FlowCounts, memory: MemoryReport, proxies: [ProxyReport],
                resilient: ResilientReport? = nil, policy: PolicyConfig? = nil, control: ControlReport? = nil,
                splices: SpliceCounters? = nil) {
        self.splices = splices
        self.resilient = resilient
        self.policy = policy
        self.control = control
        self.version = version
        self.pid = pid
        self.uptimeSeconds = uptimeSeconds
        self.queues = queues
        self.packets = packets
        self.verdicts = verdicts
        self.flows = flows
        self.memory = memory
        self.proxies = proxies
    }
}

/// The NFLOG group the rules log spliced flows' FINs to: copies read, and copies the socket
/// lost (ENOBUFS; their packets went on, the table learns those flows' ends from their timers).
public struct PacketLogReport: Codable, Sendable, Equatable {
    public var group: UInt16
    public var packets: UInt64
    public var overruns: UInt64
    public init(group: UInt16, packets: UInt64, overruns: UInt64) {
        self.group = group; self.packets = packets; self.overruns = overruns
    }
}

/// The control socket: connections open and refused, clients dropped for misbehaving, and
/// how often the timers ran (their own thread; a control client cannot hold them up).
public struct ControlReport: Codable, Sendable, Equatable {
    /// Connections open now, and the most served at once.
    public var clients: Int
    public var maxClients: Int
    public var accepted: UInt64
    public var requests: UInt64
    /// Refused with a one-line error, then closed: `maxClients` were open; the daemon was at
    /// its descriptor limit; the peer was not root.
    public var refusedTooMany: UInt64
    public var refusedNoDescriptor: UInt64
    public var refusedNotRoot: UInt64
    /// Dropped: answers left unread (too many, or none read for the stall deadline); a request
    /// line over the limit; a request begun and not finished in time.
    public var droppedUnread: UInt64
    public var droppedOverlong: UInt64
    public var droppedSilent: UInt64
    /// Closed after the idle deadline (not registered proxies).
    public var closedIdle: UInt64
    /// Runs of the timer thread (flow expiry, held FIN/RST release, silent proxies, pidfile).
    public var timerRuns: UInt64
    public init(clients: Int, maxClients: Int, accepted: UInt64, requests: UInt64, refusedTooMany: UInt64,
                refusedNoDescriptor: UInt64, refusedNotRoot: UInt64, droppedUnread: UInt64, droppedOverlong: UInt64,
                droppedSilent: UInt64, closedIdle: UInt64, timerRuns: UInt64) {
        self.clients = clients
        self.maxClients = maxClients
        self.accepted = accepted
        self.requests = requests
        self.refusedTooMany = refusedTooMany
        self.refusedNoDescriptor = refusedNoDescriptor
        self.refusedNotRoot = refusedNotRoot
        self.droppedUnread = droppedUnread
        self.droppedOverlong = droppedOverlong
        self.droppedSilent = droppedSilent
        self.closedIdle = closedIdle
        self.timerRuns = timerRuns
    }
}

/// One NFQUEUE: what the daemon read from it, and the kernel's own counters for it
/// (`/proc/net/netfilter/nfnetlink_queue`).
public struct QueueReport: Codable, Sendable, Equatable {
    public var number: UInt16
    /// A queue of the proxy's own packets: bound without fail-open (a full queue drops).
    /// Absent from older daemons' reports.
    public var failClosed: Bool?
    /// What the queue carries: "ends" (their packets, dropped when full), "proxy" (the proxy's
    /// sockets', fail-closed), "handshakes" (the ends' SYN and SYN-ACK, let by unseen when
    /// full). Absent from older daemons' reports.
    public var role: String?
    /// Packets the daemon read from this queue.
    public var packets: UInt64
    /// Verdict messages sent (a batch counts once).
    public var verdictMessages: UInt64
    /// The `sendto` calls that carried them (a reader's round of verdicts goes in one); absent
    /// from older daemons' reports.
    public var verdictSends: UInt64?
    /// Verdict sends the kernel refused: their packets stayed queued (should stay 0).
    public var verdictSendFailures: UInt64?
    /// Of `verdictSends`, those sent early, before a packet the engine made (so that it does
    /// not overtake the packets handled before it); absent from older daemons' reports.
    public var sendsBeforeInjection: UInt64?
    /// Receive errors of ENOBUFS: the socket buffer overflowed and the kernel dropped messages.
    public var receiveOverruns: UInt64
    /// The kernel's figures, absent if the proc file could not be read.
    public var queueTotal: UInt64?
    /// Packets the kernel dropped because the queue was full (column 6).
    public var queueDropped: UInt64?
    /// Packets the kernel dropped because it could not send them to us (column 7).
    public var userDropped: UInt64?
    public var portID: UInt32?
    /// How long the packets waited in the queue before the daemon read them; absent from older
    /// daemons' reports.
    public var delay: QueueDelayReport?

    public init(number: UInt16, failClosed: Bool? = nil, role: String? = nil, packets: UInt64, verdictMessages: UInt64,
                verdictSends: UInt64? = nil, verdictSendFailures: UInt64? = nil, sendsBeforeInjection: UInt64? = nil,
                receiveOverruns: UInt64, queueTotal: UInt64? = nil, queueDropped: UInt64? = nil, userDropped: UInt64? = nil,
                portID: UInt32? = nil, delay: QueueDelayReport? = nil) {
        self.delay = delay
        self.number = number
        self.role = role
        self.failClosed = failClosed
        self.packets = packets
        self.verdictMessages = verdictMessages
        self.verdictSends = verdictSends
        self.verdictSendFailures = verdictSendFailures
        self.sendsBeforeInjection = sendsBeforeInjection
        self.receiveOverruns = receiveOverruns
        self.queueTotal = queueTotal
        self.queueDropped = queueDropped
        self.userDropped = userDropped
        self.portID = portID
    }
}

/// How long a queue's packets waited between the kernel's stamp (their arrival at this host)
/// and the daemon's receive; counts since the daemon started. Packets without a stamp are not
/// counted: the kernel stamps received packets only while some socket asked for timestamps
/// (spliced holds one open), and the packets this host sends (the proxy's) carry none.
public struct QueueDelayReport: Codable, Sendable, Equatable {
    /// Packets timed.
    public var samples: UInt64
    public var totalMicroseconds: UInt64
    public var maxMicroseconds: UInt64
    /// Upper bounds of `buckets` in microseconds; `buckets` has one more, the open one.
    public var boundsMicroseconds: [UInt64]
    public var buckets: [UInt64]
    /// Stamps of another clock (ahead of the receive, or older than an hour): not counted.
    public var unusable: UInt64

    public init(samples: UInt64, totalMicroseconds: UInt64, maxMicroseconds: UInt64, boundsMicroseconds: [UInt64],
                buckets: [UInt64], unusable: UInt64) {
        self.samples = samples
        self.totalMicroseconds = totalMicroseconds
        self.maxMicroseconds = maxMicroseconds
        self.boundsMicroseconds = boundsMicroseconds
        self.buckets = buckets
        self.unusable = unusable
    }
}

/// The resilient mode's counters as the engine keeps them, and the proxy taking new flows now
/// (in JSON, one object: the counters' keys beside `activeProxy`).
public struct ResilientReport: Codable, Sendable, Equatable {
    public var counters: ResilientCounters
    public var activeProxy: Int?
    public init(counters: ResilientCounters, activeProxy: Int?) {
        self.counters = counters
        self.activeProxy = activeProxy
    }
    enum CodingKeys: String, CodingKey { case activeProxy }
    public init(from decoder: any Decoder) throws {
        counters = try ResilientCounters(from: decoder)
        activeProxy = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(Int.self, forKey: .activeProxy)
    }
    public func encode(to encoder: any Encoder) throws {
        try counters.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(activeProxy, forKey: .activeProxy)
    }
}

/// The flow table now (entries by state and mode) and what happened to it (in JSON, one
/// object: the events' keys beside the others).
public struct FlowCounts: Codable, Sendable, Equatable {
    public var total: Int
    public var capacity: Int
    public var byState: [String: Int]
    public var byMode: [String: Int]
    public var events: FlowEventCounters
    public init(total: Int, capacity: Int, byState: [String: Int], byMode: [String: Int], events: FlowEventCounters) {
        self.total = total
        self.capacity = capacity
        self.byState = byState
        self.byMode = byMode
        self.events = events
    }
    enum CodingKeys: String, CodingKey { case total, capacity, byState, byMode }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        total = try c.decode(Int.self, forKey: .total)
        capacity = try c.decode(Int.self, forKey: .capacity)
        byState = try c.decode([String: Int].self, forKey: .byState)
        byMode = try c.decode([String: Int].self, forKey: .byMode)
        events = try FlowEventCounters(from: decoder)
    }
    public func encode(to encoder: any Encoder) throws {
        try events.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(total, forKey: .total)
        try c.encode(capacity, forKey: .capacity)
        try c.encode(byState, forKey: .byState)
        try c.encode(byMode, forKey: .byMode)
    }
}

public struct MemoryReport: Codable, Sendable, Equatable {
    /// Size of one flow entry (seed 004's small part).
    public var entryBytes: Int
    /// Size of one connection block (the large part).
    public var blockBytes: Int
    public var blocksInUse: Int
    public var blockCapacity: Int
    public var indexBytes: Int
    /// Bytes reserved for the table at its full capacity (address space).
    public var reservedBytes: Int
    /// Bytes of the table touched so far (what it can cost in resident memory).
    public var touchedBytes: Int
    /// Bytes in use now: live entries and blocks plus the index.
    public var inUseBytes: Int
    /// The daemon's resident set size and its peak, from /proc/self/status.
    public var residentBytes: Int?
    public var peakResidentBytes: Int?
    public init(entryBytes: Int, blockBytes: Int, blocksInUse: Int, blockCapacity: Int, indexBytes: Int,
                reservedBytes: Int, touchedBytes: Int, inUseBytes: Int, residentBytes: Int?, peakResidentBytes: Int?) {
        self.entryBytes = entryBytes
        self.blockBytes = blockBytes
        self.blocksInUse = blocksInUse
        self.blockCapacity = blockCapacity
        self.indexBytes = indexBytes
        self.reservedBytes = reservedBytes
        self.touchedBytes = touchedBytes
        self.inUseBytes = inUseBytes
        self.residentBytes = residentBytes
        self.peakResidentBytes = peakResidentBytes
    }
}

public struct ProxyReport: Codable, Sendable, Equatable {
    public var id: Int
    public var name: String
    public var pid: Int32
    public var listenPort: UInt16?
    public var registeredSecondsAgo: Double
    public var lastHeartbeatSecondsAgo: Double
    public init(id: Int, name: String, pid: Int32, listenPort: UInt16?, registeredSecondsAgo: Double,
                lastHeartbeatSecondsAgo: Double) {
        self.id = id
        self.name = name
        self.pid = pid
        self.listenPort = listenPort
        self.registeredSecondsAgo = registeredSecondsAgo
        self.lastHeartbeatSecondsAgo = lastHeartbeatSecondsAgo
    }
}

/// One flow, like a line of `conntrack -L`.
public struct FlowRecord: Codable, Sendable, Equatable {
    public var family: Int
    public var src: String
    public var sport: UInt16
    public var dst: String
    public var dport: UInt16
    public var state: String
    public var mode: String
    /// Why the flow has its mode (its last change).
    public var reason: String
    public var ageSeconds: Double
    public var idleSeconds: Double
    public var bytesOrig: UInt64
    public var bytesReply: UInt64
    public var pickedUp: Bool
    public var hasBlock: Bool
    /// Resilient flows: the handshake replay's phase, and the proxy serving the flow.
    public var phase: String?
    public var proxy: Int?
    /// The proxy's decision for the flow (proxy, splice, bypass) and the rule that gave it (0:
    /// the rules' default action); absent when the proxy reported none (HAProxy).
    public var decision: String?
    public var rule: Int?
    /// The splice's progress ("pending", "spliced") and, once spliced, how: "drained" (nothing
    /// was in flight through the proxy) or "fell-back" (the senders resend what it held).
    public var splice: String?
    public var spliceOutcome: String?
    /// The ends' packets the engine saw for the flow, and of those, how many after the splice.
    public var packets: UInt64?
    public var packetsAfterSplice: UInt64?
    /// A balancer connection's join ("pending", "joined") and the far end of the connection
    /// it is joined to.
    public var join: String?
    public var joinedTo: String?
    /// A one-way join: the direction joined ("to-client", "to-server"); the proxy relays the
    /// other.
    public var joinOneWay: String?
    public init(family: Int, src: String, sport: UInt16, dst: String, dport: UInt16, state: String, mode: String,
                reason: String, ageSeconds: Double, idleSeconds: Double, bytesOrig: UInt64, bytesReply: UInt64,
                pickedUp: Bool, hasBlock: Bool, phase: String? = nil, proxy: Int? = nil, decision: String? = nil,
                rule: Int? = nil, splice: String? = nil, spliceOutcome: String? = nil, packets: UInt64? = nil,
                packetsAfterSplice: UInt64? = nil) {
        self.phase = phase
        self.proxy = proxy
        self.decision = decision
        self.rule = rule
        self.splice = splice
        self.spliceOutcome = spliceOutcome
        self.packets = packets
        self.packetsAfterSplice = packetsAfterSplice
        self.family = family
        self.src = src
        self.sport = sport
        self.dst = dst
        self.dport = dport
        self.state = state
        self.mode = mode
        self.reason = reason
        self.ageSeconds = ageSeconds
        self.idleSeconds = idleSeconds
        self.bytesOrig = bytesOrig
        self.bytesReply = bytesReply
        self.pickedUp = pickedUp
        self.hasBlock = hasBlock
    }
}

/// Line framing: each message is one line of compact JSON.
public enum ControlFraming {
    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        try encode(value as any Encodable)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from line: some Collection<UInt8>) throws -> T {
        try JSONDecoder().decode(type, from: Data(line))
    }

    /// A request: a join message alone, or a `decide` or `step-out`, is written by the fast path
    /// (JoinFastPath.swift), the same bytes as Codable's; any other through Codable.
    public static func encode(_ request: ControlRequest) throws -> [UInt8] {
        if let line = request.fastLine { return line }
        return try encode(request as any Encodable)
    }

    /// An answer: one of no more than `ok`, `answers`, `decision`, `error`, `outcome` and
    /// `join` is written by the fast path; any other through Codable.
    public static func encode(_ response: ControlResponse) throws -> [UInt8] {
        if let line = response.fastLine { return line }
        return try encode(response as any Encodable)
    }

    private static func encode(_ value: any Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var bytes = [UInt8](try encoder.encode(value))
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    /// A request: a join request, or a `decide` or `step-out`, is read by the fast path when it
    /// has the shape the fast path reads; anything else (or anything odd about it) by Codable, which names what is wrong.
    public static func decode(_ type: ControlRequest.Type, from line: some Collection<UInt8>) throws -> ControlRequest {
        let fast = line.withContiguousStorageIfAvailable { ControlRequest.fast($0) }
            ?? Array(line).withUnsafeBufferPointer { ControlRequest.fast($0) }
        if let fast { return fast }
        return try JSONDecoder().decode(type, from: Data(line))
    }

    /// An answer: read by the fast path when it has no more than `ok`, `answers`, `decision`,
    /// `error`, `outcome` and `join`; anything else by Codable.
    public static func decode(_ type: ControlResponse.Type, from line: some Collection<UInt8>) throws -> ControlResponse {
        let fast = line.withContiguousStorageIfAvailable { ControlResponse.fast($0) }
            ?? Array(line).withUnsafeBufferPointer { ControlResponse.fast($0) }
        if let fast { return fast }
        return try JSONDecoder().decode(type, from: Data(line))
    }
}
