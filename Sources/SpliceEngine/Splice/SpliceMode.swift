import SpliceRules
import SpliceWire

// Flow splicing to the original server (seed 003, FIG. 14-17; ../shared/DESIGN.md "spliced";
// Docs/splicing.md). A resilient flow is in step with both ends: once nothing is in flight
// through the proxy, the proxy can step out and the flow needs no translation at all.
//
//   decide      the proxy reports the action its rules gave the flow; `splice` and `bypass`
//               make the splice PENDING: the proxy's windows toward the senders are advertised
//               as zero, so that the senders stop while the proxy writes out what it holds.
//   stepOut     the proxy has written everything: when the engine sees every byte either end
//               sent acknowledged by the other (or the proxy's drain bound passed: fallback),
//               the flow is spliced. The ends' windows are reopened with a window update each,
//               and the proxy closes its sockets without a packet (TCP_REPAIR).
//   spliced     the flow's packets pass untouched; the first one carries the splice mark, which
//               the rules save as the flow's conntrack mark, and from then on its data and ACKs
//               skip the queue. Its SYN, FIN and RST still come here: the table follows the end.

extension Engine {
    public enum DecideOutcome: Equatable, Sendable {
        /// Recorded; for `splice` and `bypass`, the splice is pending.
        case accepted
        case refused(String)
    }

    public enum StepOutOutcome: Equatable, Sendable {
        /// Spliced; `drained`: with nothing in flight (false: by fallback, the senders resend).
        case spliced(drained: Bool)
        /// Bytes are still in flight through the proxy: it should keep writing and ask again.
        case notDrained
        case refused(String)
    }

    /// A step-out or join the daemon held back because the queues held packets the engine had
    /// not seen yet; and one it answered at its bound with the readers still behind.
    public func countDeferredForQueue() {
        counters.splices.deferredForQueue &+= 1
    }

    public func countHeldPastBound() {
        counters.splices.heldPastBound &+= 1
    }

    /// The flow of the proxy's connection from `client` to `server`, if it is resilient.
    func resilientFlow(client: IPAddress, clientPort: UInt16, server: IPAddress, serverPort: UInt16)
        -> Result<(UInt32, UnsafeMutablePointer<ConnectionBlock>), SpliceRefusal> {
        guard let (e, dir) = table.lookup(source: client, sourcePort: clientPort, destination: server, destinationPort: serverPort),
              dir == .original else { return .failure(.unknown) }
        guard table[e].mode == .resilient, let b = table.block(e) else { return .failure(.mode(table[e].mode, table[e].reason)) }
        return .success((e, b))
    }

    struct SpliceRefusal: Error, CustomStringConvertible {
        var description: String
        static let unknown = SpliceRefusal(description: "no such flow")
        static func mode(_ m: FlowMode, _ r: ModeReason) -> SpliceRefusal {
            SpliceRefusal(description: "the flow is not resilient (mode \(m), \(r))")
        }
    }

    /// The proxy's decision for its connection from `client` to `server`: the action and the
    /// rule that gave it (0: its default).
    public func decide(client: IPAddress, clientPort: UInt16, server: IPAddress, serverPort: UInt16,
                       action: ProxyDecision, ruleID: UInt16, now: Timestamp) -> DecideOutcome {
        let b: UnsafeMutablePointer<ConnectionBlock>
        switch resilientFlow(client: client, clientPort: clientPort, server: server, serverPort: serverPort) {
        case .success(let found): b = found.1
        case .failure(let why):
            counters.splices.refused &+= 1
            return .refused(why.description)
        }
        switch action {
        case .none, .proxy:
            // `proxy` after a pending splice: the proxy cancels it (the connection ended first).
            if b.pointee.resilient.splice == .pending {
                b.pointee.resilient.splice = .none
                counters.splices.cancelled &+= 1
                reopenWindows(block: b, entry: b.pointee.owner)
            } else {
                counters.splices.decidedProxy &+= 1
            }
            b.pointee.resilient.decision = action == .none ? .proxy : action
            b.pointee.resilient.ruleID = ruleID
            return .accepted
        case .splice, .bypass:
            // The socket facing the client must be up; the one facing the server may still be
            // finishing its handshake (the step out waits for it: nothing is drained before).
            guard b.pointee.resilient.phase >= .downEstablished else {
                counters.splices.refused &+= 1
                return .refused("the flow's handshake with the proxy is not complete (\(b.pointee.resilient.phase))")
            }
            guard b.pointee.resilient.splice == .none else { return .accepted }   // said again
            if action == .splice { counters.splices.decidedSplice &+= 1 } else { counters.splices.decidedBypass &+= 1 }
            b.pointee.resilient.decision = action
            b.pointee.resilient.ruleID = ruleID
            b.pointee.resilient.splice = .pending
            return .accepted
        }
    }

