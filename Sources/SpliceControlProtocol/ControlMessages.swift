#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The control protocol between `spliced` and its clients (`splicectl`, `splice-proxy`):
/// one JSON object per line over a Unix stream socket that only root can open.
/// Docs/control-protocol.md describes it for other implementations.
public enum ControlProtocol {
    /// Protocol version, sent in `hello` replies and checked by clients.
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
    }

    public var command: Command
    public var proxy: ProxyRegistration?
    public var close: CloseIntent?
    public var policy: PolicyConfig?

    public init(command: Command, proxy: ProxyRegistration? = nil, close: CloseIntent? = nil, policy: PolicyConfig? = nil) {
        self.command = command
        self.proxy = proxy
        self.close = close
        self.policy = policy
    }
}

/// Which flows go through the proxy (resilient mode); everything else stays in bypass.
public struct PolicyConfig: Codable, Sendable, Equatable {
    public var enabled: Bool
    /// Server ports claimed, 1-65535. An enabled policy names at least one (an empty list
    /// would claim every port: the daemon refuses it); a disabled one may have none.
    public var ports: [UInt16]
    /// Server prefixes claimed (empty: any), e.g. "10.0.0.0/8", "2001:db8::/32".
    public var servers: [String]
    /// Client prefixes claimed (empty: any).
    public var clients: [String]
    public init(enabled: Bool, ports: [UInt16] = [], servers: [String] = [], clients: [String] = []) {
        self.enabled = enabled
        self.ports = ports
        self.servers = servers
        self.clients = clients
    }

    private enum CodingKeys: String, CodingKey { case enabled, ports, servers, clients }

