import SpliceWire

/// The small, fixed part of a flow (seed 004): what is kept for every flow, from its first
/// packet through TIME_WAIT. Exactly 64 bytes (one cache line); `FlowEntryLayoutTests` holds it
/// to that. Fields are ordered by size so that Swift packs them without padding.
public struct FlowEntry: Sendable {
    // 32 bytes: the initiator's (A) and responder's (B) addresses, IPv4 mapped into IPv6.
    public var addressA: IPAddress
    public var addressB: IPAddress
    // 20 bytes
    public var created: UInt32
    public var lastSeen: UInt32
    /// Index of the connection block + 1, or 0 when the flow has none.
    public var blockRef: UInt32
    public var bytesLowA: UInt32
    public var bytesLowB: UInt32
    // 8 bytes
    public var portA: UInt16
    public var portB: UInt16
    public var bytesHighA: UInt16
    public var bytesHighB: UInt16
    // 4 bytes
    public var stateRaw: UInt8
    public var modeRaw: UInt8
    public var reasonRaw: UInt8
    public var flags: Flags

    public struct Flags: OptionSet, Sendable {
        public let rawValue: UInt8
        @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// A FIN was seen from the initiator / responder.
        public static let finA = Flags(rawValue: 1 << 0)
        public static let finB = Flags(rawValue: 1 << 1)
        /// That FIN was acknowledged by the other side.
        public static let finAckedA = Flags(rawValue: 1 << 2)
        public static let finAckedB = Flags(rawValue: 1 << 3)
        /// First seen mid-stream: ISNs and options unknown.
        public static let pickedUp = Flags(rawValue: 1 << 4)
        /// A packet was seen from the initiator / responder.
        public static let seenA = Flags(rawValue: 1 << 5)
        public static let seenB = Flags(rawValue: 1 << 6)
    }

    /// Confirmed as a real connection (conntrack's ASSURED): past its handshake, and, if
    /// picked up mid-stream, seen in both directions. What is not confirmed (a flood's SYNs,
    /// a lone ACK) gets short timeouts and is the first to go when the table is full.
    @inlinable public var isConfirmed: Bool {
        switch state {
        case .free, .synSent, .synReceived: return false
        default: return !flags.contains(.pickedUp) || flags.isSuperset(of: [.seenA, .seenB])
        }
    }

    @inlinable
    public init(a: IPAddress, portA: UInt16, b: IPAddress, portB: UInt16, now: Timestamp) {
        addressA = a; addressB = b
        created = now.deciseconds; lastSeen = now.deciseconds
        blockRef = 0; bytesLowA = 0; bytesLowB = 0
        self.portA = portA; self.portB = portB
        bytesHighA = 0; bytesHighB = 0
        stateRaw = FlowState.free.rawValue
        modeRaw = FlowMode.bypass.rawValue
        reasonRaw = ModeReason.noPolicy.rawValue
        flags = []
    }

    @inlinable public var state: FlowState {
        get { FlowState(rawValue: stateRaw) ?? .free }
        set { stateRaw = newValue.rawValue }
    }
    @inlinable public var mode: FlowMode {
        get { FlowMode(rawValue: modeRaw) ?? .bypass }
        set { modeRaw = newValue.rawValue }
    }
    @inlinable public var reason: ModeReason {
        get { ModeReason(rawValue: reasonRaw) ?? .noPolicy }
        set { reasonRaw = newValue.rawValue }
    }

    /// Bytes of TCP payload sent by the initiator / responder (48-bit counters).
    @inlinable public var bytesFromA: UInt64 { UInt64(bytesHighA) << 32 | UInt64(bytesLowA) }
    @inlinable public var bytesFromB: UInt64 { UInt64(bytesHighB) << 32 | UInt64(bytesLowB) }

