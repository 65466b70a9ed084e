import SpliceCounters
import SpliceRules
import SpliceWire

/// What the kernel told us about a queued packet, beyond its bytes.
public struct PacketInfo: Sendable {
    /// Netfilter hook (0 PREROUTING, 1 INPUT, 2 FORWARD, 3 OUTPUT, 4 POSTROUTING).
    public var hook: UInt8
    public var mark: UInt32
    /// `NFQA_SKB_CSUMNOTREADY`: the TCP checksum field holds only the pseudo-header sum.
    public var checksumPartial: Bool
    /// `NFQA_SKB_GSO`: a large packet the kernel will segment on the way out.
    public var gso: Bool
    public var inInterface: UInt32
    public var outInterface: UInt32

    public init(hook: UInt8 = 0, mark: UInt32 = 0, checksumPartial: Bool = false, gso: Bool = false,
                inInterface: UInt32 = 0, outInterface: UInt32 = 0) {
        self.hook = hook
        self.mark = mark
        self.checksumPartial = checksumPartial
        self.gso = gso
        self.inInterface = inInterface
        self.outInterface = outInterface
    }
}

/// The verdict engine: no I/O. The daemon feeds it the packets it reads from the queue and
/// returns its verdicts to the kernel; tests feed it crafted packets. Not thread-safe: the
/// daemon serializes calls (it holds the engine in a `Mutex`), hence `@unchecked Sendable`.
public final class Engine: @unchecked Sendable {
    public let table: FlowTable
    public internal(set) var counters = EngineCounters()
    public let started: Timestamp
    /// Which new flows go through the proxy.
    public var policy = SplicePolicy.bypassOnly
    /// The splice rules (the daemon keeps them in step with the proxies' copy): a flow the
    /// policy claims but whose rules decide `splice` or `bypass` from its addresses and port
    /// alone never reaches the proxy (Splice/SpliceMode.swift, `spliceAtOnce`).
    public var rules = RuleSet.empty
    /// The balancer's service addresses, as its proxies registered them (Splice/Join.swift).
    public var services = Set<ServiceAddress>()
    /// The marks shared with the rules.
    public var marks = SpliceMarks()
    /// Where built packets go (released ACKs, replayed SYN-ACKs, held FIN/RST).
    public var injector: (any PacketInjector)?
    /// How long an unannounced FIN or RST from the proxy is held before it is let through.
    public var holdGrace = Timestamp.Duration(deciseconds: 3)
    /// How long a replayed handshake may wait for the proxy's answer: past it, an end's packet
    /// finds the flow moved to bypass (the proxy holds none of its bytes yet). The proxy's
    /// SYN-ACK takes a millisecond; a replay lost on the way is sent again at the ends' next
    /// retries, which the patience leaves room for.
    public var replayPatience = Timestamp.Duration(deciseconds: 30)
    /// The proxy that takes new flows (0: none alive).
    public internal(set) var activeProxy: UInt16 = 0
    /// The proxies that registered service addresses (the balancer's): when one dies, the
    /// joins waiting to return to its sockets are given up (`giveUpReturns`).
    public var balancerProxies = Set<UInt16>()
    /// Built packets are written here (under the engine's lock).
    let buildBuffer: UnsafeMutableRawBufferPointer
    /// A scratch buffer for callers that do not pass their own (tests).
    let ownScratch: UnsafeMutableRawBufferPointer
    /// FIN/RST packets of the proxy held until its liveness is known.
    var held = HeldPackets(capacity: 4096, slotBytes: 2048)
    /// The client's packets that arrived before the proxy's socket facing it was up. A slot
    /// holds a whole first flight as GRO hands it over (an upload's initial window of ten
    /// segments, ~14.5 KB): with 2 KiB slots such packets were dropped and the client sent
    /// them again, segment by segment. 16 MiB of address space, touched as slots are used.
    var pending = HeldPackets(capacity: 1024, slotBytes: 16 << 10)
    /// Joined chunked responses whose end (or loss) the proxy has yet to be told of
    /// (Splice/ChunkedJoin.swift): taken by the control thread.
    var chunkEnds: [ChunkEnd] = []
    var chunkEndsWoken = false
    /// Whether the control thread is to be woken for them: once until it takes them (asked
    /// under the engine's lock, after each packet).
    public func chunkEndsWake() -> Bool {
        guard !chunkEnds.isEmpty, !chunkEndsWoken else { return false }
        chunkEndsWoken = true
        return true
    }

