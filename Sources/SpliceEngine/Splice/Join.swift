import SpliceRules
import SpliceWire

// The layer-7 balancer's join (seed 003 claim 10, FIG. 14; Docs/balancer.md). Two ordinary
// connections meet in the proxy: the client's to a service address (its socket P1 listens
// there) and the proxy's own to the backend it picked (P2, from a port of the balancer's
// range). Both carry the balancer mark from their sockets, so the engine sees their packets
// and the ends' (the rules queue the service address and the balancer's ports).
//
//   balanced   watched: the engine learns each connection's ISNs, options, clocks; accepts all
//   pending    the proxy decided to join: its sockets' windows go out as zero, so the ends stop
//              while it writes out what it holds (the window shrinks; no ACK is held)
//   joined     every byte the proxy wrote is acknowledged and it has read every byte its
//              sockets acknowledged: each far end's packets are translated onto the other
//              connection (addresses, ports, sequence and acknowledgement numbers, window
//              scale, timestamps, SACK edges), the proxy's sockets close without a packet
//              (TCP_REPAIR), and whatever they still send is dropped
//
// The deltas come from the ISNs the engine saw and the byte counts the proxy reports (what it
// read from and wrote to each socket), so a proxy that rewrote the request (added a header)
// is accounted for: seed 000's delta accounting.

/// Where a balancer connection stands with its join.
public enum JoinStage: UInt8, Sendable, CustomStringConvertible {
    case none
    case pending
    case joined
    /// Shown, never stored: a joined pair whose FINs have both been acknowledged, kept for
    /// 2*MSL (the table's TIME_WAIT, 120 s) so that a late retransmission is still translated
    /// (FIG. 14's WAITING).
    case waiting
    public var description: String {
        switch self {
        case .none: return "none"
        case .pending: return "pending"
        case .joined: return "joined"
        case .waiting: return "waiting"
        }
    }
}

/// What a balancer connection's block keeps of its join. The translation fields apply to the
/// packets of this connection's far end (the client, or the backend) on their way to the
/// peer connection's far end.
public struct JoinState: Sendable {
    public var stage = JoinStage.none
    /// This connection faces the client (initiator: the client, responder: the service);
    /// otherwise it faces a backend (initiator: the proxy's socket, responder: the backend).
    public var facesClient = false
    /// The peer connection: its entry and its block's serial (a reused entry is never taken
    /// for it).
    public var peer: UInt32 = 0
    public var peerSerial: UInt32 = 0
    public var seqDelta = SeqDelta.zero
    public var ackDelta = SeqDelta.zero
    /// TSval into the peer's far end's view of the proxy's clock; TSecr back into the far
    /// end's own clock (the peer's `tsDelta`).
    public var tsDelta = TimestampDelta.zero
    public var echoDelta = TimestampDelta.zero
    /// The far end's window scale, and the one the peer's far end reads windows with.
    public var fromShift: UInt8 = 0
    public var toShift: UInt8 = 0
    /// Options the peer connection did not negotiate, taken out (NOPs).
    public var stripTimestamps = false
    public var stripSACK = false
    /// The rule that decided, and the far end's packets the engine saw when joined.
    public var ruleID: UInt16 = 0
    public var packetsAtJoin: UInt32 = 0
    /// A join for one response (keep-alive re-routing): the flow returns to the proxy's
    /// sockets once the response has gone through. Facing the client: `returnAt` is where the
    /// request ended (the client's bytes past it are the next request: never sent on to the
    /// backend) and `returnAck` the client's acknowledgement of the response's last byte;
    /// facing the backend: `returnAt` is where the response ends (its FIN there is kept from
    /// the client). `armed`: the proxy has its sockets back in place, the return may happen.
    public var returns = false
    public var armed = false
    public var returnAt = SeqNumber(0)
    public var returnAck = SeqNumber(0)
    /// Facing the client, in a join for one response: the windows carried to the backend
    /// reach no further than `returnAck + returnWindow` (the client's acknowledgement space),
    /// what the proxy's socket taking the backend's connection back accepts (0: no bound).
    public var returnWindow: UInt32 = 0
    /// Facing the backend, in a join for one chunked response (`JoinRequest.chunkLeft`): its
    /// end is found from its framing (`framing`), followed through the backend's bytes from
    /// `chunkStart` (where the proxy stopped reading), `chunkBytes` of them so far;
    /// `returnAt` is known once the framing is `.done`. The client's side gets its
    /// `returnAck` and `chunkReturnWindow` (as its `returnWindow`) then.
    public var followsChunks = false
    public var framing = ChunkedBody()
    public var chunkStart = SeqNumber(0)
    public var chunkBytes: UInt64 = 0
    public var chunkReturnWindow: UInt32 = 0
    /// A one-way join (Splice/OneWayJoin.swift): this connection's far end sends the joined
    /// direction (`source`) or receives it (`destination`); the other direction still goes
    /// through the proxy's sockets, which stay open. `none` for a join both ways.
    public var oneWay = OneWayRole.none
    /// One-way, `source`: where the proxy's socket on this connection receives (the far end's
    /// sequence number at the join; none of the far end's bytes reach it after that).
    /// `destination`: where that socket sends (it writes nothing after the join).
    public var nearReceives = SeqNumber(0)
    public var nearSends = SeqNumber(0)
    /// One-way, `destination`: the far end's acknowledgement and window last carried to the
    /// source's far end (an ACK is made for it when a data packet moves them).
    /// `source`: the far end's acknowledgement last given to the proxy's socket.
    public var ackForwarded = SeqNumber(0)
    public var windowForwarded: UInt16 = 0
    /// Two clocks reach this connection's far end (a one-way join's: the proxy's socket and
    /// the other far end's, translated): each TSval sent to it is at least `lastTSOut`, the
    /// highest sent so far, so that it never sees an older one (PAWS). Kept after the join
    /// becomes two-way.
    public var mergeClocks = false
    public var lastTSOut: UInt32 = 0
    /// The engine reset this joined flow at both ends (its backend was taken out). A far end
    /// that still sends (its reset landed off its receive point and it answered with a
    /// challenge ACK, RFC 5961) is reset again at the number it acknowledges: exactly where its
    /// receiver stands.
    public var resetByEngine = false
    /// The far end must have a window update at the next join: the proxy's socket sent it a
    /// zero window while a join was pending (its own, or one the engine shut), or the
    /// connection was joined before and returned (its far end heard windows from translated
    /// packets too, which the proxy socket's record does not show).
    public var mustHearWindow = false
    @inlinable public init() {}

