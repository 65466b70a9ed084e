/// The engine's counters, grouped by the section of `splicectl status` they feed. The engine
/// counts into these types and the status report carries them as they are: a new counter is
/// one field here (and the line that counts it); its JSON key is its name. No I/O, no
/// dependencies: the engine and the control protocol both use it.

/// Every packet the engine was given, by what it was.
public struct PacketCounters: Codable, Sendable, Equatable {
    public var total: UInt64 = 0
    public var bytes: UInt64 = 0
    public var tcp: UInt64 = 0
    public var notTCP: UInt64 = 0
    public var fragments: UInt64 = 0
    public var malformed: UInt64 = 0
    /// Packets of no known flow let through untracked (e.g. a stray RST).
    public var untracked: UInt64 = 0
    public init() {}
}

/// The verdicts returned to the kernel.
public struct VerdictCounters: Codable, Sendable, Equatable {
    public var accept: UInt64 = 0
    public var acceptModified: UInt64 = 0
    public var drop: UInt64 = 0
    /// Packets handed to the proxy (NF_REPEAT with the proxy mark).
    public var toProxy: UInt64 = 0
    public init() {}
}

/// What happened to the flow table's entries.
public struct FlowEventCounters: Codable, Sendable, Equatable {
    public var created: UInt64 = 0
    /// Flows first seen mid-stream (no SYN).
    public var pickedUp: UInt64 = 0
    public var expired: UInt64 = 0
    /// A closed flow's tuple used again by a new SYN.
    public var reopened: UInt64 = 0
    /// New flows that found the table full and were let through untracked.
    public var tableFull: UInt64 = 0
    /// Flows not yet confirmed (a handshake not completed, a pickup seen one way only) or
    /// closed, removed to make room for a new one when the table was full (conntrack's early
    /// drop): a SYN or ACK flood cannot lock real clients out of the table.
    public var earlyDrops: UInt64 = 0
    /// Flows that could not get a connection block and went on with their entry alone.
    public var blocksExhausted: UInt64 = 0
    /// Flows a policy claimed whose SYN was signed (TCP-MD5 or TCP-AO), left alone.
    public var signed: UInt64 = 0
    public init() {}
}

/// The resilient mode (seed 000).
public struct ResilientCounters: Codable, Sendable, Equatable {
    public var flows: UInt64 = 0
    public var handshakeReplays: UInt64 = 0
    public var fromProxyTranslated: UInt64 = 0
    /// Packets of the proxy's sockets dropped: no resilient flow (unknown, bypassed, closed).
    public var proxyPacketsDropped: UInt64 = 0
    /// The proxy's acknowledgements held back to what the receiver had acknowledged.
    public var acksClamped: UInt64 = 0
    /// Acknowledgements released to a sender when its receiver caught up (injected).
    public var acksInjected: UInt64 = 0
    /// Of those, the ones that echoed a congestion mark (ECE) as the proxy's socket did.
    public var acksEchoingCE: UInt64 = 0
    /// The proxy's pure ACKs dropped because they told the end nothing new.
    public var acksSuppressed: UInt64 = 0
    /// SACK options taken off the proxy's clamped acknowledgements (they would have shown the
    /// end a hole where the proxy holds its bytes).
    public var sackTakenOffClamped: UInt64 = 0
    /// Flows whose ends set up ECN: the proxy's sockets were given the same setup.
    public var ecnFlows: UInt64 = 0
    /// The ends' segments with an urgent mark (URG) given to the proxy's sockets without it:
    /// the urgent byte in line, as an ordinary byte of the stream.
    public var urgentToProxy: UInt64 = 0
    /// The proxy's packets given their end's DSCP in place of the proxy socket's own marking.
    public var dscpCopied: UInt64 = 0
    public var finRstHeld: UInt64 = 0
    public var finRstReleased: UInt64 = 0
    public var finRstDiscarded: UInt64 = 0
    /// Unannounced FIN/RST that found no room to be held: dropped (the proxy's socket sends
    /// its FIN again; a lost RST is answered again by the next packet).
    public var finRstHoldFailed: UInt64 = 0
    /// Clients whose ACK proved them before their handshake was replayed to the proxy (a
    /// spoofed SYN never gets there).
    public var clientsValidated: UInt64 = 0
    /// Clients' SYNs that asked for TCP Fast Open or carried data: passed to the server
    /// without the option and the data (the client sends the data after the handshake).
    public var fastOpenRemoved: UInt64 = 0
    /// The client's packets held while the proxy's socket was not up yet, given to it after;
    /// and those that found no room (dropped: the client sends them again).
    public var pendingHeld: UInt64 = 0
    public var pendingDropped: UInt64 = 0
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" about a proxy socket's segment,
    /// given to that socket (path MTU discovery) instead of going on to the end it speaks as.
    public var tooBigToProxy: UInt64 = 0
    /// Copies of intercepted SYNs and SYN-ACKs from the rules' handshake log (counted by the
    /// log's reader, `StatusReport.synLog`) whose MSS was lower than its end offered (a rule of
    /// the router clamps it): the MSS the proxy's socket is given (Resilient/ClampedMSS.swift).
    public var mssLowered: UInt64 = 0
    /// Flows the router source-NATs (MASQUERADE, SNAT toward the servers), and the ends'
    /// packets given to their proxy sockets by injection, untracked (Resilient/SourceNAT.swift).
    public var sourceNATFlows: UInt64 = 0
    public var injectedToProxy: UInt64 = 0
    /// Flows whose proxy socket answered the replayed handshake without the timestamps both
    /// ends use (the router's `net.ipv4.tcp_timestamps` is 0): moved to bypass before the proxy
    /// held any of their bytes.
    public var proxyWithoutTimestamps: UInt64 = 0
    /// Flows moved to bypass because their proxy died.
    public var failovers: UInt64 = 0
    /// Flows whose proxy did not answer the replayed handshake in time (`Engine.replayPatience`):
    /// moved to bypass before it held any of their bytes.
    public var replaysAbandoned: UInt64 = 0
    /// Sockets of a proxy that no flow could take a packet from (a dead proxy's orphans, a
    /// socket still holding a tuple a new connection reuses): reset, so that they let go.
    public var staleSocketsReset: UInt64 = 0
    /// Ends' packets after a failover whose TSval was raised to one the receiver had already
    /// seen from the proxy: each would otherwise have been dropped by PAWS.
    public var timestampsRaised: UInt64 = 0
    /// Packets the engine built that could not be sent (the daemon adds its injector's).
    public var injectionFailures: UInt64 = 0
    public init() {}
}