    public static let scratchBytes = 0x10000 + 256

    public init(table: FlowTable, now: Timestamp = Timestamp(deciseconds: 0)) {
        self.table = table
        self.started = now
        buildBuffer = .allocate(byteCount: 256, alignment: 16)
        ownScratch = .allocate(byteCount: Engine.scratchBytes, alignment: 16)
    }

    deinit {
        buildBuffer.deallocate()
        ownScratch.deallocate()
        held.deallocate()
        pending.deallocate()
    }

    /// Netfilter's hook numbers (`enum nf_inet_hooks`).
    public enum Hook {
        public static let preRouting: UInt8 = 0
        public static let localIn: UInt8 = 1
        public static let forward: UInt8 = 2
        public static let localOut: UInt8 = 3
        public static let postRouting: UInt8 = 4
    }

    /// Decides what happens to one queued packet. The packet may be rewritten in place, or
    /// rebuilt into `scratch` (at least `Engine.scratchBytes` long); the verdict says which.
    /// Never traps on malformed input: what cannot be parsed gets the kernel's default verdict
    /// (accept; for the proxy's own packets, which are queued fail-closed, drop).
    public func process(_ buffer: UnsafeMutableRawBufferPointer, scratch: UnsafeMutableRawBufferPointer? = nil,
                        info: PacketInfo, now: Timestamp) -> Verdict {
        counters.packets.total &+= 1
        counters.packets.bytes &+= UInt64(buffer.count)
        let fromProxy = info.hook == Hook.localOut
        let verdict: Verdict
        switch TCPPacket.parse(buffer) {
        case .tcp(let packet):
            counters.packets.tcp &+= 1
            if fromProxy && info.mark == marks.balancer {
                verdict = fromBalancerSocket(packet, info: info, now: now)
            } else if fromProxy {
                verdict = fromProxySocket(packet, info: info, scratch: scratch ?? ownScratch, now: now)
            } else {
                verdict = fromEnd(packet, info: info, scratch: scratch ?? ownScratch, now: now)
            }
        case .notTCP:
            counters.packets.notTCP &+= 1
            if !fromProxy, let tooBig = ICMPTooBig(buffer) {
                verdict = tooBigFromHop(tooBig)
            } else {
                verdict = .accept
            }
        case .fragment:
            counters.packets.fragments &+= 1
            verdict = .accept
        case .malformed:
            counters.packets.malformed &+= 1
            verdict = fromProxy ? .drop : .accept
        }
        switch verdict.action {
        case .accept:
            if verdict.rewrittenLength == nil { counters.verdicts.accept &+= 1 } else { counters.verdicts.acceptModified &+= 1 }
        case .drop: counters.verdicts.drop &+= 1
        case .repeatHook: counters.verdicts.toProxy &+= 1
        }
        return verdict
    }

    /// Periodic work: expires idle flows, `budget` slots at a time; lets held packets go.
    public func tick(now: Timestamp, budget: Int = 4096) {
        counters.flows.expired &+= UInt64(table.expire(now: now, budget: budget))
        releaseHeld(now: now, force: false)
        expirePending(now: now)
    }

    // MARK: Packets from the ends

    func fromEnd(_ p: TCPPacket, info: PacketInfo, scratch: UnsafeMutableRawBufferPointer, now: Timestamp) -> Verdict {
        guard let (e, dir) = track(p, now: now), let b = table.block(e) else { return .accept }
        switch table[e].mode {
        case .resilient:
            if dir == .reply && info.hook == Hook.forward { noteSourceNAT(block: b) }
            let v = resilientFromEnd(p, entry: e, dir: dir, block: b, info: info, scratch: scratch, now: now)
            if b.pointee.resilient.behindSourceNAT && v.action == .repeatHook && v.mark == marks.toProxy {
                return toProxyByInjection(v, packet: p, scratch: scratch)
            }
            return v
        case .spliced:
            return splicedFromEnd(p)
        case .joined:
            return joinedFromEnd(p, entry: e, dir: dir, block: b, info: info, now: now)
        case .bypass where table[e].reason == .proxyDied:
            return afterFailover(p, dir: dir, block: b, info: info)
        default:
            return .accept
        }
    }

    // MARK: Tracking (conntrack-style, all modes)