    /// A joined connection's state (see the fields).
    init(facesClient: Bool, peer: UInt32, peerSerial: UInt32, seqDelta: SeqDelta, ackDelta: SeqDelta,
         tsDelta: TimestampDelta, echoDelta: TimestampDelta, fromShift: UInt8, toShift: UInt8,
         stripTimestamps: Bool, stripSACK: Bool, ruleID: UInt16, packetsAtJoin: UInt32) {
        stage = .joined
        self.facesClient = facesClient
        self.peer = peer; self.peerSerial = peerSerial
        self.seqDelta = seqDelta; self.ackDelta = ackDelta
        self.tsDelta = tsDelta; self.echoDelta = echoDelta
        self.fromShift = fromShift; self.toShift = toShift
        self.stripTimestamps = stripTimestamps; self.stripSACK = stripSACK
        self.ruleID = ruleID; self.packetsAtJoin = packetsAtJoin
    }
}

/// A join as the proxy asks for it: its two connections, and for `prepare == false` the
/// bytes it read from and wrote to each socket since the handshake.
public struct JoinRequest: Sendable, Equatable {
    public var client: IPAddress
    public var clientPort: UInt16
    public var service: IPAddress
    public var servicePort: UInt16
    public var local: IPAddress
    public var localPort: UInt16
    public var backend: IPAddress
    public var backendPort: UInt16
    public var readFromClient: UInt64 = 0
    public var writtenToClient: UInt64 = 0
    public var readFromBackend: UInt64 = 0
    public var writtenToBackend: UInt64 = 0
    public var ruleID: UInt16 = 0
    /// A join for one response: the backend's bytes still to come after `readFromBackend`
    /// until the response ends (nil: joined for the connection's life).
    public var returnAfter: UInt64?
    /// With `returnAfter`: the bytes past the response's end the proxy's socket facing the
    /// backend accepts after the return; the windows given to the backend end there (nil: no
    /// bound).
    public var returnWindow: UInt32?
    /// A join for one chunked response (instead of `returnAfter`): the backend's next
    /// `chunkLeft` bytes (after `readFromBackend`) are the rest of a chunk's data, and the
    /// response ends where its framing says; the engine follows it and tells the proxy
    /// (`chunkEnds`, `chunkedEnd`).
    public var chunkLeft: UInt64?
    /// A one-way join: only this direction is joined; the proxy keeps relaying the other
    /// (nil: both ways). Asked again (`join`) on a one-way joined pair: the other direction is
    /// over at the proxy, join it too.
    public var oneWay: OneWay?
    public init(client: IPAddress, clientPort: UInt16, service: IPAddress, servicePort: UInt16,
                local: IPAddress, localPort: UInt16, backend: IPAddress, backendPort: UInt16) {
        self.client = client; self.clientPort = clientPort
        self.service = service; self.servicePort = servicePort
        self.local = local; self.localPort = localPort
        self.backend = backend; self.backendPort = backendPort
    }
}

/// A connection's part in a one-way join.
public enum OneWayRole: UInt8, Sendable {
    case none
    /// Its far end sends the joined direction.
    case source
    /// Its far end receives it.
    case destination
}

extension Engine {
    public enum JoinOutcome: Equatable, Sendable {
        /// `prepare`: the windows are shut; the join itself: done.
        case accepted
        /// Bytes are still in flight through the proxy, or unread in its sockets: ask again.
        case notDrained
        case refused(String)
    }

    /// TSvals handed across a join are biased this far (ms ticks) above the proxy's clock, so
    /// that an end's packet sent just before the join and delivered after it (reordered) still
    /// looks newer to the other end than the proxy's last one (PAWS).
    static let joinTimestampBias: UInt32 = 1000

    /// Is `address:port` a service address of the balancer (a proxy registered it)?
    func isService(_ address: IPAddress, _ port: UInt16) -> Bool {
        !services.isEmpty && services.contains(ServiceAddress(address: address, port: port))
    }