    /// The proxy has written out what it held and asks to step out (`force`: its drain bound
    /// passed). Spliced when every byte each end sent is acknowledged by the other end.
    public func stepOut(client: IPAddress, clientPort: UInt16, server: IPAddress, serverPort: UInt16,
                        force: Bool, now: Timestamp) -> StepOutOutcome {
        let (e, b): (UInt32, UnsafeMutablePointer<ConnectionBlock>)
        switch resilientFlow(client: client, clientPort: clientPort, server: server, serverPort: serverPort) {
        case .success(let found): (e, b) = found
        case .failure(let why):
            counters.splices.refused &+= 1
            return .refused(why.description)
        }
        guard b.pointee.resilient.splice == .pending else {
            counters.splices.refused &+= 1
            return .refused("no splice is pending for the flow")
        }
        let drained = b.pointee.resilient.phase == .established && isDrained(b)
        if !drained && !force {
            counters.splices.notYetDrained &+= 1
            return .notDrained
        }
        table[e].mode = .spliced
        table[e].reason = b.pointee.resilient.decision == .bypass ? .ruleBypass : .ruleSplice
        b.pointee.resilient.splice = .spliced
        b.pointee.resilient.spliceDrained = drained
        b.pointee.resilient.packetsAtSplice = UInt32(truncatingIfNeeded: b.pointee.ends.original.packets &+ b.pointee.ends.reply.packets)
        if drained { counters.splices.drained &+= 1 } else { counters.splices.fellBack &+= 1 }
        reopenWindows(block: b, entry: e)
        return .spliced(drained: drained)
    }

    /// Every byte (and FIN) each end sent has been acknowledged by the other end: nothing is
    /// in flight through the proxy, nor held by it.
    func isDrained(_ b: UnsafeMutablePointer<ConnectionBlock>) -> Bool {
        for d in [FlowDirection.original, .reply] {
            let sender = b.pointee.ends[d], receiver = b.pointee.ends[d.opposite]
            guard receiver.ackSeen, receiver.ack >= sender.nextSeq else { return false }
        }
        return true
    }

    /// A spliced flow's packet from an end: untouched. One without SYN, FIN or RST gets the
    /// splice mark (the rules save it as the flow's conntrack mark; later ones skip the queue).
    func splicedFromEnd(_ p: TCPPacket) -> Verdict {
        counters.splices.packetsAfterSplice &+= 1
        let flags = p.tcp.flags
        if flags.contains(.syn) || flags.contains(.fin) || flags.contains(.rst) { return .accept }
        return Verdict(action: .repeatHook, mark: marks.spliced)
    }

    /// A spliced flow's FIN, logged by the rules (NFLOG, `install-rules.sh --fin-log-group`)
    /// as it went past the queue: `header` holds what was copied of it (its IP and TCP headers,
    /// perhaps not the whole packet), `room` (at least `Engine.scratchBytes`, initialized) is
    /// where it is viewed at its declared length, so that its sequence numbers and payload
    /// length read as the packet's own. The table follows the flow's end from it as from a
    /// queued FIN; a copy of anything else (a FIN of a flow no longer spliced here, or not in
    /// the table) is ignored.
    public func loggedFromSplicedFlow(_ header: UnsafeRawBufferPointer, room: UnsafeMutableRawBufferPointer, now: Timestamp) {
        guard let p = Engine.viewLogged(header, room: room) else {
            counters.splices.logsIgnored &+= 1
            return
        }
        let flags = p.tcp.flags
        guard flags.contains(.fin), !flags.contains(.syn), !flags.contains(.rst),
              let (e, dir) = table.lookup(source: p.source, sourcePort: p.tcp.sourcePort,
                                          destination: p.destination, destinationPort: p.tcp.destinationPort),
              table[e].mode == .spliced, !table[e].state.isClosed else {
            counters.splices.logsIgnored &+= 1
            return
        }
        counters.splices.finsLogged &+= 1
        _ = track(p, entry: e, dir: dir, now: now, local: false)
    }

    /// A logged copy (`header`, what was copied of a packet from its IP header on) viewed in
    /// `room` at the packet's declared length, so that its sequence numbers and payload length
    /// read as the packet's own; nil when it is no TCP packet the parser takes.
    static func viewLogged(_ header: UnsafeRawBufferPointer, room: UnsafeMutableRawBufferPointer) -> TCPPacket? {
        guard header.count <= room.count, let base = header.baseAddress else { return nil }
        room.baseAddress!.copyMemory(from: base, byteCount: header.count)
        guard let length = TCPPacket.declaredLength(UnsafeMutableRawBufferPointer(rebasing: room[0..<header.count])),
              length >= header.count, length <= room.count,
              case .tcp(let p) = TCPPacket.parse(UnsafeMutableRawBufferPointer(rebasing: room[0..<length])) else { return nil }
        return p
    }