    /// Follows TCP from an end's packet: finds or creates the flow, updates its state and its
    /// connection block. Nil when the packet belongs to no flow (table full, stray RST).
    /// `local`: a packet of the balancer's own sockets (or one translated onto them): a new
    /// flow it starts is a balancer connection, never claimed for the proxy.
    func track(_ p: TCPPacket, now: Timestamp, local: Bool = false) -> (UInt32, FlowDirection)? {
        let tcp = p.tcp
        guard let (e, dir) = table.lookup(source: p.source, sourcePort: tcp.sourcePort,
                                          destination: p.destination, destinationPort: tcp.destinationPort) else {
            return trackNew(p, now: now, local: local)
        }
        return track(p, entry: e, dir: dir, now: now, local: local)
    }

    /// `track` for a packet whose flow the caller has found already (`e`, in direction `dir`):
    /// no second lookup.
    func track(_ p: TCPPacket, entry e: UInt32, dir: FlowDirection, now: Timestamp, local: Bool) -> (UInt32, FlowDirection)? {
        let tcp = p.tcp
        let flags = tcp.flags
        let state = table[e].state

        // A new SYN from the initiator on a closed flow reopens it (port reuse after TIME_WAIT):
        // a new connection meets the policy and the rules afresh (a spliced flow's must not
        // inherit the old splice: its handshake ACK would carry the splice mark).
        if state.isClosed && dir == .original && flags.contains(.syn) && !flags.contains(.ack) {
            table.remove(e)
            counters.flows.reopened &+= 1
            return trackNew(p, now: now, local: local)
        }

        table[e].lastSeen = now.deciseconds
        table[e].count(bytes: tcp.payloadLength, from: dir)
        table[e].flags.insert(dir == .original ? .seenA : .seenB)
        let block = table.block(e)
        if let b = block { record(tcp, dir: dir, in: b) }

        // What this packet's numbers mean against what is known of the other end.
        var event = TrackEvent(direction: dir, syn: flags.contains(.syn), ack: flags.contains(.ack),
                               fin: flags.contains(.fin), rst: flags.contains(.rst))
        if let b = block, event.ack {
            let ack = tcp.acknowledgmentNumber
            if dir == .original && b.pointee.ends.reply.isnKnown {
                event.completesHandshake = ack == b.pointee.ends.reply.isn + 1
            }
            // (Read through the stored properties: PerDirection's subscript copies the record.)
            let otherFin = dir == .original ? b.pointee.ends.reply.finSeq : b.pointee.ends.original.finSeq
            event.acksOtherFin = ack >= otherFin + 1
        }
        var (next, seen) = Tracking.next(state: state, seen: table[e].flags, event: event)
        // A spliced flow's last ACK skips the queue: once both FINs went by, it is over for the
        // table (TIME_WAIT: evictable when the table is full, reopened by a new SYN). Left in
        // LAST_ACK for its 30 s, flows ending at 12,000 a second filled the table, and a client
        // reusing the port (tcp_tw_reuse) inherited the old connection's splice.
        if next == .lastAck && table[e].mode == .spliced { next = .timeWait }

        // What the block keeps of this packet: the ends' ISNs and options, a FIN's position.
        if let b = block {
            if event.syn && !event.rst {
                if dir == .reply && event.ack && next == .synReceived {
                    b.pointee.ends.reply.isn = tcp.sequenceNumber
                    b.pointee.ends.reply.isnKnown = true
                    b.pointee.ends.reply.options = EndOptions(tcp.options.summary)
                } else if dir == .original && !event.ack && state == .synSent {
                    // Retransmitted SYN: the options may differ (e.g. a SYN retried without them).
                    b.pointee.ends.original.isn = tcp.sequenceNumber
                    b.pointee.ends.original.options = EndOptions(tcp.options.summary)
                }
            } else if event.fin && !event.rst {
                b.pointee.ends[dir].finSeq = tcp.sequenceNumber + UInt32(tcp.payloadLength)
            }
        }
        table[e].flags = seen
        if next != state {
            table[e].state = next
            // seed 004: the block goes at reset and at TIME_WAIT; a resilient flow keeps it
            // until the proxy's last packets are through, a spliced one for its record
            // (released when the entry expires).
            if (next == .close || next == .timeWait) && !table[e].mode.keepsBlock { table.releaseBlock(e) }
        } else if next == .close && !table[e].mode.keepsBlock {
            table.releaseBlock(e)
        }
        return (e, dir)
    }

