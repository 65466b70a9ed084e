import SpliceRules
import SpliceWire

// One-way joins (seed 003: unidirectional splices; Docs/balancer.md). Only one direction of
// the balancer's two connections is joined: the backend's bytes to the client (a large
// response) or the client's to the backend (a large upload). The proxy's two sockets stay
// open and the proxy keeps relaying the other direction through them. Call X the far end that
// sends the joined direction, Ns the proxy's socket facing it, Y the far end that receives
// it and Nr the proxy's socket facing Y:
//
//   X's data     translated onto Y's connection (as a join both ways), its acknowledgement
//                and window replaced by Nr's (X's own acknowledge what Ns relays: they go to
//                Ns in an ACK of their own when they move)
//   X's ACKs     to Ns, at the sequence number Ns receives at (none of X's bytes reach it)
//   Y's ACKs     translated onto X's connection, at the sequence number Ns sends at
//   Y's data     to Nr, acknowledging what Nr sent (nothing after the join); its
//                acknowledgement of X's bytes goes to X in an ACK of their own when it moves
//   Ns's packets (the relayed direction) acknowledge what Y acknowledged of X's bytes,
//                with Y's window
//   Nr's ACKs    at the sequence number Y expects after X's bytes
//
// Toward each far end two clocks meet (the proxy's socket's and the other far end's,
// translated): every TSval sent to it is at least the highest it was sent (PAWS).
// Once the relayed direction is over (its FIN acknowledged, nothing left in the proxy), the
// proxy asks to join again: the relayed direction's deltas are taken from its counts, the
// pair becomes a join both ways, and the proxy's sockets close without a packet.

extension Engine {
    /// Sets up a one-way join on a pair `join` has just joined both ways.
    func beginOneWay(_ direction: OneWay, client c: UInt32, backend k: UInt32, clientRead: SeqNumber,
                     p1Next: SeqNumber, p2Next: SeqNumber, backendRead: SeqNumber, timestamps: (Bool, Bool)) {
        guard let cb = table.block(c), let kb = table.block(k) else { return }
        let toClient = direction == .toClient
        cb.pointee.join.oneWay = toClient ? .destination : .source
        kb.pointee.join.oneWay = toClient ? .source : .destination
        // The proxy's socket facing X receives from X's position at the join; the one facing Y
        // sends from its own.
        if toClient {
            kb.pointee.join.nearReceives = backendRead
            cb.pointee.join.nearSends = p1Next
        } else {
            cb.pointee.join.nearReceives = clientRead
            kb.pointee.join.nearSends = p2Next
        }
        for b in [cb, kb] {
            let far: FlowDirection = b.pointee.join.facesClient ? .original : .reply
            let end = b.pointee.ends[far]
            b.pointee.join.ackForwarded = end.ack
            b.pointee.join.windowForwarded = end.window
            b.pointee.join.mergeClocks = true
            b.pointee.join.lastTSOut = b.pointee.ends[far.opposite].tsRecent
        }
        counters.balancer.oneWayJoined &+= 1
        // Windows the proxy's sockets shut while pending: X gets Y's (translated), Y gets Nr's.
        let (source, destination) = toClient ? (k, c) : (c, k)
        reopenJoined(from: destination, to: source, timestamps: toClient ? timestamps.1 : timestamps.0)
        reopenRelayed(destination, timestamps: toClient ? timestamps.0 : timestamps.1)
    }

    /// The pair a join request names, when it is joined one way.
    func oneWayPair(_ r: JoinRequest) -> (UInt32, UInt32)? {
        guard let (c, cb) = clientConnection(r), table[c].mode == .joined, cb.pointee.join.oneWay != .none,
              let (k, kd) = table.lookup(source: r.local, sourcePort: r.localPort, destination: r.backend, destinationPort: r.backendPort),
              kd == .original, k == cb.pointee.join.peer, table.block(k)?.pointee.serial == cb.pointee.join.peerSerial else { return nil }
        return (c, k)
    }