    /// The two balanced connections of a request, or why not.
    func balancedPair(_ r: JoinRequest) -> Result<(UInt32, UInt32), JoinRefusal> {
        guard let (c, _) = clientConnection(r) else { return .failure(JoinRefusal("the client's connection is unknown")) }
        guard let (k, kd) = table.lookup(source: r.local, sourcePort: r.localPort, destination: r.backend, destinationPort: r.backendPort),
              kd == .original, table.block(k) != nil else { return .failure(JoinRefusal("the backend connection is unknown")) }
        for e in [c, k] where table[e].mode != .balanced {
            return .failure(JoinRefusal("a connection is \(table[e].mode), not balanced"))
        }
        return .success((c, k))
    }

    struct JoinRefusal: Error { var description: String; init(_ d: String) { description = d } }

    /// The proxy decided to join its two connections: their windows are shut from now on.
    public func prepareJoin(_ r: JoinRequest) -> JoinOutcome {
        guard case .success(let (c, k)) = balancedPair(r) else {
            counters.balancer.refused &+= 1
            if case .failure(let why) = balancedPair(r) { return .refused(why.description) }
            return .refused("?")
        }
        for e in [c, k] { table.block(e)!.pointee.join.stage = JoinStage.pending }
        table.block(c)!.pointee.join.facesClient = true
        counters.balancer.prepared &+= 1
        return .accepted
    }

    /// The proxy gives up a join it prepared (its connection ended, or it keeps relaying):
    /// the ends' windows are reopened.
    public func cancelJoin(_ r: JoinRequest) {
        guard case .success(let (c, k)) = balancedPair(r) else { return }
        var wasPending = false
        for e in [c, k] {
            let b = table.block(e)!
            if b.pointee.join.stage == JoinStage.pending { wasPending = true }
            b.pointee.join.stage = JoinStage.none
        }
        if wasPending { counters.balancer.cancelled &+= 1 }
    }

    /// The proxy relays these two connections to their end (no join can come) and has taken
    /// their packets out of the queue: their entries are closed (forgotten after the closed
    /// state's timeout) and their blocks go back to the pool. A packet the queue still held
    /// is taken as a closed flow's (accepted). False when the pair is unknown or a join of it
    /// is under way.
    public func letGoRelayed(_ r: JoinRequest) -> Bool {
        guard case .success(let (c, k)) = balancedPair(r) else { return false }
        for e in [c, k] where table.block(e)!.pointee.join.stage != JoinStage.none { return false }
        for e in [c, k] {
            table[e].state = .close
            table.releaseBlock(e)
        }
        counters.balancer.relayedLetGo &+= 1
        return true
    }

