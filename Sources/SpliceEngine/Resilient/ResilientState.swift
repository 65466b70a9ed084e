import SpliceWire

/// What the connection block keeps for a flow in resilient mode (seed 000): the handshake
/// replay's progress, the translation between the ends' sequence spaces and the proxy's, and
/// the acknowledgement clamps.
///
/// Names: "down" is the proxy's socket facing the client (it accepted the replayed SYN; it
/// speaks in the `.reply` direction), "up" its socket facing the server (bound to the client's
/// address and port; `.original`). The ends see the numbers of a direct connection; only the
/// proxy's packets are translated.
public struct ResilientState: Sendable {
    public enum Phase: UInt8, Sendable, Comparable, CustomStringConvertible {
        public static func < (a: Phase, b: Phase) -> Bool { a.rawValue < b.rawValue }
        /// Not a resilient flow.
        case none = 0
        /// The client's SYN went to the server; waiting for its SYN-ACK.
        case clientSyn
        /// The server's SYN-ACK went to the client untouched; waiting for the client's ACK,
        /// the proof that the client exists (a spoofed SYN never gets this far, so a flood
        /// never reaches the proxy: SYNPROXY's rule).
        case serverSynAck
        /// The client's ACK came, and the flow's rules need its first bytes, which the engine
        /// reads itself (`Engine.requestDecisions`, Splice/RequestDecision.swift): the ACK and
        /// the bytes are held, the server waits in SYN-RECEIVED, until the rules decide:
        /// `splice` or `bypass` let the held packets go on to the server and the flow is
        /// spliced without the proxy; `proxy` (or a rule on the response) replays the handshake
        /// to the proxy as at `synToProxy`, with the bytes held for its socket.
        case awaitingRequest
        /// The client's ACK was turned into a SYN to the proxy (client's ISN, the options both
        /// ends negotiated); the client's data is held until the proxy's socket is up.
        case synToProxy
        /// The proxy's SYN-ACK was answered by the engine with the client's ACK: the socket
        /// facing the client is established.
        case downEstablished
        /// The proxy's own SYN toward the server was answered with the server's ISN.
        case upstreamAnswered
        /// The proxy's ACK went on to the server as the client's: both halves established.
        case established

        public var description: String {
            switch self {
            case .none: return "none"
            case .clientSyn: return "client-syn"
            case .serverSynAck: return "server-synack"
            case .awaitingRequest: return "awaiting-request"
            case .synToProxy: return "syn-to-proxy"
            case .downEstablished: return "down-established"
            case .upstreamAnswered: return "upstream-answered"
            case .established: return "established"
            }
        }
    }

    public var phase: Phase = .none
    /// The proxy serving the flow (its registration id).
    public var proxyID: UInt16 = 0

    // What the ends negotiated (from the client's SYN and the server's SYN-ACK).
    public var clientSynTSval: UInt32 = 0
    public var clientSynWindow: UInt16 = 0
    public var serverSynAckTSval: UInt32 = 0
    public var serverSynAckWindow: UInt16 = 0
    /// Negotiated by both ends (the client offered it and the server answered with it).
    public var windowScaling = false
    public var sack = false
    /// Both ends set up ECN (RFC 3168 6.1.1: the client's SYN with ECE and CWR, the server's
    /// SYN-ACK with ECE alone): the proxy's sockets are set up with it too, so that a
    /// congestion mark on either leg is echoed to the end that sent the packet.
    public var ecn = false
    /// The client's ACK that completed its handshake: its TSval and window go into the ACK
    /// the engine gives the proxy's SYN-ACK.
    public var clientAckTSval: UInt32 = 0
    public var clientAckWindow: UInt16 = 0
    /// The client's packets held while the proxy's socket was not yet up (`PendingPackets`).
    public var pendingToProxy: UInt8 = 0
    /// When the current phase began (deciseconds): for `awaitingRequest`, when the client's
    /// handshake ACK came (its first bytes are awaited from then on); for `synToProxy`, when the
    /// handshake was first replayed to the proxy.
    public var phaseSince: UInt32 = 0
    /// The flow's rules need the client's first bytes and the engine reads them itself: its
    /// handshake ACK starts `awaitingRequest` instead of the replay.
    public var readsRequest = false

    /// The proxy's two sockets, each under the direction it speaks in: `.reply` is the socket
    /// facing the client ("down": it speaks as the server), `.original` the one facing the
    /// server ("up": bound to the client's address and port, it speaks as the client).
    public var proxy = PerDirection(repeating: ProxySide())
    /// Each end's own window scale (0 without scaling), under the direction it sends in.
    public var endShift = PerDirection<UInt8>(repeating: 0)
    /// Both ends negotiated timestamps (and so the proxy's sockets carry them too).
    public var timestamps = false
    /// The router source-NATs the flow (its server's packets came through the rules' FORWARD
    /// queue, their address restored): its packets reach the proxy by injection
    /// (Resilient/SourceNAT.swift).
    public var behindSourceNAT = false