    /// The relayed direction's end: asked to join again with the proxy's counts, once the
    /// proxy holds nothing of it and its far end acknowledged all of it, the pair becomes a
    /// join both ways.
    func completeOneWay(_ r: JoinRequest, client c: UInt32, backend k: UInt32) -> JoinOutcome {
        guard let cb = table.block(c), let kb = table.block(k),
              cb.pointee.join.oneWay != .none, kb.pointee.join.oneWay != .none else {
            counters.balancer.refused &+= 1
            return .refused("no one-way join for these connections")
        }
        let client = cb.pointee.ends.original, p1 = cb.pointee.ends.reply
        let p2 = kb.pointee.ends.original, backend = kb.pointee.ends.reply
        let clientRead = client.isn + 1 + UInt32(truncatingIfNeeded: r.readFromClient)
        let p1Next = p1.isn + 1 + UInt32(truncatingIfNeeded: r.writtenToClient)
        let p2Next = p2.isn + 1 + UInt32(truncatingIfNeeded: r.writtenToBackend)
        let backendRead = backend.isn + 1 + UInt32(truncatingIfNeeded: r.readFromBackend)
        let toClient = cb.pointee.join.oneWay == .destination
        // The relayed direction drained: its far end acknowledged all the proxy wrote, and the
        // proxy read all its socket acknowledged. Each FIN of it (the one the proxy's socket
        // received, the one it passed on) takes a sequence number past the bytes.
        let f = table[c].flags, g = table[k].flags
        func one(_ set: Bool) -> UInt32 { set ? 1 : 0 }
        let drained = toClient
            ? backend.ackSeen && backend.ack == p2Next + one(g.contains(.finA)) && p2.nextSeq == p2Next + one(g.contains(.finA))
                && (!p1.ackSeen || p1.ack <= clientRead + one(f.contains(.finA)))
            : client.ackSeen && client.ack == p1Next + one(f.contains(.finB)) && p1.nextSeq == p1Next + one(f.contains(.finB))
                && (!p2.ackSeen || p2.ack <= backendRead + one(g.contains(.finB)))
        guard drained else {
            counters.balancer.notYetDrained &+= 1
            return .notDrained
        }
        // The joined direction's deltas come out as at the join (the proxy neither read nor
        // wrote it since); the relayed one's from where the proxy left it.
        cb.pointee.join.seqDelta = SeqDelta(rawValue: p2Next.rawValue &- clientRead.rawValue)
        cb.pointee.join.ackDelta = SeqDelta(rawValue: backendRead.rawValue &- p1Next.rawValue)
        kb.pointee.join.seqDelta = SeqDelta(rawValue: p1Next.rawValue &- backendRead.rawValue)
        kb.pointee.join.ackDelta = SeqDelta(rawValue: clientRead.rawValue &- p2Next.rawValue)
        cb.pointee.join.oneWay = .none
        kb.pointee.join.oneWay = .none
        counters.balancer.oneWayCompleted &+= 1
        return .accepted
    }