    /// Joins the proxy's two connections, when nothing is in flight through it.
    public func join(_ r: JoinRequest, now: Timestamp) -> JoinOutcome {
        if let (c, k) = oneWayPair(r) { return completeOneWay(r, client: c, backend: k) }
        let c: UInt32, k: UInt32
        switch balancedPair(r) {
        case .success(let pair): (c, k) = pair
        case .failure(let why):
            counters.balancer.refused &+= 1
            return .refused(why.description)
        }
        if r.oneWay != nil && (r.returnAfter != nil || r.chunkLeft != nil) {
            counters.balancer.refused &+= 1
            return .refused("a one-way join is for the connection's life (no returnAfter, no chunkLeft)")
        }
        if r.returnAfter != nil && r.chunkLeft != nil {
            counters.balancer.refused &+= 1
            return .refused("a join for one response ends after returnAfter bytes or where its chunks end, not both")
        }
        let cb = table.block(c)!, kb = table.block(k)!
        guard cb.pointee.join.stage == .pending, kb.pointee.join.stage == .pending else {
            counters.balancer.refused &+= 1
            return .refused("no join is prepared for these connections")
        }
        let client = cb.pointee.ends.original, p1 = cb.pointee.ends.reply
        let p2 = kb.pointee.ends.original, backend = kb.pointee.ends.reply
        guard client.isnKnown, p1.isnKnown, p2.isnKnown, backend.isnKnown else {
            counters.balancer.refused &+= 1
            return .refused("a handshake went by unseen")
        }
        guard !table[c].flags.contains(.finA), !table[c].flags.contains(.finB),
              !table[k].flags.contains(.finA), !table[k].flags.contains(.finB) else {
            counters.balancer.refused &+= 1
            return .refused("a connection is closing")
        }
        // Where each socket stands, in its connection's sequence space.
        let clientRead = client.isn + 1 + UInt32(truncatingIfNeeded: r.readFromClient)
        let p1Next = p1.isn + 1 + UInt32(truncatingIfNeeded: r.writtenToClient)
        let p2Next = p2.isn + 1 + UInt32(truncatingIfNeeded: r.writtenToBackend)
        let backendRead = backend.isn + 1 + UInt32(truncatingIfNeeded: r.readFromBackend)
        // Drained: each end has acknowledged all the proxy wrote to it (and the proxy sent it
        // all), no socket acknowledged a byte the proxy did not read and hand on, and no far
        // end sent one that reached its socket unread (not yet acknowledged, a delayed ACK: a
        // one-way join keeps that socket, which would find it there; a join both ways would
        // leave its sender to send it again).
        let drained = client.ackSeen && client.ack == p1Next && p1.nextSeq == p1Next
            && backend.ackSeen && backend.ack == p2Next && p2.nextSeq == p2Next
            && (!p1.ackSeen || p1.ack <= clientRead) && (!p2.ackSeen || p2.ack <= backendRead)
            && client.nextSeq <= clientRead && backend.nextSeq <= backendRead
        guard drained else {
            counters.balancer.notYetDrained &+= 1
            return .notDrained
        }
        // Window scales in use on each connection (both ends offered them), timestamps, SACK.
        func shifts(_ a: EndRecord, _ b: EndRecord) -> (UInt8, UInt8) {
            let on = a.options.windowScale != 0xff && b.options.windowScale != 0xff
            return on ? (a.options.windowScale, b.options.windowScale) : (0, 0)
        }
        let (clientShift, p1Shift) = shifts(client, p1)
        let (p2Shift, backendShift) = shifts(p2, backend)
        let tsClientSide = client.options.timestamps && p1.options.timestamps
        let tsBackendSide = p2.options.timestamps && backend.options.timestamps
        let sackClientSide = client.options.sackPermitted && p1.options.sackPermitted
        let sackBackendSide = p2.options.sackPermitted && backend.options.sackPermitted
        // Each far end's clock carried into the proxy's clock on the other connection, biased.
        // (A one-way join merges the clocks toward each end instead: no bias.)
        let bias = r.oneWay == nil ? Engine.joinTimestampBias : 0
        let toBackendTS = TimestampDelta(rawValue: p2.tsRecent &+ bias &- client.tsRecent)
        let toClientTS = TimestampDelta(rawValue: p1.tsRecent &+ bias &- backend.tsRecent)

        let sc = cb.pointee.serial, sk = kb.pointee.serial
        let clientMust = cb.pointee.join.mustHearWindow, backendMust = kb.pointee.join.mustHearWindow
        cb.pointee.join = JoinState(
            facesClient: true, peer: k, peerSerial: sk,
            seqDelta: SeqDelta(rawValue: p2Next.rawValue &- clientRead.rawValue),
            ackDelta: SeqDelta(rawValue: backendRead.rawValue &- p1Next.rawValue),
            tsDelta: toBackendTS, echoDelta: toClientTS, fromShift: clientShift, toShift: p2Shift,
            stripTimestamps: !tsBackendSide, stripSACK: !sackBackendSide, ruleID: r.ruleID,
            packetsAtJoin: UInt32(truncatingIfNeeded: client.packets))
        kb.pointee.join = JoinState(
            facesClient: false, peer: c, peerSerial: sc,
            seqDelta: SeqDelta(rawValue: p1Next.rawValue &- backendRead.rawValue),
            ackDelta: SeqDelta(rawValue: clientRead.rawValue &- p2Next.rawValue),
            tsDelta: toClientTS, echoDelta: toBackendTS, fromShift: backendShift, toShift: p1Shift,
            stripTimestamps: !tsClientSide, stripSACK: !sackClientSide, ruleID: r.ruleID,
            packetsAtJoin: UInt32(truncatingIfNeeded: backend.packets))
        if let n = r.returnAfter {
            let rest = UInt32(truncatingIfNeeded: n)
            cb.pointee.join.returns = true
            cb.pointee.join.returnAt = clientRead
            cb.pointee.join.returnAck = p1Next + rest
            cb.pointee.join.returnWindow = r.returnWindow ?? 0
            kb.pointee.join.returns = true
            kb.pointee.join.returnAt = backendRead + rest
        } else if let left = r.chunkLeft {
            // The end is not known yet: no return before the framing says where it is (the
            // return is armed only then), and no bound on the windows until then.
            cb.pointee.join.returns = true
            cb.pointee.join.returnAt = clientRead
            kb.pointee.join.returns = true
            kb.pointee.join.followsChunks = true
            kb.pointee.join.framing = ChunkedBody(dataLeft: left)
            kb.pointee.join.chunkStart = backendRead
            kb.pointee.join.chunkReturnWindow = r.returnWindow ?? 0
            counters.balancer.chunkedJoins &+= 1
        }
        for e in [c, k] {
            table[e].mode = .joined
            table[e].reason = .ruleSplice
        }
        counters.balancer.joined &+= 1
        if let direction = r.oneWay {
            beginOneWay(direction, client: c, backend: k, clientRead: clientRead, p1Next: p1Next,
                        p2Next: p2Next, backendRead: backendRead, timestamps: (tsClientSide, tsBackendSide))
            return .accepted
        }
        // The windows the proxy's sockets shut are reopened: each end gets the other end's
        // latest acknowledgement and window, translated, as from the proxy's socket it knew
        // (unless that would tell it nothing new: its window never shut, and the proxy's
        // socket already gave it that acknowledgement and at least that window).
        reopenJoined(from: k, to: c, timestamps: tsClientSide, needed: clientMust)
        reopenJoined(from: c, to: k, timestamps: tsBackendSide, needed: backendMust)
        _ = now
        return .accepted
    }