    /// The first packet of a flow the table does not know.
    func trackNew(_ p: TCPPacket, now: Timestamp, local: Bool = false) -> (UInt32, FlowDirection)? {
        let tcp = p.tcp
        let flags = tcp.flags
        if flags.contains(.rst) {
            counters.packets.untracked &+= 1
            return nil
        }
        let src = p.source, dst = p.destination
        let sport = tcp.sourcePort, dport = tcp.destinationPort
        let initiatorIsSource: Bool
        let state: FlowState
        var pickedUp = false
        if flags.contains(.syn) && !flags.contains(.ack) {
            initiatorIsSource = true
            state = .synSent
        } else if flags.contains(.syn) {
            // A SYN-ACK of a handshake whose SYN we did not see: the destination initiated.
            initiatorIsSource = false
            state = .synReceived
            pickedUp = true
        } else {
            // Mid-stream (e.g. after an engine restart): the lower port is taken as the server's.
            initiatorIsSource = sport > dport || (sport == dport && src.low > dst.low)
            state = .established
            pickedUp = true
        }
        var inserted = initiatorIsSource
            ? table.insert(initiator: src, port: sport, responder: dst, port: dport, now: now)
            : table.insert(initiator: dst, port: dport, responder: src, port: sport, now: now)
        if inserted == nil && table.evictUnconfirmed() {
            counters.flows.earlyDrops &+= 1
            inserted = initiatorIsSource
                ? table.insert(initiator: src, port: sport, responder: dst, port: dport, now: now)
                : table.insert(initiator: dst, port: dport, responder: src, port: sport, now: now)
        }
        guard let e = inserted else {
            counters.flows.tableFull &+= 1
            return nil
        }
        counters.flows.created &+= 1
        table[e].state = state
        let dir: FlowDirection = initiatorIsSource ? .original : .reply
        table[e].count(bytes: tcp.payloadLength, from: dir)
        table[e].flags.insert(dir == .original ? .seenA : .seenB)
        if pickedUp {
            table[e].flags.insert(.pickedUp)
            table[e].reason = .pickedUpMidStream
            counters.flows.pickedUp &+= 1
        }
        if flags.contains(.fin) {
            table[e].flags.insert(dir == .original ? .finA : .finB)
            table[e].state = .finWait
        }
        guard table.attachBlock(e), let b = table.block(e) else {
            counters.flows.blocksExhausted &+= 1
            if state == .synSent && policy.claims(client: src, server: dst, serverPort: dport) {
                table[e].reason = .noBlock
            }
            return (e, dir)
        }
        record(tcp, dir: dir, in: b)
        if flags.contains(.syn) {
            b.pointee.ends[dir].isn = tcp.sequenceNumber
            b.pointee.ends[dir].isnKnown = true
            b.pointee.ends[dir].options = EndOptions(tcp.options.summary)
        }
        if flags.contains(.fin) {
            let seqEnd = tcp.sequenceNumber + UInt32(tcp.payloadLength)
            b.pointee.ends[dir].finSeq = seqEnd
        }
        if local || (state == .synSent && isService(dst, dport)) {
            // The balancer's: its own socket's, or a client's to a service address.
            table[e].mode = .balanced
            table[e].reason = .service
        } else if state == .synSent {
            claimForProxy(e, syn: tcp, block: b)
        }
        return (e, dir)
    }

    /// Updates what the connection block knows from one packet: highest sequence and
    /// acknowledgement numbers, the latest timestamp, packet counts.
    @inline(__always)
    func record(_ tcp: TCPHeader, dir: FlowDirection, in b: UnsafeMutablePointer<ConnectionBlock>) {
        b.pointee.ends.update(dir) { Engine.update(&$0, from: tcp) }
    }

    @inline(__always)
    static func update(_ end: inout EndRecord, from tcp: TCPHeader) {
        let seqEnd = tcp.sequenceNumber + tcp.sequenceLength
        let ack = tcp.acknowledgmentNumber
        end.packets &+= 1
        if end.packets == 1 || seqEnd > end.nextSeq { end.nextSeq = seqEnd }
        if tcp.flags.contains(.ack) {
            if !end.ackSeen || ack > end.ack {
                end.ack = ack
                end.ackSeen = true
            }
            // A SYN-ACK's window is not scaled: not what later ACKs say (RFC 7323 2.2).
            if !tcp.flags.contains(.syn) {
                end.window = tcp.window
                end.windowKnown = true
            }
        }
        if tcp.headerLength > TCPHeader.Field.minimumLength,
           let ts = tcp.options.first(kind: TCPOptionKind.timestamps),
           case .timestamps(let value, _) = tcp.options.value(of: ts) {
            end.tsRecent = value
        }
    }
}