    /// A far end's packet on a one-way joined connection (`b`'s, from direction `far`).
    func oneWayFromEnd(_ p: TCPPacket, entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>,
                       peer pb: UnsafeMutablePointer<ConnectionBlock>, info: PacketInfo, now: Timestamp) -> Verdict {
        let j = b.pointee.join, pj = pb.pointee.join
        let tcp = p.tcp
        let flags = tcp.flags
        let carries = tcp.payloadLength > 0 || flags.contains(.fin) || flags.contains(.syn)
        let peerFar: FlowDirection = pj.facesClient ? .original : .reply
        let near: FlowDirection = j.facesClient ? .reply : .original
        switch j.oneWay {
        case .none:
            return .accept
        case .source:
            // X's packet.
            if flags.contains(.rst) {
                // Both: the proxy's socket here (exactly where it receives) and Y, translated.
                injectOneWayReset(entry: e, toward: near, sequence: j.nearReceives)
                return translateJoined(p, join: j, peer: j.peer, peerBlock: pb, info: info, now: now)
            }
            if !carries {
                // It acknowledges what the proxy relays: Ns's.
                if flags.contains(.ack) { b.pointee.join.ackForwarded = tcp.acknowledgmentNumber }
                tcp.updateSequenceNumber(j.nearReceives)
                counters.balancer.oneWayToProxy &+= 1
                return .acceptModifiedLocal(p, info: info)
            }
            if flags.contains(.ack) && j.ackForwarded < tcp.acknowledgmentNumber {
                b.pointee.join.ackForwarded = tcp.acknowledgmentNumber
                injectOneWayAck(onto: e, block: b, toProxy: true, sequence: j.nearReceives, ack: tcp.acknowledgmentNumber,
                                window: tcp.window, timestamps: tcp.options.summary.timestamps)
            }
            // Onto Y, acknowledging what Nr acknowledged, with Nr's window.
            let nr = pb.pointee.ends[peerFar.opposite]
            return translateJoined(p, join: j, peer: j.peer, peerBlock: pb, info: info, now: now,
                                   ack: nr.ackSeen ? nr.ack : nil, window: nr.windowKnown ? nr.window : nil,
                                   keepSACK: false)
        case .destination:
            // Y's packet.
            let ns = pb.pointee.ends[peerFar.opposite]
            if flags.contains(.rst) {
                // To Nr as it is (its sequence number is where Nr receives); to X translated.
                injectOneWayReset(entry: j.peer, toward: peerFar, sequence: ns.nextSeq)
                return .accept
            }
            if !carries {
                // It acknowledges X's bytes: onto X's connection, at Ns's sequence number.
                b.pointee.join.ackForwarded = tcp.acknowledgmentNumber
                b.pointee.join.windowForwarded = tcp.window
                return translateJoined(p, join: j, peer: j.peer, peerBlock: pb, info: info, now: now, sequence: ns.nextSeq)
            }
            if flags.contains(.ack) && (j.ackForwarded < tcp.acknowledgmentNumber || j.windowForwarded != tcp.window) {
                b.pointee.join.ackForwarded = tcp.acknowledgmentNumber
                b.pointee.join.windowForwarded = tcp.window
                var ts: TCPTimestamps?
                if !j.stripTimestamps, let t = tcp.options.summary.timestamps {
                    ts = TCPTimestamps(value: mergedTSval(j.tsDelta.forward(t.value), toward: pb),
                                       echo: t.echo == 0 ? 0 : j.echoDelta.back(t.echo))
                }
                injectOneWayAck(onto: j.peer, block: pb, toProxy: false, sequence: ns.nextSeq,
                                ack: tcp.acknowledgmentNumber + j.ackDelta,
                                window: Engine.rescale(tcp.window, from: j.fromShift, to: j.toShift), timestamps: ts)
            }
            // Its data to Nr, acknowledging what Nr sent; its SACK blocks are about X's bytes.
            if flags.contains(.ack) { tcp.updateAcknowledgmentNumber(j.nearSends) }
            stripSACK(tcp)
            counters.balancer.oneWayToProxy &+= 1
            return .acceptModifiedLocal(p, info: info)
        }
    }

    /// A packet of the proxy's socket on a one-way joined connection (`b`'s, from direction
    /// `dir`, its near end).
    func oneWayFromProxy(_ p: TCPPacket, entry e: UInt32, dir: FlowDirection, block b: UnsafeMutablePointer<ConnectionBlock>,
                         info: PacketInfo, now: Timestamp) -> Verdict {
        let j = b.pointee.join
        guard let pb = table.block(j.peer), pb.pointee.serial == j.peerSerial else { return .drop }
        let pj = pb.pointee.join
        let peerFar: FlowDirection = pj.facesClient ? .original : .reply
        let tcp = p.tcp
        let flags = tcp.flags
        switch j.oneWay {
        case .none:
            return .drop
        case .source:
            // Ns relays Y's bytes to X: it acknowledges what Y acknowledged of X's, with Y's window.
            if !flags.contains(.rst) {
                let y = pb.pointee.ends[peerFar]
                if y.ackSeen && flags.contains(.ack) { tcp.updateAcknowledgmentNumber(y.ack + pj.ackDelta) }
                if y.windowKnown && !flags.contains(.syn) {
                    tcp.updateWindow(Engine.rescale(y.window, from: pj.fromShift, to: pj.toShift))
                }
                stripSACK(tcp)
                mergeTimestamp(tcp, toward: b)
            }
        case .destination:
            // Nr writes nothing after the join (a byte or FIN of it would land in X's bytes).
            if tcp.payloadLength > 0 || flags.contains(.fin) || flags.contains(.syn) {
                counters.balancer.proxyPacketsDropped &+= 1
                return .drop
            }
            // Its ACKs (of Y's bytes) at the sequence number Y expects after X's bytes.
            let x = pb.pointee.ends[peerFar]
            tcp.updateSequenceNumber(x.nextSeq + pj.seqDelta)
            if !flags.contains(.rst) { mergeTimestamp(tcp, toward: b) }
        }
        counters.balancer.oneWayFromProxy &+= 1
        _ = track(p, entry: e, dir: dir, now: now, local: true)
        return .acceptModified(p, info: info)
    }