    @inlinable
    public mutating func count(bytes: Int, from direction: FlowDirection) {
        let n = UInt64(bytes)
        if direction == .original {
            let v = bytesFromA &+ n
            bytesLowA = UInt32(truncatingIfNeeded: v); bytesHighA = UInt16(truncatingIfNeeded: v >> 32)
        } else {
            let v = bytesFromB &+ n
            bytesLowB = UInt32(truncatingIfNeeded: v); bytesHighB = UInt16(truncatingIfNeeded: v >> 32)
        }
    }

    /// The address and port of the end that sends in direction `d` (`.original`: the
    /// initiator), and of the end it sends to.
    @inlinable public func address(sending d: FlowDirection) -> IPAddress { d == .original ? addressA : addressB }
    @inlinable public func port(sending d: FlowDirection) -> UInt16 { d == .original ? portA : portB }
    @inlinable public func address(receiving d: FlowDirection) -> IPAddress { d == .original ? addressB : addressA }
    @inlinable public func port(receiving d: FlowDirection) -> UInt16 { d == .original ? portB : portA }

    /// The direction of a packet from `source`/`sourcePort` to `destination`/`destinationPort`,
    /// or nil if it does not belong to this flow.
    @inlinable
    public func direction(source: IPAddress, sourcePort: UInt16,
                          destination: IPAddress, destinationPort: UInt16) -> FlowDirection? {
        if portA == sourcePort && portB == destinationPort && addressA == source && addressB == destination {
            return .original
        }
        if portB == sourcePort && portA == destinationPort && addressB == source && addressA == destination {
            return .reply
        }
        return nil
    }
}

/// What one end offered in its SYN (seed 000: the options replayed to the proxy).
public struct EndOptions: Sendable, Equatable {
    public var maximumSegmentSize: UInt16 = 0
    /// 0xff when the end did not offer window scaling.
    public var windowScale: UInt8 = 0xff
    public var sackPermitted = false
    public var timestamps = false
    /// Its SYN was signed (TCP-MD5 or TCP-AO).
    public var signed = false

    @inlinable public init() {}
    @inlinable public init(_ s: TCPOptionSummary) {
        maximumSegmentSize = s.maximumSegmentSize ?? 0
        windowScale = s.windowScale ?? 0xff
        sackPermitted = s.sackPermitted
        timestamps = s.timestamps != nil
        signed = s.signed
    }
}

/// What the engine knows of one end, from the packets it sent.
public struct EndRecord: Sendable {
    /// Its initial sequence number (valid when `isnKnown`).
    public var isn = SeqNumber(0)
    public var isnKnown = false
    /// What it offered in its SYN.
    public var options = EndOptions()
    /// Its highest sequence number + length.
    public var nextSeq = SeqNumber(0)
    /// Its highest acknowledgement number (valid when `ackSeen`).
    public var ack = SeqNumber(0)
    public var ackSeen = false
    /// The sequence number of its FIN.
    public var finSeq = SeqNumber(0)
    /// Its latest TSval (when timestamps are in use).
    public var tsRecent: UInt32 = 0
    /// The window field of its latest ACK other than a SYN-ACK (in its own scale), when
    /// `windowKnown`.
    public var window: UInt16 = 0
    public var windowKnown = false
    public var packets: UInt64 = 0
    @inlinable public init() {}
}

/// The large, per-connection part of a flow (seed 004): only for flows that need it, released
/// at TIME_WAIT or reset.
public struct ConnectionBlock: Sendable {
    /// Each end's record, under the direction it sends in (`.original`: the client).
    public var ends = PerDirection(repeating: EndRecord())
    /// Index of the owning flow entry (for consistency checks and reverse lookups).
    public var owner: UInt32 = 0
    /// A number no other block attached before it had (wraps after 2^32): what a held packet
    /// remembers of its flow, so that it never goes to a later flow in the same entry.
    public var serial: UInt32 = 0
    /// The resilient mode's state (seed 000), `.none` phase for other flows.
    public var resilient = ResilientState()
    /// The balancer's join (Splice/Join.swift), `.none` stage for other flows.
    public var join = JoinState()

    @inlinable public init() {}
}
