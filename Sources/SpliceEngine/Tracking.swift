import SpliceWire

/// What one packet of a known flow tells the state machine: its direction, its flags, and
/// what its numbers mean against what the engine knows of the other end (computed by
/// `Engine.track` from the connection block; true when the block is missing, as conntrack
/// does without the sequence numbers).
public struct TrackEvent: Sendable, Equatable {
    public var direction: FlowDirection
    public var syn = false
    public var ack = false
    public var fin = false
    public var rst = false
    /// The ACK acknowledges the responder's ISN + 1 (the handshake's last ACK).
    public var completesHandshake = true
    /// The ACK acknowledges the other end's FIN.
    public var acksOtherFin = true

    public init(direction: FlowDirection, syn: Bool = false, ack: Bool = false, fin: Bool = false, rst: Bool = false,
                completesHandshake: Bool = true, acksOtherFin: Bool = true) {
        self.direction = direction
        self.syn = syn
        self.ack = ack
        self.fin = fin
        self.rst = rst
        self.completesHandshake = completesHandshake
        self.acksOtherFin = acksOtherFin
    }
}

/// The conntrack-style state machine of a tracked flow, as a pure function: the state and
/// what was seen of the FINs, and one packet, give the next state and FIN flags. No table,
/// no block, no side effect: `Engine.track` applies it (and records ISNs and FIN positions).
///
/// The closing states are not kept apart from the FIN flags: once a FIN is seen the state is
/// computed from them (FIN_WAIT one FIN, CLOSE_WAIT one FIN acknowledged, LAST_ACK both FINs,
/// TIME_WAIT both acknowledged), so the two can never disagree.
public enum Tracking {
    @inline(__always)
    public static func next(state: FlowState, seen: FlowEntry.Flags, event ev: TrackEvent)
        -> (state: FlowState, seen: FlowEntry.Flags) {
        if ev.rst { return (.close, seen) }
        if ev.syn {
            // The responder's SYN-ACK; anything else with SYN (a retransmitted SYN, a
            // simultaneous open) leaves the state as it is.
            if ev.direction == .reply && ev.ack && (state == .synSent || state == .synReceived) {
                return (.synReceived, seen)
            }
            return (state, seen)
        }
        var state = state
        var seen = seen
        // The initiator's ACK of the responder's SYN-ACK (SYN_SENT: the SYN-ACK went by unseen).
        if (state == .synReceived || state == .synSent) && ev.direction == .original && ev.ack
            && ev.completesHandshake {
            state = .established
        }
        if ev.fin { seen.insert(ev.direction == .original ? .finA : .finB) }
        if ev.ack && ev.acksOtherFin {
            // An ACK from one side may acknowledge the other side's FIN.
            if ev.direction == .original && seen.contains(.finB) { seen.insert(.finAckedB) }
            if ev.direction == .reply && seen.contains(.finA) { seen.insert(.finAckedA) }
        }
        if seen.contains(.finA) || seen.contains(.finB) {
            let bothFin = seen.isSuperset(of: [.finA, .finB])
            if bothFin && seen.isSuperset(of: [.finAckedA, .finAckedB]) { state = .timeWait }
            else if bothFin { state = .lastAck }
            else if seen.contains(.finAckedA) || seen.contains(.finAckedB) { state = .closeWait }
            else { state = .finWait }
        }
        return (state, seen)
    }
}