/// Splices (seed 003): the proxy's decisions and how its steps out ended.
public struct SpliceCounters: Codable, Sendable, Equatable {
    /// Decisions the proxy reported, by action (its rule's or the default).
    public var decidedProxy: UInt64 = 0
    public var decidedSplice: UInt64 = 0
    public var decidedBypass: UInt64 = 0
    /// Flows the engine spliced from their SYN: their rules decided `splice` or `bypass` from
    /// addresses and port alone, so the proxy was never engaged (not counted above).
    public var decidedAtConnection: UInt64 = 0
    /// Flows whose first bytes the engine read itself for their rules (`spliced
    /// --request-reader engine`, the default); of those, the ones it spliced or bypassed from
    /// the request (the proxy never engaged, not counted above), the ones it handed to the
    /// proxy (the rule `proxy`, a rule on the response, a silent client), and the ones whose
    /// first bytes came after the rules' timeout (the default action).
    public var requestsRead: UInt64 = 0
    public var decidedAtRequest: UInt64 = 0
    public var requestsToProxy: UInt64 = 0
    public var requestsLate: UInt64 = 0
    /// Decisions refused: the flow unknown, or no longer resilient (its proxy's failover, a
    /// reset), or not yet established.
    public var refused: UInt64 = 0
    /// Splices done with nothing in flight through the proxy (every byte the ends sent was
    /// acknowledged by the other end): no end resends anything.
    public var drained: UInt64 = 0
    /// Splices done past the proxy's drain bound with bytes still in flight: the senders send
    /// those again (the clamp never acknowledged them).
    public var fellBack: UInt64 = 0
    /// Splices that never happened: the proxy died while they were pending (the flow went to
    /// bypass), or it cancelled them (the connection ended first).
    public var failed: UInt64 = 0
    public var cancelled: UInt64 = 0
    /// The proxy asked to step out before the engine saw the flow drained: asked to wait.
    public var notYetDrained: UInt64 = 0
    /// Step-outs and joins held back because the queues held packets the engine had not seen
    /// yet (one of the flow's could be among them), until it had seen them; of those, the ones
    /// answered at the bound (20 ms) with the readers still behind.
    public var deferredForQueue: UInt64 = 0
    public var heldPastBound: UInt64 = 0
    /// Window updates sent to the ends when a splice (or a failed one) reopened their windows.
    public var windowUpdates: UInt64 = 0
    /// A spliced flow's packets that still reached the engine's queue: the first after the
    /// splice (it sets the flow's conntrack mark), then SYN and RST, and any FIN the rules do
    /// not log.
    public var packetsAfterSplice: UInt64 = 0
    /// A spliced flow's FINs seen from the rules' log (NFLOG, `--fin-log-group`): they went on
    /// unqueued, the table followed the flow's end from their copies. Copies that matched no
    /// spliced flow in the table (ignored), and copies the log socket lost (`overruns`,
    /// counted by the reader).
    public var finsLogged: UInt64 = 0
    public var logsIgnored: UInt64 = 0
    public init() {}
}

