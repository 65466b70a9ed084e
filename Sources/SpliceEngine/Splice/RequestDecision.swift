import SpliceRules
import SpliceWire

// Request rules read by the engine itself (Docs/splicing.md, "Who reads the request"), when
// the rule set says so (`RuleSet.requestReader`, `engine` by default; `splicectl rules default
// --request-reader engine|proxy`).
//
// A flow whose rules need the client's first bytes (a Host, a path, an SNI) would cost the
// whole replay of its handshake to the proxy, the proxy's two sockets, two control messages and
// the drain, only for the proxy to read a few hundred bytes and step out. The engine holds the
// same bytes in its queue: after the client's handshake ACK (the client is validated, as for
// the replay), it holds that ACK and the client's first segments, and the server waits in
// SYN-RECEIVED. When the rules decide:
//
//   splice / bypass   the held segments go on to the server untouched (the first of them
//                     completes the server's handshake: it carries the same ACK), with the
//                     splice mark: the flow leaves the queue at once. The proxy never hears of
//                     it; nothing was ever in flight through it, so there is nothing to drain.
//   proxy, or a rule  the handshake is replayed to the proxy as it would have been at the ACK
//   on the response   (HandshakeReplay.swift), the held segments given to its socket once it
//                     is up; the proxy reads them and applies the same rules.
//
// The first bytes late (the rules' first-bytes timeout, counted from the ACK, seen at the next
// packet of either end) give the default action. The server retries its SYN-ACK after a second
// without the ACK: before the timeout, that retry is turned into the replay (a server that
// speaks first, on a port with request rules, waits a second for the proxy, not the timeout).
// Nothing here sends a byte the client did not send, or acknowledges one: a segment that
// cannot be held (the pool full) is dropped, and the client sends it again.

extension Engine {
    /// A packet of the client while its first bytes are awaited: held, and the rules asked.
    func fromClientAwaitingRequest(_ p: TCPPacket, entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>,
                                   scratch: UnsafeMutableRawBufferPointer, now: Timestamp) -> Verdict {
        let tcp = p.tcp
        if requestWaitIsOver(b, now: now) {
            counters.splices.requestsLate &+= 1
            return applyRequestDecision(.decided(action: rules.defaultAction, ruleID: nil), current: p, held: false,
                                        entry: e, block: b, scratch: scratch, now: now)
        }
        // A pure ACK (the handshake's, a window update) tells the server nothing yet: the
        // first data segment carries the same acknowledgement.
        guard tcp.payloadLength > 0 || tcp.flags.contains(.fin) else { return .drop }
        let first = b.pointee.ends.original.isn + 1
        let facts: RequestFacts
        let held: Bool
        if b.pointee.resilient.pendingToProxy == 0 && tcp.sequenceNumber == first {
            // The usual case: the whole head in the first segment, read where it lies.
            facts = RequestFacts(firstBytes: UnsafeRawBufferPointer(tcp.payload), isFinal: tcp.flags.contains(.fin))
            held = false
        } else {
            // Out of order, or the head spans segments: hold this one, and read what the held
            // ones give from the first byte on, in order.
            holdForProxy(p, entry: e, block: b, now: now)
            let (count, fin) = gatherRequest(entry: e, from: first, into: scratch)
            guard count > 0 || fin else { return .drop }
            facts = RequestFacts(firstBytes: UnsafeRawBufferPointer(scratch.slice(0, count)), isFinal: fin)
            held = true
        }
        let decision = rules.decide(
            connection: ConnectionFacts(client: table[e].addressA, server: table[e].addressB, serverPort: table[e].portB),
            request: facts)
        if case .needRequest = decision {
            if !held { holdForProxy(p, entry: e, block: b, now: now) }
            return .drop
        }
        return applyRequestDecision(decision, current: p, held: held, entry: e, block: b, scratch: scratch, now: now)
    }

    /// The server's SYN-ACK again, while the engine holds the client's ACK: past the first-bytes
    /// timeout, the default action; before it, the handshake goes to the proxy (which waits for
    /// the first bytes itself).
    func serverRetryAwaitingRequest(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>,
                                    scratch: UnsafeMutableRawBufferPointer, now: Timestamp) -> Verdict {
        let late = requestWaitIsOver(b, now: now)
        if late { counters.splices.requestsLate &+= 1 }
        if late && rules.defaultAction != .proxy {
            // The SYN-ACK goes to the client, which acknowledges it again: that ACK, in the
            // spliced flow, completes the server's handshake and carries the splice mark.
            _ = applyRequestDecision(.decided(action: rules.defaultAction, ruleID: nil), current: nil, held: false,
                                     entry: e, block: b, scratch: scratch, now: now)
            return .accept
        }
        counters.splices.requestsToProxy &+= 1
        return replaySynToProxy(entry: e, block: b, scratch: scratch, now: now)
    }

