import SpliceWire

/// What the connection block keeps for a flow in resilient mode (seed 000): the handshake
/// replay's progress, the translation between the ends' sequence spaces and the proxy's, and
/// the acknowledgement clamps.
///
/// Names: "down" is the proxy's socket facing the client (it accepted the replayed SYN),
/// "up" its socket facing the server (bound to the client's address and port). The ends see
/// the numbers of a direct connection; only the proxy's packets are translated.
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
    /// The client's ACK that completed its handshake: its TSval and window go into the ACK
    /// the engine gives the proxy's SYN-ACK.
    public var clientAckTSval: UInt32 = 0
    public var clientAckWindow: UInt16 = 0
    /// The client's packets held while the proxy's socket was not yet up (`PendingPackets`).
    public var pendingToProxy: UInt8 = 0

    // The proxy's sockets.
    public var proxyDownISN = SeqNumber(0)
    public var proxyUpISN = SeqNumber(0)
    /// Added to the down socket's sequence numbers (server space = proxy + deltaDown); taken
    /// from acknowledgement numbers and SACK edges going to it.
    public var deltaDown: UInt32 = 0
    /// Added to the up socket's sequence numbers (client space = proxy + deltaUp).
    public var deltaUp: UInt32 = 0
    /// Added to the down / up socket's TSval to put it in the server's / client's clock.
    public var tsDown: UInt32 = 0
    public var tsUp: UInt32 = 0
    public var timestamps = false

    /// Window shifts: what each sender scales by, and what its receiver expects.
    public var shiftClient: UInt8 = 0        // client's own windows (what the server expects to see)
    public var shiftServer: UInt8 = 0        // server's own windows (what the client expects)
    public var shiftProxyDown: UInt8 = 0     // the down socket's windows
    public var shiftProxyUp: UInt8 = 0       // the up socket's windows
    public var shiftClientAtProxy: UInt8 = 0 // how the down socket reads the client's windows
    public var shiftServerAtProxy: UInt8 = 0 // how the up socket reads the server's windows

    // Acknowledgement clamps (FIG. 2C): what the ends were told, what the proxy said.
    /// Highest acknowledgement given to the client (client space).
    public var ackToClient = SeqNumber(0)
    /// Highest acknowledgement given to the server (server space).
    public var ackToServer = SeqNumber(0)
    /// Highest acknowledgement the down / up socket sent (unclamped).
    public var proxyDownAck = SeqNumber(0)
    public var proxyUpAck = SeqNumber(0)
    /// Last window forwarded to the client / server (already rescaled).
    public var windowToClient: UInt16 = 0
    public var windowToServer: UInt16 = 0
    /// Next sequence number of the down socket, translated (server space), and of the up
    /// socket (client space): what an injected ACK carries.
    public var downSeqNext = SeqNumber(0)
    public var upSeqNext = SeqNumber(0)
    /// The last translated TSval / TSecr each socket sent toward its end.
    public var downTSval: UInt32 = 0
    public var downTSecr: UInt32 = 0
    public var upTSval: UInt32 = 0
    public var upTSecr: UInt32 = 0
    /// Whether `downTSval` / `upTSval` hold a TSval the end may have seen: after a failover the
    /// other end's own packets must not carry an older one (`Engine.afterFailover`).
    public var downTSvalShown = false
    public var upTSvalShown = false

    /// A FIN or RST of the proxy's that it did not announce, held since (deciseconds).
    public var holdSince: UInt32 = 0
    public var holding = false
    /// What the proxy announced it sends on purpose from the down / up socket (a FIN, a RST):
    /// that kind passes at once. Bits: `ResilientState.intentFIN`, `.intentRST`.
    public var closeIntentDown: UInt8 = 0
    public var closeIntentUp: UInt8 = 0
    public static let intentFIN: UInt8 = 1
    public static let intentRST: UInt8 = 2

    public init() {}
}