    /// The backend `address:port` is gone (its health check failed, or the operator took it
    /// out): every flow joined to it is reset at both ends, as a balancer closes the client
    /// connections of a server it marks down, so that no client waits on a backend that will
    /// not answer. Each end gets an RST at the sequence number it expects next (and, when the
    /// engine saw more than it acknowledged, one at its last acknowledgement too: one of the two
    /// is exact, RFC 5961); both entries are closed. Returns how many joined flows.
    public func resetJoined(backend address: IPAddress, port: UInt16) -> Int {
        var found: [(UInt32, UInt32)] = []
        table.forEach { k, entry, block in
            guard entry.mode == .joined, let j = block?.join, j.stage == .joined, !j.facesClient,
                  entry.addressB == address, entry.portB == port, !entry.state.isClosed else { return }
            found.append((j.peer, k))
        }
        var reset = 0
        for (c, k) in found {
            for e in [c, k] {
                guard let b = table.block(e) else { continue }
                // The far end: the client (initiator) of the client's connection, the backend
                // (responder) of the backend one; the RST comes from the near end's address.
                let far: FlowDirection = b.pointee.join.facesClient ? .original : .reply
                let near = b.pointee.ends[far.opposite], farEnd = b.pointee.ends[far]
                var seqs = [near.nextSeq]
                if farEnd.ackSeen && farEnd.ack != near.nextSeq { seqs.append(farEnd.ack) }
                for seq in seqs {
                    injectSegment(onto: e, to: far, sequence: seq, ack: farEnd.nextSeq, flags: [.rst, .ack],
                                  window: 0, options: .none)
                }
                b.pointee.join.resetByEngine = true
                table[e].state = .close
            }
            reset += 1
        }
        counters.balancer.resetForBackend &+= UInt64(reset)
        return reset
    }

    /// A window update to the far end of `to`, made of the far end of `from`'s latest
    /// acknowledgement and window. With `needed` false (`mustHearWindow` unset: no zero window
    /// went to that end, which was never joined before) the update is left out when it would
    /// carry the acknowledgement that end last had from the proxy's socket and a window no
    /// smaller than that socket's last (counted: `windowUpdatesSkipped`). That end is not held up by the window it knows:
    /// the join found everything it sent read by the proxy, whose socket advertises what it
    /// can take with nothing left unread; its next packets from the other end carry that end's
    /// own window.
    func reopenJoined(from f: UInt32, to t: UInt32, timestamps: Bool, needed: Bool = true) {
        guard let fb = table.block(f), let tb = table.block(t) else { return }
        let fj = fb.pointee.join, tj = tb.pointee.join
        let fromFar: FlowDirection = fj.facesClient ? .original : .reply
        let toFar: FlowDirection = tj.facesClient ? .original : .reply
        let sender = fb.pointee.ends[fromFar], receiver = tb.pointee.ends[toFar]
        let toNear = tb.pointee.ends[toFar.opposite]
        guard sender.ackSeen else { return }
        var window = sender.windowKnown ? Engine.rescale(sender.window, from: fj.fromShift, to: fj.toShift) : 0xffff
        if fj.returnWindow != 0 { window = min(window, returnBound(fj, ack: sender.ack)) }
        let ack = sender.ack + fj.ackDelta
        // (A window smaller than the end knows is a bound it must hear of: `returnWindow`.)
        if !needed && toNear.ackSeen && toNear.windowKnown && toNear.ack == ack && window >= toNear.window {
            counters.balancer.windowUpdatesSkipped &+= 1
            return
        }
        // Its TSval is the proxy socket's last, not the translated clock (which runs 1,000
        // ticks ahead): a packet that socket sent just before the join may still be on its way
        // (its verdict is sent outside the engine's lock, so it can leave after this update),
        // and must not look older than this update (PAWS would drop it; a late pure ACK is
        // forgiven only within about an RTO). Reordered segments of the far end, translated,
        // still arrive newer than this update: the bias covers them.
        let options: TCPSegmentWriter.Options = timestamps
            ? .timestamps(TCPTimestamps(value: toNear.tsRecent, echo: receiver.tsRecent)) : .none
        if injectSegment(onto: t, to: toFar, sequence: toNear.nextSeq, ack: ack,
                         window: window, options: options) {
            counters.balancer.windowUpdates &+= 1
        }
    }

