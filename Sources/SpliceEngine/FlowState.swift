/// TCP state of a flow as a middlebox sees it, after Linux conntrack's states.
public enum FlowState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// A free slot (never seen by users).
    case free = 0
    /// The initiator's SYN was seen.
    case synSent
    /// The responder's SYN-ACK was seen.
    case synReceived
    /// The handshake completed, or the flow was picked up mid-stream.
    case established
    /// One side sent a FIN.
    case finWait
    /// One side's FIN was acknowledged; the other side has not closed yet.
    case closeWait
    /// Both sides sent a FIN; the last is not acknowledged yet.
    case lastAck
    /// Both FINs acknowledged: the entry is kept for 2*MSL, without its connection block.
    case timeWait
    /// Reset: kept briefly, without its connection block.
    case close

    public var description: String {
        switch self {
        case .free: return "FREE"
        case .synSent: return "SYN_SENT"
        case .synReceived: return "SYN_RECV"
        case .established: return "ESTABLISHED"
        case .finWait: return "FIN_WAIT"
        case .closeWait: return "CLOSE_WAIT"
        case .lastAck: return "LAST_ACK"
        case .timeWait: return "TIME_WAIT"
        case .close: return "CLOSE"
        }
    }

    /// States past which the connection block is no longer needed (seed 004).
    @inlinable public var isClosed: Bool { self == .timeWait || self == .close }
}

/// What the engine does with a flow's packets (../shared/DESIGN.md, "Modes of a flow").
public enum FlowMode: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Watched and accepted untouched.
    case bypass = 0
    /// The application proxy is in the path; the engine translates its side (seed 000).
    case resilient
    /// Handed to the engine after the proxy stepped out (seed 003).
    case spliced
    /// Transferred to another proxy (seed 002).
    case transferred
    /// A connection of the layer-7 balancer, between an end and the proxy's own socket (the
    /// client and the service address, or the proxy and a backend): watched, not joined yet.
    case balanced
    /// Joined to its peer connection (seed 003 claim 10): the engine translates every packet
    /// of its far end onto the peer connection (Splice/Join.swift).
    case joined

    /// Keeps its connection block through TIME_WAIT (released when the entry expires): a
    /// resilient flow for the proxy's last packets, a spliced one for its record (the rule,
    /// the splice's outcome, the packets the engine saw).
    @inlinable public var keepsBlock: Bool { self == .resilient || self == .spliced || self == .joined }

    public var description: String {
        switch self {
        case .bypass: return "bypass"
        case .resilient: return "resilient"
        case .spliced: return "spliced"
        case .transferred: return "transferred"
        case .balanced: return "balanced"
        case .joined: return "joined"
        }
    }
}

/// Why a flow has the mode it has (the last change), shown by `splicectl flows`.
public enum ModeReason: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// New flow, no policy claims it.
    case noPolicy = 0
    /// Seen first in the middle of its life (e.g. after an engine restart): bypass.
    case pickedUpMidStream
    /// A policy claimed it, but no proxy was alive.
    case noProxy
    /// The proxy serving it died.
    case proxyDied
    /// A policy claimed it and the proxy took it.
    case policy
    /// A policy claimed it, but no connection block was free.
    case noBlock
    /// The handshake could not be replayed (e.g. the server's SYN-ACK was malformed).
    case replayFailed
    /// The server's SYN-ACK went by unseen (a full handshake queue): the proxy cannot join.
    case handshakeUnseen
    /// The proxy did not answer the replayed handshake in time: the flow went on alone.
    case proxyNoAnswer
    /// The proxy's rule said splice, and it stepped out (seed 003).
    case ruleSplice
    /// The proxy's rule said bypass, and it stepped out at once.
    case ruleBypass
    /// A connection to a service address of the balancer, or from the proxy to a backend.
    case service
    /// Both ends use timestamps, the proxy's socket answered without them (the router's
    /// `net.ipv4.tcp_timestamps` is 0): the flow went on alone before the proxy had any byte.
    case proxyWithoutTimestamps
    /// A policy claimed it, but its SYN is signed (TCP-MD5, TCP-AO: BGP sessions): no proxy
    /// can answer it without the key and any rewrite breaks the signature, so it is left alone.
    case signed

    public var description: String {
        switch self {
        case .noPolicy: return "no-policy"
        case .pickedUpMidStream: return "picked-up-mid-stream"
        case .noProxy: return "no-proxy-alive"
        case .proxyDied: return "proxy-died"
        case .policy: return "policy"
        case .noBlock: return "no-connection-block"
        case .replayFailed: return "replay-failed"
        case .handshakeUnseen: return "handshake-unseen"
        case .proxyNoAnswer: return "proxy-no-answer"
        case .ruleSplice: return "rule-splice"
        case .ruleBypass: return "rule-bypass"
        case .service: return "service"
        case .proxyWithoutTimestamps: return "proxy-without-timestamps"
        case .signed: return "tcp-signature"
        }
    }
}

/// Which way a packet travels relative to the flow's initiator.
public enum FlowDirection: Int, Sendable {
    /// From the initiator (client) to the responder (server).
    case original = 0
    /// From the responder to the initiator.
    case reply = 1
    @inlinable public var opposite: FlowDirection { self == .original ? .reply : .original }
}

/// One value for each direction of a flow, indexed by `FlowDirection`: code that does the
/// same thing both ways says "this way" (`d`) and "the other way" (`d.opposite`) once,
/// instead of naming the client and the server in two copies. What belongs to an end is kept
/// under the direction it sends in (`.original`: the client's, `.reply`: the server's).
public struct PerDirection<Value> {
    public var original: Value
    public var reply: Value
    @inlinable public init(original: Value, reply: Value) {
        self.original = original
        self.reply = reply
    }
    @inlinable public init(repeating value: Value) {
        original = value
        reply = value
    }
    @inlinable public subscript(_ d: FlowDirection) -> Value {
        get { d == .original ? original : reply }
        _modify {
            if d == .original { yield &original } else { yield &reply }
        }
    }
    /// The value for `d`, changed in place. On the per-packet path, where several fields
    /// change, the subscript's accessors cost a copy out and back (+10 ns a packet in the
    /// bypass benchmark); this does not.
    @inlinable @inline(__always)
    public mutating func update<R>(_ d: FlowDirection, _ body: (inout Value) -> R) -> R {
        d == .original ? body(&original) : body(&reply)
    }
}
extension PerDirection: Sendable where Value: Sendable {}
extension PerDirection: Equatable where Value: Equatable {}