    func requestWaitIsOver(_ b: UnsafeMutablePointer<ConnectionBlock>, now: Timestamp) -> Bool {
        let waited = UInt64(now.deciseconds &- b.pointee.resilient.phaseSince) * 100
        return waited >= UInt64(rules.firstBytesTimeoutMilliseconds)
    }

    /// Carries out what the rules said of the request. `current`: the packet being decided on
    /// (nil: a server's packet); `held`: it is already among the flow's held packets.
    func applyRequestDecision(_ decision: Decision, current p: TCPPacket?, held: Bool, entry e: UInt32,
                              block b: UnsafeMutablePointer<ConnectionBlock>,
                              scratch: UnsafeMutableRawBufferPointer, now: Timestamp) -> Verdict {
        guard case .decided(let action, let rule) = decision, action != .proxy else {
            // The proxy's turn: the replay, as at the ACK, with the client's bytes held for it.
            counters.splices.requestsToProxy &+= 1
            if let p, !held, p.tcp.payloadLength > 0 || p.tcp.flags.contains(.fin) {
                holdForProxy(p, entry: e, block: b, now: now)
            }
            return replaySynToProxy(entry: e, block: b, scratch: scratch, now: now)
        }
        table[e].mode = .spliced
        table[e].reason = action == .bypass ? .ruleBypass : .ruleSplice
        var r = b.pointee.resilient
        r.decision = action == .bypass ? .bypass : .splice
        r.ruleID = UInt16(clamping: max(0, rule ?? 0))
        r.splice = .spliced
        r.spliceDrained = true
        r.packetsAtSplice = UInt32(truncatingIfNeeded: b.pointee.ends.original.packets &+ b.pointee.ends.reply.packets)
        counters.splices.decidedAtRequest &+= 1
        // Sent on before the proxy is forgotten: the held slots name it.
        b.pointee.resilient = r
        releaseHeldRequest(entry: e, block: b)
        // Never engaged: `splicectl flows` shows no proxy, as for a flow spliced at its SYN.
        b.pointee.resilient.proxyID = 0
        guard let p, !held else { return .drop }
        // Untouched, with the splice mark (`splicedFromEnd`).
        return p.tcp.flags.contains(.fin) ? .accept : Verdict(action: .repeatHook, mark: marks.spliced)
    }

    /// The client's held segments of a flow the rules spliced go on to the server as they came
    /// (their checksum completed), with the splice mark.
    func releaseHeldRequest(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) {
        guard b.pointee.resilient.pendingToProxy > 0 else { return }
        let server = table[e].addressB
        for i in 0..<pending.capacity where pending.slots[i].inUse && pending.slots[i].entry == e {
            guard pendingBelongs(i) else { continue }
            let packet = pending.packet(i)
            if let p = TCPPacket(packet), let injector {
                p.fillChecksum()
                injector.injectSplicing(UnsafeRawBufferPointer(packet), to: server)
            } else {
                counters.resilient.injectionFailures &+= 1
            }
            pending.free(i)
        }
        b.pointee.resilient.pendingToProxy = 0
    }

    /// Copies the payload of flow `e`'s held client segments into `buffer`, in sequence order
    /// from `first`, as far as they run without a gap (at most `maxPeekLength` bytes). Also
    /// says whether a FIN ends what was gathered.
    func gatherRequest(entry e: UInt32, from first: SeqNumber, into buffer: UnsafeMutableRawBufferPointer) -> (Int, Bool) {
        // The flow's slots (at most `pendingPerFlow`), found once.
        var found: [Int] = []
        found.reserveCapacity(Int(Engine.pendingPerFlow))
        for i in 0..<pending.capacity where pending.slots[i].inUse && pending.slots[i].entry == e && pendingBelongs(i) {
            found.append(i)
        }
        let limit = min(maxPeekLength, buffer.count)
        var next = first, count = 0, fin = false
        var progressed = true
        while progressed && count < limit && !fin {
            progressed = false
            for i in found {
                guard let p = TCPPacket(pending.packet(i)) else { continue }
                let tcp = p.tcp
                let start = tcp.sequenceNumber, end = start + UInt32(tcp.payloadLength)
                // A segment that covers `next` (a retransmission may start before it).
                guard start <= next, next < end || (tcp.flags.contains(.fin) && next == end) else { continue }
                let skip = Int(next - start)
                let take = min(tcp.payloadLength - skip, limit - count)
                if take > 0 {
                    buffer.slice(count, count + take).copyMemory(from: UnsafeRawBufferPointer(tcp.payload.slice(skip, skip + take)))
                    count += take
                    next = next + UInt32(take)
                    progressed = true
                }
                if tcp.flags.contains(.fin) && next == end { fin = true }
                if progressed || fin { break }
            }
        }
        return (count, fin)
    }
}