// MARK: Snapshots for the control socket

/// One flow as `splicectl flows` shows it.
public struct FlowSnapshot: Sendable, Equatable {
    public var initiator: IPAddress
    public var initiatorPort: UInt16
    public var responder: IPAddress
    public var responderPort: UInt16
    public var state: FlowState
    public var mode: FlowMode
    public var reason: ModeReason
    public var ageSeconds: Double
    public var idleSeconds: Double
    public var bytesFromInitiator: UInt64
    public var bytesFromResponder: UInt64
    public var hasBlock: Bool
    public var pickedUp: Bool
    public var initiatorOptions: EndOptions?
    public var responderOptions: EndOptions?
    public var phase: ResilientState.Phase
    public var proxyID: UInt16
    /// The proxy's decision, the rule behind it (0: its default) and the splice's progress.
    public var decision: ProxyDecision
    public var ruleID: UInt16
    public var splice: SpliceStage
    public var spliceDrained: Bool
    /// The ends' packets the engine saw, in all, and when the flow was spliced.
    public var packets: UInt64
    public var packetsAtSplice: UInt32
    /// A balancer connection's join, and the far end of the connection it is joined to
    /// (the backend, for the client's connection; the client, for the backend's).
    public var join: JoinStage = .none
    public var joinedTo: String?
    public var joinRule: UInt16 = 0
    /// A one-way join: the direction joined (the other is relayed by the proxy).
    public var joinOneWay: OneWay?
}

extension Engine {
    /// Every flow, for `splicectl flows`.
    public func flows(now: Timestamp) -> [FlowSnapshot] {
        var out: [FlowSnapshot] = []
        out.reserveCapacity(table.count)
        table.forEach { _, e, b in
            out.append(FlowSnapshot(
                initiator: e.addressA, initiatorPort: e.portA, responder: e.addressB, responderPort: e.portB,
                state: e.state, mode: e.mode, reason: e.reason,
                ageSeconds: now.seconds(since: Timestamp(deciseconds: e.created)),
                idleSeconds: now.seconds(since: Timestamp(deciseconds: e.lastSeen)),
                bytesFromInitiator: e.bytesFromA, bytesFromResponder: e.bytesFromB,
                hasBlock: b != nil, pickedUp: e.flags.contains(.pickedUp),
                initiatorOptions: (b?.ends.original.isnKnown ?? false) ? b?.ends.original.options : nil,
                responderOptions: (b?.ends.reply.isnKnown ?? false) ? b?.ends.reply.options : nil,
                phase: b?.resilient.phase ?? .none, proxyID: b?.resilient.proxyID ?? 0,
                decision: b?.resilient.decision ?? .none, ruleID: b?.resilient.ruleID ?? 0,
                splice: b?.resilient.splice ?? .none, spliceDrained: b?.resilient.spliceDrained ?? false,
                packets: (b?.ends.original.packets ?? 0) &+ (b?.ends.reply.packets ?? 0),
                packetsAtSplice: b?.resilient.packetsAtSplice ?? 0))
            if let j = b?.join, j.stage != .none {
                out[out.count - 1].join = j.stage == .joined && e.state == .timeWait ? .waiting : j.stage
                out[out.count - 1].joinRule = j.ruleID
                if j.oneWay != .none {
                    // The client's connection receives a join to the client (its far end is
                    // the destination); the backend's sends it (the source).
                    out[out.count - 1].joinOneWay = j.facesClient == (j.oneWay == .destination) ? .toClient : .toServer
                }
                if j.stage == .joined, let pb = table.block(j.peer), pb.pointee.serial == j.peerSerial {
                    let peer = table[j.peer]
                    // The peer's far end: the backend (responder) for the client's connection.
                    let (a, p) = j.facesClient ? (peer.addressB, peer.portB) : (peer.addressA, peer.portA)
                    out[out.count - 1].joinedTo = a.isIPv4 ? "\(a):\(p)" : "[\(a)]:\(p)"
                }
            }
        }
        return out
    }

    /// Flows per state and per mode.
    public func flowCounts() -> (byState: [FlowState: Int], byMode: [FlowMode: Int]) {
        var s: [FlowState: Int] = [:], m: [FlowMode: Int] = [:]
        table.forEach { _, e, _ in
            s[e.state, default: 0] += 1
            m[e.mode, default: 0] += 1
        }
        return (s, m)
    }
}