    /// Decoded by hand for the one check the types make badly: a port past 65535 (or not a
    /// whole number) is refused by name, not as "data corrupted ... not valid JSON". The rest
    /// (port 0, an enabled policy without ports, the prefixes) is SplicePolicy(validating:).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        enabled = try c.decode(Bool.self, forKey: .enabled)
        ports = try c.decode([Double].self, forKey: .ports).map { n in
            guard n >= 0, n <= 65535, n == n.rounded(.towardZero) else {
                let shown = n == n.rounded(.towardZero) && abs(n) < 1e15 ? String(Int64(n)) : String(n)
                throw DecodingError.dataCorruptedError(forKey: .ports, in: c,
                                                       debugDescription: "port \(shown) is out of range (ports are 1-65535)")
            }
            return UInt16(n)
        }
        servers = try c.decode([String].self, forKey: .servers)
        clients = try c.decode([String].self, forKey: .clients)
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

/// What a proxy says about itself when it registers.
public struct ProxyRegistration: Codable, Sendable, Equatable {
    public var name: String
    public var pid: Int32
    /// The local port its transparent listener accepts on.
    public var listenPort: UInt16?
    public init(name: String, pid: Int32, listenPort: UInt16? = nil) {
        self.name = name
        self.pid = pid
        self.listenPort = listenPort
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

    public init(ok: Bool, error: String? = nil, status: StatusReport? = nil, flows: [FlowRecord]? = nil,
                proxyID: Int? = nil, policy: PolicyConfig? = nil) {
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
    public var packets: PacketCounts
    public var verdicts: VerdictCounts
    public var flows: FlowCounts
    public var memory: MemoryReport
    public var proxies: [ProxyReport]
    public var resilient: ResilientReport?
    public var policy: PolicyConfig?
    /// The control socket's connections and the timer thread (absent from older daemons' reports).
    public var control: ControlReport?

    public init(version: String, pid: Int32, uptimeSeconds: Double, queues: [QueueReport], packets: PacketCounts,
                verdicts: VerdictCounts, flows: FlowCounts, memory: MemoryReport, proxies: [ProxyReport],
                resilient: ResilientReport? = nil, policy: PolicyConfig? = nil, control: ControlReport? = nil) {
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
    /// Receive errors of ENOBUFS: the socket buffer overflowed and the kernel dropped messages.
    public var receiveOverruns: UInt64
    /// The kernel's figures, absent if the proc file could not be read.
    public var queueTotal: UInt64?
    /// Packets the kernel dropped because the queue was full (column 6).
    public var queueDropped: UInt64?
    /// Packets the kernel dropped because it could not send them to us (column 7).
    public var userDropped: UInt64?
    public var portID: UInt32?

    public init(number: UInt16, failClosed: Bool? = nil, role: String? = nil, packets: UInt64, verdictMessages: UInt64,
                receiveOverruns: UInt64, queueTotal: UInt64? = nil, queueDropped: UInt64? = nil, userDropped: UInt64? = nil,
                portID: UInt32? = nil) {
        self.number = number
        self.role = role
        self.failClosed = failClosed
        self.packets = packets
        self.verdictMessages = verdictMessages
        self.receiveOverruns = receiveOverruns
        self.queueTotal = queueTotal
        self.queueDropped = queueDropped
        self.userDropped = userDropped
        self.portID = portID
    }
}

public struct PacketCounts: Codable, Sendable, Equatable {
    public var total: UInt64
    public var bytes: UInt64
    public var tcp: UInt64
    public var notTCP: UInt64
    public var fragments: UInt64
    public var malformed: UInt64
    public var untracked: UInt64
    public init(total: UInt64, bytes: UInt64, tcp: UInt64, notTCP: UInt64, fragments: UInt64, malformed: UInt64,
                untracked: UInt64) {
        self.total = total
        self.bytes = bytes
        self.tcp = tcp
        self.notTCP = notTCP
        self.fragments = fragments
        self.malformed = malformed
        self.untracked = untracked
    }
}

public struct VerdictCounts: Codable, Sendable, Equatable {
    public var accept: UInt64
    public var acceptModified: UInt64
    public var drop: UInt64
    /// Packets handed to the proxy (NF_REPEAT with the proxy mark).
    public var toProxy: UInt64?
    public init(accept: UInt64, acceptModified: UInt64, drop: UInt64, toProxy: UInt64? = nil) {
        self.accept = accept
        self.acceptModified = acceptModified
        self.drop = drop
        self.toProxy = toProxy
    }
}

/// The resilient mode's counters.
public struct ResilientReport: Codable, Sendable, Equatable {
    public var flows: UInt64
    public var handshakeReplays: UInt64
    public var fromProxyTranslated: UInt64
    public var proxyPacketsDropped: UInt64
    public var acksClamped: UInt64
    public var acksInjected: UInt64
    public var acksSuppressed: UInt64
    public var finRstHeld: UInt64
    public var finRstReleased: UInt64
    public var finRstDiscarded: UInt64
    public var failovers: UInt64
    public var injectionFailures: UInt64
    public var activeProxy: Int?
    /// Unannounced FIN/RST of the proxy that found no room to be held (dropped).
    public var finRstHoldFailed: UInt64?
    /// Clients whose handshake ACK arrived, so that their handshake was replayed to the proxy
    /// (a spoofed SYN never gets there).
    public var clientsValidated: UInt64?
    /// The client's packets held until the proxy's socket was up, and those dropped for lack of
    /// room or time (the client sends them again).
    public var pendingHeld: UInt64?
    public var pendingDropped: UInt64?
    /// Ends' packets after a failover whose TSval was raised to one the receiver had already
    /// seen from the proxy (else dropped by the receiver's PAWS check).
    public var timestampsRaised: UInt64?
    public init(flows: UInt64, handshakeReplays: UInt64, fromProxyTranslated: UInt64, proxyPacketsDropped: UInt64,
                acksClamped: UInt64, acksInjected: UInt64, acksSuppressed: UInt64, finRstHeld: UInt64,
                finRstReleased: UInt64, finRstDiscarded: UInt64, failovers: UInt64, injectionFailures: UInt64,
                activeProxy: Int?, finRstHoldFailed: UInt64? = nil, clientsValidated: UInt64? = nil,
                pendingHeld: UInt64? = nil, pendingDropped: UInt64? = nil, timestampsRaised: UInt64? = nil) {
        self.timestampsRaised = timestampsRaised
        self.finRstHoldFailed = finRstHoldFailed
        self.clientsValidated = clientsValidated
        self.pendingHeld = pendingHeld
        self.pendingDropped = pendingDropped
        self.flows = flows
        self.handshakeReplays = handshakeReplays
        self.fromProxyTranslated = fromProxyTranslated
        self.proxyPacketsDropped = proxyPacketsDropped
        self.acksClamped = acksClamped
        self.acksInjected = acksInjected
        self.acksSuppressed = acksSuppressed
        self.finRstHeld = finRstHeld
        self.finRstReleased = finRstReleased
        self.finRstDiscarded = finRstDiscarded
        self.failovers = failovers
        self.injectionFailures = injectionFailures
        self.activeProxy = activeProxy
    }
}

public struct FlowCounts: Codable, Sendable, Equatable {
    public var total: Int
    public var capacity: Int
    public var byState: [String: Int]
    public var byMode: [String: Int]
    public var created: UInt64
    public var pickedUp: UInt64
    public var expired: UInt64
    public var reopened: UInt64
    /// New flows let through untracked because the table was full.
    public var tableFull: UInt64
    /// Flows that went on without a connection block because the pool was empty.
    public var blocksExhausted: UInt64
    /// Unconfirmed (or closed) flows removed to make room when the table was full (early drop).
    public var earlyDrops: UInt64?
    public init(total: Int, capacity: Int, byState: [String: Int], byMode: [String: Int], created: UInt64,
                pickedUp: UInt64, expired: UInt64, reopened: UInt64, tableFull: UInt64, blocksExhausted: UInt64,
                earlyDrops: UInt64? = nil) {
        self.earlyDrops = earlyDrops
        self.total = total
        self.capacity = capacity
        self.byState = byState
        self.byMode = byMode
        self.created = created
        self.pickedUp = pickedUp
        self.expired = expired
        self.reopened = reopened
        self.tableFull = tableFull
        self.blocksExhausted = blocksExhausted
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
    public init(family: Int, src: String, sport: UInt16, dst: String, dport: UInt16, state: String, mode: String,
                reason: String, ageSeconds: Double, idleSeconds: Double, bytesOrig: UInt64, bytesReply: UInt64,
                pickedUp: Bool, hasBlock: Bool, phase: String? = nil, proxy: Int? = nil) {
        self.phase = phase
        self.proxy = proxy
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
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var bytes = [UInt8](try encoder.encode(value))
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    public static func decode<T: Decodable>(_ type: T.Type, from line: some Collection<UInt8>) throws -> T {
        try JSONDecoder().decode(type, from: Data(line))
    }
}
