import Testing
@testable import SpliceEngine

/// The state machine (`Tracking.next`) from a table: state and FIN flags before, one packet,
/// state and FIN flags after. Each row is one thing conntrack does.
@Suite("Tracking: the state machine, state x event")
struct TrackingTableTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var what: String
        var state: FlowState
        var seen: FlowEntry.Flags
        var event: TrackEvent
        var next: FlowState
        var seenAfter: FlowEntry.Flags
        var testDescription: String { what }
    }

    static let o = FlowDirection.original
    static let r = FlowDirection.reply
    static let rows: [Row] = [
        Row(what: "the responder's SYN-ACK", state: .synSent, seen: [],
            event: TrackEvent(direction: r, syn: true, ack: true), next: .synReceived, seenAfter: []),
        Row(what: "a retransmitted SYN-ACK", state: .synReceived, seen: [],
            event: TrackEvent(direction: r, syn: true, ack: true), next: .synReceived, seenAfter: []),
        Row(what: "a retransmitted SYN changes nothing", state: .synSent, seen: [],
            event: TrackEvent(direction: o, syn: true), next: .synSent, seenAfter: []),
        Row(what: "a SYN-ACK on an established flow changes nothing", state: .established, seen: [],
            event: TrackEvent(direction: r, syn: true, ack: true), next: .established, seenAfter: []),
        Row(what: "the handshake's last ACK", state: .synReceived, seen: [],
            event: TrackEvent(direction: o, ack: true), next: .established, seenAfter: []),
        Row(what: "an ACK that does not acknowledge the responder's ISN + 1", state: .synReceived, seen: [],
            event: TrackEvent(direction: o, ack: true, completesHandshake: false), next: .synReceived, seenAfter: []),
        Row(what: "the initiator's ACK when the SYN-ACK went by unseen", state: .synSent, seen: [],
            event: TrackEvent(direction: o, ack: true), next: .established, seenAfter: []),
        Row(what: "the responder's ACK does not complete the handshake", state: .synReceived, seen: [],
            event: TrackEvent(direction: r, ack: true), next: .synReceived, seenAfter: []),
        Row(what: "a reset in any state", state: .established, seen: [.finA],
            event: TrackEvent(direction: r, ack: true, rst: true), next: .close, seenAfter: [.finA]),
        Row(what: "a reset during the handshake", state: .synSent, seen: [],
            event: TrackEvent(direction: r, ack: true, rst: true), next: .close, seenAfter: []),
        Row(what: "the initiator's FIN", state: .established, seen: [],
            event: TrackEvent(direction: o, ack: true, fin: true), next: .finWait, seenAfter: [.finA]),
        Row(what: "the responder acknowledges it", state: .finWait, seen: [.finA],
            event: TrackEvent(direction: r, ack: true), next: .closeWait, seenAfter: [.finA, .finAckedA]),
        Row(what: "an ACK below the FIN acknowledges nothing", state: .finWait, seen: [.finA],
            event: TrackEvent(direction: r, ack: true, acksOtherFin: false), next: .finWait, seenAfter: [.finA]),
        Row(what: "the FIN's own sender does not acknowledge it", state: .finWait, seen: [.finA],
            event: TrackEvent(direction: o, ack: true), next: .finWait, seenAfter: [.finA]),
        Row(what: "the responder's FIN too, with its ACK", state: .closeWait, seen: [.finA, .finAckedA],
            event: TrackEvent(direction: r, ack: true, fin: true), next: .lastAck, seenAfter: [.finA, .finAckedA, .finB]),
        Row(what: "both FINs crossing, neither acknowledged", state: .finWait, seen: [.finA],
            event: TrackEvent(direction: r, fin: true), next: .lastAck, seenAfter: [.finA, .finB]),
        Row(what: "the last ACK", state: .lastAck, seen: [.finA, .finAckedA, .finB],
            event: TrackEvent(direction: o, ack: true), next: .timeWait, seenAfter: [.finA, .finAckedA, .finB, .finAckedB]),
        Row(what: "a late segment in TIME_WAIT stays there", state: .timeWait, seen: [.finA, .finAckedA, .finB, .finAckedB],
            event: TrackEvent(direction: r, ack: true), next: .timeWait, seenAfter: [.finA, .finAckedA, .finB, .finAckedB]),
        Row(what: "a FIN before the handshake completed", state: .synSent, seen: [],
            event: TrackEvent(direction: o, fin: true), next: .finWait, seenAfter: [.finA]),
        Row(what: "data on an established flow", state: .established, seen: [.seenA, .seenB],
            event: TrackEvent(direction: o, ack: true), next: .established, seenAfter: [.seenA, .seenB]),
    ]

    @Test("one packet, from a table", arguments: rows)
    func transition(_ row: Row) {
        let (next, seen) = Tracking.next(state: row.state, seen: row.seen, event: row.event)
        #expect(next == row.next)
        #expect(seen == row.seenAfter)
    }
}