/// The layer-7 balancer's joins (seed 003 claim 10; Docs/balancer.md).
public struct BalancerCounters: Codable, Sendable, Equatable {
    /// Joins the proxy announced (its windows shut while it drains), and joins done.
    public var prepared: UInt64 = 0
    public var joined: UInt64 = 0
    /// Asked before the engine saw both connections drained: asked to wait.
    public var notYetDrained: UInt64 = 0
    /// Refused (a connection unknown, its handshake unseen, a FIN already sent, or still
    /// not drained at the proxy's bound), and cancelled by the proxy.
    public var refused: UInt64 = 0
    public var cancelled: UInt64 = 0
    /// Packets of joined connections translated onto their peer.
    public var translated: UInt64 = 0
    /// Packets the proxy's sockets sent after their join (dropped: they close silently).
    public var proxyPacketsDropped: UInt64 = 0
    /// Window updates sent to the ends when a join reopened their windows, and those left
    /// out (the end saw no zero window, and the update would have told it nothing new).
    public var windowUpdates: UInt64 = 0
    public var windowUpdatesSkipped: UInt64 = 0
    /// SYNs of the proxy's sockets on the tuple of a flow still joined (its port came around
    /// while the flow lives): dropped, and the socket reset at once, so that the proxy
    /// connects from another port instead of waiting out its connect.
    public var portsBusy: UInt64 = 0
    /// The balancer's SYNs to backends sent without the ECN request the router's own setting
    /// (tcp_ecn=1) put on them: its backend connections never set ECN up.
    public var ecnNotAsked: UInt64 = 0
    /// A joined client's packets toward its backend (whose connection never set ECN up) that
    /// said ECN-capable: sent on marked not ECN-capable (RFC 3168 6.1.1.1), so that a router
    /// beyond drops rather than marks them. Those that came marked CE (congestion before the
    /// router, which the backend could never echo) are dropped instead, as RFC 6040 has a
    /// tunnel's egress do with a mark it cannot pass on: the client sees the loss and slows
    /// down.
    public var ectCleared: UInt64 = 0
    public var ceDropped: UInt64 = 0
    /// Joined flows reset because their backend was taken out (`reset-backend`: its health
    /// check failed, or the operator said so).
    public var resetForBackend: UInt64 = 0
    /// Far ends of such flows still sending (a challenge ACK: the first reset missed their
    /// receive point), reset again at the number they acknowledged.
    public var resetAgain: UInt64 = 0
    /// Joins for one response (keep-alive re-routing): returned to the proxy at the
    /// response's end; packets kept from the other end meanwhile (the client's next request,
    /// the backend's bytes past the response); backend FINs at a response's end kept for the
    /// proxy's socket (FIN processing).
    public var returned: UInt64 = 0
    public var heldBack: UInt64 = 0
    /// Of those, the client's packets given to the proxy's socket at the return.
    public var heldReleased: UInt64 = 0
    /// Joins for one response whose proxy died before they returned: joined for the
    /// connection's life instead (the sockets that were to take them back died with it).
    public var returnsGivenUp: UInt64 = 0
    public var finsProcessed: UInt64 = 0
    /// Joins for one chunked response, whose end the engine finds from its framing; those
    /// whose end it found (the proxy told where it is); the backend's segments dropped for
    /// lying past one not yet seen (the framing is followed in order: sent again); and those
    /// whose framing was lost (not chunked after all, or the backend closed before the last
    /// chunk): joined for the connection's life.
    public var chunkedJoins: UInt64 = 0
    public var chunkedEnds: UInt64 = 0
    public var chunkGaps: UInt64 = 0
    public var chunkedLost: UInt64 = 0
    /// One-way joins (one direction joined, the other relayed by the proxy), and those whose
    /// relayed direction ended and that became joins both ways.
    public var oneWayJoined: UInt64 = 0
    public var oneWayCompleted: UInt64 = 0
    /// One-way: far ends' packets given to the proxy's sockets (the relayed direction's data,
    /// the acknowledgements of it), the proxy's packets rewritten into the joined flow, and
    /// ACKs made to carry an acknowledgement to the other side.
    public var oneWayToProxy: UInt64 = 0
    public var oneWayFromProxy: UInt64 = 0
    public var oneWayAcks: UInt64 = 0
    /// Connections the proxy relays to their end, let go of when it said so (`relayed`):
    /// their packets no longer come through the queue, their entries are closed.
    public var relayedLetGo: UInt64 = 0
    public init() {}
}

/// All of them, as the engine keeps them.
public struct EngineCounters: Sendable, Equatable {
    public var packets = PacketCounters()
    public var verdicts = VerdictCounters()
    public var flows = FlowEventCounters()
    public var resilient = ResilientCounters()
    public var splices = SpliceCounters()
    public var balancer = BalancerCounters()
    public init() {}
}