    /// A segment made by the engine on connection `e`, to the end that sends in direction `to`
    /// (a local socket when that is the near end of a balancer connection), from the other.
    @discardableResult
    func injectSegment(onto e: UInt32, to: FlowDirection, sequence: SeqNumber, ack: SeqNumber, flags: TCPFlags = .ack,
                       window: UInt16, options: TCPSegmentWriter.Options, local: Bool = false) -> Bool {
        let entry = table[e]
        guard let n = TCPSegmentWriter.write(
            into: buildBuffer, source: entry.address(sending: to.opposite), destination: entry.address(sending: to),
            sourcePort: entry.port(sending: to.opposite), destinationPort: entry.port(sending: to),
            sequenceNumber: sequence, acknowledgmentNumber: ack, flags: flags,
            window: window, options: options) else { return false }
        inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), to: entry.address(sending: to), local: local)
        return true
    }

    /// A packet of one of the proxy's balancer sockets (OUTPUT, the balancer mark): watched
    /// before a join, its window shut while the join is pending, dropped once joined.
    func fromBalancerSocket(_ p: TCPPacket, info: PacketInfo, now: Timestamp) -> Verdict {
        // Once joined, the entry follows the far ends alone: a packet the proxy's socket still
        // sends (its RST, if TCP_REPAIR failed) is dropped before it can touch the state. A
        // new SYN on a closed entry (the port taken again) is tracked: it reopens the entry.
        let found = table.lookup(source: p.source, sourcePort: p.tcp.sourcePort,
                                 destination: p.destination, destinationPort: p.tcp.destinationPort)
        if let (e, dir) = found, table[e].mode == .joined, !(table[e].state.isClosed && p.tcp.flags.contains(.syn)) {
            let flags = p.tcp.flags
            if flags.contains(.syn) && !flags.contains(.ack) {
                // The proxy's port came around while a joined flow still holds this tuple
                // (a long download beside many short requests to one backend): the SYN must
                // not reach the backend, whose connection on the tuple is that flow's. The
                // socket is reset at once (its connect fails now, not after its SYN's
                // retries) and the proxy connects again from another port.
                // (With the inject mark, as every packet the engine makes for the balancer's
                // sockets: the rules never queue it. The local mark is for transparent sockets,
                // and the rules queue a packet of it to the balancer's ports as a backend's.)
                injectSegment(onto: e, to: dir, sequence: SeqNumber(0), ack: p.tcp.sequenceNumber + 1,
                              flags: [.rst, .ack], window: 0, options: .none)
                counters.balancer.portsBusy &+= 1
                return .drop
            }
            if let b = table.block(e), b.pointee.join.oneWay != .none {
                // A one-way join: the proxy still relays the other direction on its sockets.
                return oneWayFromProxy(p, entry: e, dir: dir, block: b, info: info, now: now)
            }
            counters.balancer.proxyPacketsDropped &+= 1
            return .drop
        }
        let tcp = p.tcp
        // The router may ask for ECN in its SYNs (install-rules.sh --tproxy-port sets tcp_ecn=1
        // for the resilient proxy's sockets); the balancer's connection to a backend must not
        // set it up: joined to a client that did not (most clients do not ask), the backend
        // would send ECT packets to an end that ignores their congestion marks.
        let ecnAsked = tcp.flags.contains([.syn, .ece, .cwr]) && !tcp.flags.contains(.ack)
        if ecnAsked {
            tcp.updateFlags(tcp.flags.subtracting([.ece, .cwr]))
            counters.balancer.ecnNotAsked &+= 1
        }
        let tracked = found.map { track(p, entry: $0.0, dir: $0.1, now: now, local: true) } ?? trackNew(p, now: now, local: true)
        if ecnAsked { return .acceptModified(p, info: info) }
        // A pending join: the window the socket advertises goes out as zero.
        guard let (e, _) = tracked, table[e].mode == .balanced, let b = table.block(e),
              b.pointee.join.stage == .pending else { return .accept }
        guard !tcp.flags.contains(.syn) else { return .accept }
        b.pointee.join.mustHearWindow = true
        guard tcp.window != 0 else { return .accept }
        tcp.updateWindow(0)
        return .acceptModified(p, info: info)
    }

    /// A far end's packet of a joined connection, translated onto the peer connection.
    func joinedFromEnd(_ p: TCPPacket, entry e: UInt32, dir: FlowDirection,
                       block b: UnsafeMutablePointer<ConnectionBlock>, info: PacketInfo, now: Timestamp) -> Verdict {
        let j = b.pointee.join
        let far: FlowDirection = j.facesClient ? .original : .reply
        guard dir == far, j.stage == .joined else { return .accept }
        if j.resetByEngine {
            let flags = p.tcp.flags
            if flags.contains(.ack) && !flags.contains(.rst) && !flags.contains(.syn) {
                injectSegment(onto: e, to: far, sequence: p.tcp.acknowledgmentNumber, ack: SeqNumber(0), flags: .rst,
                              window: 0, options: .none)
                counters.balancer.resetAgain &+= 1
            }
            return .drop
        }
        guard let pb = table.block(j.peer), pb.pointee.serial == j.peerSerial else {
            // The peer is gone (expired): nothing to translate onto.
            return .drop
        }
        if j.facesClient && p.ecn == ECN.ce {
            // A congestion mark the backend cannot echo (its connection has no ECN): the
            // client learns of the congestion by the loss (`ceDropped`, counters).
            counters.balancer.ceDropped &+= 1
            return .drop
        }
        let tcp = p.tcp
        var returnAfter = false
        if j.returns {
            switch returnCheck(tcp, join: j, block: b) {
            case .translate: break
            case .translateThenReturn: returnAfter = true
            case .returnNow:
                // The client's next request, the response acknowledged: the flow is the
                // proxy's again, and this packet goes to its socket as it is.
                returnToProxy(e, b)
                return .accept
            case .holdForReturn:
                holdUntilReturn(p, entry: e, block: b, now: now)
                return .drop
            case .drop: return .drop
            }
        }
        if j.oneWay != .none { return oneWayFromEnd(p, entry: e, block: b, peer: pb, info: info, now: now) }
        let verdict = translateJoined(p, join: j, peer: j.peer, peerBlock: pb, info: info, now: now)
        if returnAfter { returnToProxy(e, b) }
        return verdict
    }

    /// A far end's packet translated onto the peer connection (`j.peer`, block `pb`), as from
    /// the proxy's socket there: addresses, ports, sequence and acknowledgement numbers, window
    /// scale, timestamps, SACK edges. A one-way join gives some fields their own values
    /// (`sequence`, `ack`, `window` as they go out; `keepSACK` false: SACK blocks taken out).
    func translateJoined(_ p: TCPPacket, join j: JoinState, peer: UInt32, peerBlock pb: UnsafeMutablePointer<ConnectionBlock>,
                         info: PacketInfo, now: Timestamp, sequence: SeqNumber? = nil, ack: SeqNumber? = nil,
                         window: UInt16? = nil, keepSACK: Bool = true) -> Verdict {
        let tcp = p.tcp
        let entry = table[peer]
        // The peer's far end receives; the proxy's socket there (its near end) sends.
        let peerFar: FlowDirection = j.facesClient ? .reply : .original
        let partial = info.checksumPartial
        p.updateSource(entry.address(sending: peerFar.opposite), partial: partial)
        p.updateDestination(entry.address(sending: peerFar), partial: partial)
        tcp.updateSourcePort(entry.port(sending: peerFar.opposite))
        tcp.updateDestinationPort(entry.port(sending: peerFar))
        tcp.updateSequenceNumber(sequence ?? tcp.sequenceNumber + j.seqDelta)
        let flags = tcp.flags
        let ackIn = tcp.acknowledgmentNumber
        if flags.contains(.ack) { tcp.updateAcknowledgmentNumber(ack ?? ackIn + j.ackDelta) }
        if let window, !flags.contains(.syn) {
            tcp.updateWindow(window)
        } else if !flags.contains(.syn) {
            var w = j.fromShift != j.toShift ? Engine.rescale(tcp.window, from: j.fromShift, to: j.toShift) : tcp.window
            if j.returnWindow != 0 && flags.contains(.ack) { w = min(w, returnBound(j, ack: ackIn)) }
            if w != tcp.window { tcp.updateWindow(w) }
        }
        if tcp.headerLength > TCPHeader.Field.minimumLength {
            let options = tcp.options
            for o in options {
                switch options.value(of: o) {
                case .timestamps(let value, let echo):
                    if j.stripTimestamps {
                        tcp.replaceWithNOPs(o)
                    } else {
                        tcp.updateTimestamps(o, value: mergedTSval(j.tsDelta.forward(value), toward: pb),
                                             echo: echo == 0 ? 0 : j.echoDelta.back(echo))
                    }
                case .sack:
                    if j.stripSACK || !keepSACK { tcp.replaceWithNOPs(o) } else { tcp.shiftSACKBlocks(o, by: j.ackDelta.signed) }
                default: break
                }
            }
        }
        if j.facesClient && p.ecn != ECN.notECT {
            // The client set ECN up with the proxy's socket, the backend's connection never
            // does (`fromBalancerSocket`): its packets go on not ECN-capable.
            p.updateECN(ECN.notECT)
            counters.balancer.ectCleared &+= 1
        }
        counters.balancer.translated &+= 1
        // The peer's table entry follows the packet as its near end's (its state, FIN, RST):
        // the entry is known, no lookup.
        _ = track(p, entry: peer, dir: peerFar.opposite, now: now, local: true)
        return .acceptModified(p, info: info)
    }

    /// The largest window field (in the backend's scale) that, with the client's
    /// acknowledgement `ack`, reaches no further than the proxy's socket will take after the
    /// return (`returnAck + returnWindow`, in the client's acknowledgement space). Without the
    /// bound the backend, given the client's window (megabytes, once autotuned), sends its next
    /// response's first flight past what the taken-over socket accepts; the socket drops it and
    /// the backend gets it through one segment at a time behind the zero window of the next
    /// join's drain (seen: joins never drained in 2 s, wrk's requests timing out).
    func returnBound(_ j: JoinState, ack: SeqNumber) -> UInt16 {
        let edge = j.returnAck + j.returnWindow
        guard ack < edge else { return 0 }
        let room = UInt64(edge.rawValue &- ack.rawValue) >> UInt64(j.toShift)
        return room > 0xffff ? 0xffff : UInt16(room)
    }

    enum ReturnStep { case translate, translateThenReturn, returnNow, holdForReturn, drop }

    /// A packet of a join for one response: what becomes of it. The backend's bytes past the
    /// response never reach the client, nor does its FIN at the response's end (the proxy's
    /// socket takes it after the return: FIN processing); the client's bytes past its request
    /// never reach the backend (they are the next request: held until the return, then given
    /// to the proxy's socket). The client's acknowledgement of the response's last byte
    /// returns the flow, once the proxy armed it.
    func returnCheck(_ tcp: TCPHeader, join j: JoinState, block b: UnsafeMutablePointer<ConnectionBlock>) -> ReturnStep {
        let flags = tcp.flags
        let seq = tcp.sequenceNumber
        let dataEnd = seq + UInt32(tcp.payloadLength)
        var j = j
        if !j.facesClient && j.followsChunks && j.framing.state != .done {
            switch followChunks(tcp, block: b) {
            case .follows: return .translate
            case .gap:
                counters.balancer.chunkGaps &+= 1
                return .drop
            case .lost:
                // Joined for the connection's life: this packet (its FIN) goes on.
                return .translate
            case .ended:
                j = b.pointee.join
            }
        }
        if !j.facesClient {
            if dataEnd > j.returnAt {
                counters.balancer.heldBack &+= 1
                return .drop
            }
            if flags.contains(.fin) {
                counters.balancer.finsProcessed &+= 1
                if tcp.payloadLength == 0 { return .drop }
                tcp.updateFlags(flags.subtracting(.fin))
            }
            return .translate
        }
        let covers = j.armed && flags.contains(.ack) && !(tcp.acknowledgmentNumber < j.returnAck)
        if dataEnd > j.returnAt || (flags.contains(.fin) && !(seq < j.returnAt)) {
            if covers { return .returnNow }
            counters.balancer.heldBack &+= 1
            return .holdForReturn
        }
        return covers ? .translateThenReturn : .translate
    }

    /// The join for one response is over: both connections are the proxy's again (its
    /// sockets, taken over in repair mode at the join, are in step with the ends), watched as
    /// before the join.
    func returnToProxy(_ e: UInt32, _ b: UnsafeMutablePointer<ConnectionBlock>) {
        let k = b.pointee.join.peer
        b.pointee.join = JoinState()
        b.pointee.join.mustHearWindow = true
        table[e].mode = .balanced
        table[e].reason = .service
        if let kb = table.block(k) {
            kb.pointee.join = JoinState()
            kb.pointee.join.mustHearWindow = true
            table[k].mode = .balanced
            table[k].reason = .service
        }
        counters.balancer.returned &+= 1
        releaseHeldForReturn(entry: e, block: b)
    }

    /// Keeps a copy of the client's packet past its request (its next request, sent as soon
    /// as it had the response, often before the proxy armed the return) for the proxy's socket.
    /// (The balancer's connection block has no resilient flow: its count of packets held for
    /// the proxy serves here.) When the pool is full it is dropped: the client sends it again.
    func holdUntilReturn(_ p: TCPPacket, entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>, now: Timestamp) {
        if b.pointee.resilient.pendingToProxy < Engine.pendingPerFlow,
           pending.hold(UnsafeRawBufferPointer(p.bytes), entry: e, serial: b.pointee.serial, proxyID: 0,
                        towardClient: false, deadline: now.deciseconds &+ Engine.pendingLifetime.deciseconds) {
            b.pointee.resilient.pendingToProxy &+= 1
        }
    }

    /// The flow returned: the client's packets held for it go to the proxy's socket, as the
    /// client sent them.
    func releaseHeldForReturn(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) {
        givePendingToProxy(entry: e, block: b) { _ in counters.balancer.heldReleased &+= 1 }
    }

    /// The client's connection to the service a join request names, and its block.
    func clientConnection(_ r: JoinRequest) -> (UInt32, UnsafeMutablePointer<ConnectionBlock>)? {
        guard let (c, cd) = table.lookup(source: r.client, sourcePort: r.clientPort, destination: r.service, destinationPort: r.servicePort),
              cd == .original, let cb = table.block(c) else { return nil }
        return (c, cb)
    }

    public enum ReturnOutcome: Equatable, Sendable {
        /// Armed: the flow returns when the client acknowledges the response.
        case armed
        /// The flow is the proxy's again (it already was, or it returned now).
        case returned
        /// Released: joined for the rest of the connection's life.
        case joinedForLife
        case refused(String)
    }

    /// The proxy has its sockets back in place: the flow may return. It returns at once when
    /// the client has already acknowledged the whole response.
    public func armReturn(_ r: JoinRequest) -> ReturnOutcome {
        guard let (c, cb) = clientConnection(r) else { return .refused("the client's connection is unknown") }
        if table[c].mode == .balanced { return .returned }
        guard table[c].mode == .joined, cb.pointee.join.returns, cb.pointee.join.facesClient else {
            return .refused("the connection is not joined for one response")
        }
        cb.pointee.join.armed = true
        let client = cb.pointee.ends.original
        if client.ackSeen && !(client.ack < cb.pointee.join.returnAck) {
            returnToProxy(c, cb)
            return .returned
        }
        return .armed
    }

    /// The balancer's proxy died: the sockets it had taken over for the returns (or, for a
    /// chunked response, the sockets waiting to be) went with it, and a return would hand the
    /// flow to no socket (the client reset at its next request). Every flow joined for one
    /// response stays joined for its life instead: the client's next requests go on to the
    /// same backend, which answers them. (The client's request held for the return meanwhile
    /// is sent again by the client, and goes to the backend then.) Returns how many.
    @discardableResult
    public func giveUpReturns() -> Int {
        var n = 0
        table.forEachIndex { e in
            guard table[e].mode == .joined, let b = table.block(e), b.pointee.join.returns else { return }
            b.pointee.join.returns = false
            b.pointee.join.armed = false
            if b.pointee.join.facesClient { n += 1 }
        }
        counters.balancer.returnsGivenUp &+= UInt64(n)
        return n
    }

    /// The proxy gives up the return (its connection idled out, or it lost its sockets): a
    /// flow still joined stays joined for its life; one already returned is the proxy's.
    public func releaseReturn(_ r: JoinRequest) -> ReturnOutcome {
        guard let (c, cb) = clientConnection(r) else { return .refused("the client's connection is unknown") }
        if table[c].mode == .balanced { return .returned }
        guard table[c].mode == .joined, cb.pointee.join.returns else { return .joinedForLife }
        let k = cb.pointee.join.peer
        cb.pointee.join.returns = false
        cb.pointee.join.armed = false
        table.block(k)?.pointee.join.returns = false
        return .joinedForLife
    }
}

/// A service address of the balancer (the proxy listens there; the engine never claims its
/// connections for the resilient mode).
public struct ServiceAddress: Hashable, Sendable {
    public var address: IPAddress
    public var port: UInt16
    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }
}