    /// Y's window reopened after the pending join shut it: Nr's acknowledgement and window,
    /// at the sequence number Y expects.
    func reopenRelayed(_ d: UInt32, timestamps: Bool) {
        guard let b = table.block(d) else { return }
        let j = b.pointee.join
        let far: FlowDirection = j.facesClient ? .original : .reply
        let nr = b.pointee.ends[far.opposite], y = b.pointee.ends[far]
        guard nr.ackSeen else { return }
        let options: TCPSegmentWriter.Options = timestamps
            ? .timestamps(TCPTimestamps(value: nr.tsRecent, echo: y.tsRecent)) : .none
        if injectSegment(onto: d, to: far, sequence: nr.nextSeq, ack: nr.ack,
                         window: nr.windowKnown ? nr.window : 0xffff, options: options) {
            counters.balancer.windowUpdates &+= 1
        }
    }

    /// An ACK on connection `e` (block `b`, the source's): to the proxy's socket there (X's
    /// acknowledgement, with X's own timestamps), or to its far end X (Y's, translated).
    private func injectOneWayAck(onto e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>, toProxy: Bool,
                                 sequence: SeqNumber, ack: SeqNumber, window: UInt16, timestamps: TCPTimestamps?) {
        let far: FlowDirection = b.pointee.join.facesClient ? .original : .reply
        if injectSegment(onto: e, to: toProxy ? far.opposite : far, sequence: sequence, ack: ack, window: window,
                         options: timestamps.map { .timestamps($0) } ?? .none, local: toProxy) {
            counters.balancer.oneWayAcks &+= 1
        }
    }

    /// A reset to the end of connection `e` that sends in direction `toward` (the proxy's
    /// socket when that is the near end), from the other end.
    private func injectOneWayReset(entry e: UInt32, toward: FlowDirection, sequence: SeqNumber) {
        guard let b = table.block(e) else { return }
        let far: FlowDirection = b.pointee.join.facesClient ? .original : .reply
        injectSegment(onto: e, to: toward, sequence: sequence, ack: SeqNumber(0), flags: .rst, window: 0,
                      options: .none, local: toward != far)
    }

    /// SACK blocks taken out (NOPs): they are about the other direction's bytes.
    func stripSACK(_ tcp: TCPHeader) {
        guard tcp.headerLength > TCPHeader.Field.minimumLength else { return }
        let options = tcp.options
        for o in options {
            if case .sack = options.value(of: o) { tcp.replaceWithNOPs(o) }
        }
    }

    /// The packet's TSval raised to the highest sent toward `b`'s far end, if lower.
    func mergeTimestamp(_ tcp: TCPHeader, toward b: UnsafeMutablePointer<ConnectionBlock>) {
        guard tcp.headerLength > TCPHeader.Field.minimumLength else { return }
        let options = tcp.options
        for o in options {
            if case .timestamps(let value, let echo) = options.value(of: o) {
                let merged = mergedTSval(value, toward: b)
                if merged != value { tcp.updateTimestamps(o, value: merged, echo: echo) }
            }
        }
    }

    /// `value`, or the highest TSval sent toward `b`'s far end when that is newer; remembered.
    @inline(__always)
    func mergedTSval(_ value: UInt32, toward b: UnsafeMutablePointer<ConnectionBlock>) -> UInt32 {
        guard b.pointee.join.mergeClocks else { return value }
        let last = b.pointee.join.lastTSOut
        if timestamp(value, isOlderThan: last) { return last }
        b.pointee.join.lastTSOut = value
        return value
    }
}