    /// The zero windows of a pending splice are lifted: each end is sent the other end's
    /// latest acknowledgement and window (as that end last sent them), so that a sender
    /// stopped by the zero window goes on at once instead of at its next window probe.
    func reopenWindows(block b: UnsafeMutablePointer<ConnectionBlock>, entry e: UInt32) {
        let entry = table[e]
        let timestamps = b.pointee.resilient.timestamps
        // Behind source NAT the server's goes first: it is the one that marks the flow (the
        // client's goes untracked, Resilient/SourceNAT.swift).
        let behindNAT = b.pointee.resilient.behindSourceNAT
        for to in behindNAT ? [FlowDirection.reply, .original] : [.original, .reply] {
            // From the end sending `from` to the end sending `to`.
            let from = to.opposite
            let sender = b.pointee.ends[from], receiver = b.pointee.ends[to]
            guard sender.ackSeen, receiver.ackSeen else { continue }
            // The TSval the receiver last took in the sender's name: the sender's own, or the
            // proxy's (biased low) if that is newer.
            let shown = b.pointee.resilient.proxy[from]
            // Its window as its last ACK said it, or, if it has sent none but its SYN-ACK
            // (a splice decided right after the handshake), that SYN-ACK's window scaled down.
            let r = b.pointee.resilient
            let window = sender.windowKnown ? sender.window
                : UInt16(truncatingIfNeeded: Int(from == .reply ? r.serverSynAckWindow : r.clientSynWindow) >> Int(r.endShift[from]))
            let tsval = shown.tsvalShown && timestamp(sender.tsRecent, isOlderThan: shown.tsval) ? shown.tsval : sender.tsRecent
            guard let n = TCPSegmentWriter.write(
                into: buildBuffer, source: entry.address(sending: from), destination: entry.address(receiving: from),
                sourcePort: entry.port(sending: from), destinationPort: entry.port(receiving: from),
                sequenceNumber: receiver.ack, acknowledgmentNumber: sender.ack, flags: .ack, window: window,
                options: timestamps ? .timestamps(TCPTimestamps(value: tsval, echo: receiver.tsRecent)) : .none)
            else { continue }
            counters.splices.windowUpdates &+= 1
            let packet = UnsafeRawBufferPointer(buildBuffer.slice(0, n))
            if table[e].mode == .spliced && !(behindNAT && to == .original) {
                // With the splice mark: the rules save it as the flow's conntrack mark before any
                // end's packet can use the reopened window.
                guard let injector else { counters.resilient.injectionFailures &+= 1; continue }
                injector.injectSplicing(packet, to: entry.address(receiving: from))
            } else {
                inject(packet, to: entry.address(receiving: from), local: false)
            }
        }
    }

    /// A new flow the policy claims, whose rules decide `splice` or `bypass` from its
    /// addresses and port alone (no rule before the deciding one needs its bytes): the proxy
    /// would step out before the first byte, so it is never engaged. The flow is spliced from
    /// its SYN: its first packet without SYN, FIN or RST (the client's handshake ACK) carries
    /// the splice mark, and from then on it skips the queue. Any proxy, HAProxy included.
    /// When the rules need the flow's first bytes and the engine reads them (`rules.requestReader`),
    /// the flow is marked to await them after its handshake (Splice/RequestDecision.swift).
    func spliceAtOnce(_ e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) -> Bool {
        guard !rules.rules.isEmpty || rules.defaultAction != .proxy else { return false }
        let entry = table[e]
        let decision = rules.decide(
            connection: ConnectionFacts(client: entry.addressA, server: entry.addressB, serverPort: entry.portB))
        guard case .decided(let action, let rule) = decision else {
            b.pointee.resilient.readsRequest = rules.requestReader == .engine
            return false
        }
        guard action != .proxy else { return false }
        table[e].mode = .spliced
        table[e].reason = action == .bypass ? .ruleBypass : .ruleSplice
        b.pointee.resilient.decision = action == .bypass ? .bypass : .splice
        b.pointee.resilient.ruleID = UInt16(clamping: max(0, rule ?? 0))
        b.pointee.resilient.splice = .spliced
        b.pointee.resilient.spliceDrained = true
        counters.splices.decidedAtConnection &+= 1
        return true
    }

}