    /// The proxy's decision for the flow (its splice rules, seed 003) and the splice's progress.
    public var decision = ProxyDecision.none
    /// The rule that decided (its id), 0 for the default action.
    public var ruleID: UInt16 = 0
    public var splice = SpliceStage.none
    /// The splice was done drained (nothing in flight through the proxy), not by fallback.
    public var spliceDrained = false
    /// The ends' packets the engine had seen when the flow was spliced.
    public var packetsAtSplice: UInt32 = 0

    /// A FIN or RST of the proxy's that it did not announce, held since (deciseconds).
    public var holdSince: UInt32 = 0
    public var holding = false
    public static let intentFIN: UInt8 = 1
    public static let intentRST: UInt8 = 2

    public init() {}
}

/// What the proxy decided for a flow (the action of the rule that matched, or its default).
public enum ProxyDecision: UInt8, Sendable, CustomStringConvertible {
    /// Nothing reported (a proxy without rules, such as HAProxy, or not decided yet).
    case none = 0
    case proxy, splice, bypass
    public var description: String {
        switch self {
        case .none: return "none"
        case .proxy: return "proxy"
        case .splice: return "splice"
        case .bypass: return "bypass"
        }
    }
}

/// A splice's progress (seed 003, FIG. 14).
public enum SpliceStage: UInt8, Sendable, CustomStringConvertible {
    case none = 0
    /// The proxy asked to step out: it writes out what it holds while the engine advertises a
    /// zero window to both senders (nothing new comes in), until every byte is acknowledged.
    case pending
    /// The proxy stepped out: the flow's packets pass untouched, and skip the queue.
    case spliced
    public var description: String {
        switch self {
        case .none: return "none"
        case .pending: return "pending"
        case .spliced: return "spliced"
        }
    }
}

/// One of the proxy's sockets, as the engine translates it (Linux's seqadj record,
/// nf_conntrack_seqadj.c, plus what the clamp and the injected ACKs need). "Its end" is the end
/// it speaks as, "the receiver" the end it speaks to.
public struct ProxySide: Sendable {
    /// Its initial sequence number.
    public var isn = SeqNumber(0)
    /// Its sequence numbers in its end's space (`+ seqDelta`); acknowledgement numbers and
    /// SACK edges going to it come back with `- seqDelta`.
    public var seqDelta = SeqDelta.zero
    /// Its TSvals in its end's clock; TSecr going to it come back.
    public var tsDelta = TimestampDelta.zero
    /// Its own window scale, and the scale it reads the receiver's windows with.
    public var shift: UInt8 = 0
    public var receiverShiftAtProxy: UInt8 = 0
    /// Highest acknowledgement given to the receiver (clamped), and the highest it sent.
    public var ackGiven = SeqNumber(0)
    public var ownAck = SeqNumber(0)
    /// Last window forwarded to the receiver (already rescaled).
    public var window: UInt16 = 0
    /// Its next sequence number, translated: what an injected ACK carries.
    public var seqNext = SeqNumber(0)
    /// The last translated TSval / TSecr it sent toward the receiver, and whether the
    /// receiver may have seen that TSval (after a failover the other end's own packets must
    /// not carry an older one: `Engine.afterFailover`).
    public var tsval: UInt32 = 0
    public var tsecr: UInt32 = 0
    public var tsvalShown = false
    /// What the proxy announced it sends on purpose from this socket (a FIN, a RST): that kind
    /// passes at once. Bits: `ResilientState.intentFIN`, `.intentRST`.
    public var closeIntent: UInt8 = 0
    /// The receiver sent a segment that starts before what this socket has (a keepalive or
    /// zero-window probe at SND.UNA - 1, a retransmission of bytes the proxy holds): the
    /// socket's next ACK answers it and passes even if it tells nothing new
    /// (`Engine.translateTowardProxy`, `Engine.translateFromProxy`).
    public var answerOwed = false
    /// Its own last window (rescaled to its end's scale), and whether the window forwarded
    /// was closed because the end it speaks for has a zero window (`Engine.translateFromProxy`):
    /// the sender must not time out on the data the proxy holds (see there).
    public var ownWindow: UInt16 = 0
    public var closedForEnd = false
    /// The DSCP of its end's last packet (RFC 2474): its packets in that end's name carry it,
    /// as that end's own would (`Engine.rewriteFromProxy`, `Engine.releaseAck`).
    public var dscp: UInt8 = 0
    /// It is echoing a congestion mark (RFC 3168: ECE on its last packet after the handshake,
    /// as a receiver does from a CE until the sender's CWR): the ACKs the engine releases in its
    /// name echo it too (`Engine.releaseAck`), or a sender whose receiver's ACKs are all
    /// released by the engine would never hear of the mark.
    public var echoingCE = false

    public init() {}
}
