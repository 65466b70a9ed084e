import SpliceWire

// The resilient mode (seed 000, FIG. 2A-2D; ../shared/DESIGN.md "resilient"): the proxy is in
// the path and the ends cannot tell. The handshake is replayed so that the proxy's socket
// facing the client starts at the client's ISN and the one facing the server sees the
// server's ISN; from then on only the proxy's packets are translated, and the proxy's
// acknowledgements never run ahead of the receiver's, so that the proxy can vanish at any
// moment and the ends go on alone.

extension Engine {
    // MARK: Proxies

    /// A proxy registered: it takes new flows from now on.
    public func proxyRegistered(id: UInt16) {
        activeProxy = id
    }

    /// A proxy died (or deregistered): its flows fall back to bypass at once, and what it
    /// left held is discarded. Returns the number of flows moved.
    @discardableResult
    public func proxyGone(id: UInt16) -> Int {
        if activeProxy == id { activeProxy = 0 }
        var moved = 0
        table.forEachIndex { e in
            guard table[e].mode == .resilient, let b = table.block(e), b.pointee.resilient.proxyID == id else { return }
            table[e].mode = .bypass
            table[e].reason = .proxyDied
            moved += 1
        }
        counters.failovers &+= UInt64(moved)
        for i in 0..<held.capacity where held.slots[i].inUse && held.slots[i].proxyID == id {
            held.free(i)
            counters.finRstDiscarded &+= 1
        }
        // The client's packets held for the proxy's socket are the client's own: in bypass
        // they go to the server as they came (their checksum completed).
        for i in 0..<pending.capacity where pending.slots[i].inUse && pending.slots[i].proxyID == id {
            if pendingBelongs(i) {
                let e = pending.slots[i].entry
                if table[e].mode == .bypass { forwardPending(pending.packet(i)) }
                table.block(e)?.pointee.resilient.pendingToProxy = 0
            }
            pending.free(i)
        }
        return moved
    }

    /// An end's packet of a flow whose proxy died: it passes as it came, with one exception.
    /// A packet that waited in the ends' queue while the proxy's translated packets went ahead
    /// (the queues are served in turn, and the ends' queue is the one that builds up) can carry
    /// a TSval older than one the receiver already took from the proxy; the receiver would
    /// drop it (PAWS, RFC 7323 5.3: `PAWSEstab`). Such a TSval is raised to the last one the
    /// proxy showed that receiver: each end's view of the other's clock never goes back across
    /// the failover. Once the sender's clock has passed that value, nothing is changed.
    func afterFailover(_ p: TCPPacket, dir: FlowDirection, block b: UnsafeMutablePointer<ConnectionBlock>,
                       info: PacketInfo) -> Verdict {
        let r = b.pointee.resilient
        let toServer = dir == .original
        guard r.timestamps, toServer ? r.upTSvalShown : r.downTSvalShown,
              p.tcp.headerLength > TCPHeader.Field.minimumLength else { return .accept }
        let floor = toServer ? r.upTSval : r.downTSval
        let tcp = p.tcp
        let options = tcp.options
        guard let o = options.first(kind: TCPOptionKind.timestamps),
              case .timestamps(let value, let echo) = options.value(of: o),
              Int32(bitPattern: floor &- value) > 0 else { return .accept }
        tcp.updateTimestamps(o, value: floor, echo: echo)
        counters.timestampsRaised &+= 1
        var v = Verdict.acceptModified(length: p.bytes.count)
        v.fillChecksum = info.checksumPartial && !info.gso
        return v
    }

    /// The proxy says it is closing its socket toward the client (`towardClient`) or the
    /// server on purpose, with a FIN or (`abortive`) a RST: that kind passes at once, and one
    /// already held is released. Only the announced kind: a proxy that announced a half-close
    /// and then dies still has its RST held and discarded.
    public func proxyCloses(client: IPAddress, clientPort: UInt16, server: IPAddress, serverPort: UInt16,
                            towardClient: Bool, abortive: Bool, now: Timestamp) {
        guard let (e, _) = table.lookup(source: client, sourcePort: clientPort, destination: server,
                                        destinationPort: serverPort),
              let b = table.block(e) else { return }
        let bit = abortive ? ResilientState.intentRST : ResilientState.intentFIN
        if towardClient { b.pointee.resilient.closeIntentDown |= bit } else { b.pointee.resilient.closeIntentUp |= bit }
        guard held.count > 0 else { return }   // nothing held: no scan of the pool per close
        let serial = b.pointee.serial
        for i in 0..<held.capacity where held.slots[i].inUse && held.slots[i].entry == e
            && held.slots[i].serial == serial && held.slots[i].towardClient == towardClient {
            let p = held.packet(i)
            let isRST = TCPPacket(p).map { $0.tcp.flags.contains(.rst) } ?? false
            if isRST == abortive { held.slots[i].deadline = 0 }
        }
        releaseHeld(now: now, force: false)
    }

    /// Lets held packets whose time is up go (if their flow is still the proxy's), or drops
    /// them (if the proxy died meanwhile).
    func releaseHeld(now: Timestamp, force: Bool) {
        guard held.count > 0 else { return }
        for i in 0..<held.capacity where held.slots[i].inUse {
            let slot = held.slots[i]
            guard force || slot.deadline <= now.deciseconds else { continue }
            let e = slot.entry
            let alive = table[e].state != .free && table[e].mode == .resilient
                && table.block(e)?.pointee.serial == slot.serial && table.block(e)?.pointee.resilient.proxyID == slot.proxyID
            if alive {
                inject(UnsafeRawBufferPointer(held.packet(i)), local: false)
                counters.finRstReleased &+= 1
            } else {
                counters.finRstDiscarded &+= 1
            }
            held.free(i)
        }
    }

    func inject(_ packet: UnsafeRawBufferPointer, local: Bool) {
        guard let injector else {
            counters.injectionFailures &+= 1
            return
        }
        injector.inject(packet, toLocalSocket: local)
    }

    // MARK: A new flow

    /// Called for a new flow's SYN: resilient if the policy claims it and a proxy is alive.
    func claimForProxy(_ e: UInt32, syn: TCPHeader, block b: UnsafeMutablePointer<ConnectionBlock>) {
        let entry = table[e]
        guard policy.claims(client: entry.addressA, server: entry.addressB, serverPort: entry.portB) else { return }
        guard activeProxy != 0 else {
            table[e].reason = .noProxy
            return
        }
        table[e].mode = .resilient
        table[e].reason = .policy
        counters.resilientFlows &+= 1
        b.pointee.resilient.phase = .clientSyn
        b.pointee.resilient.proxyID = activeProxy
        b.pointee.resilient.clientSynWindow = syn.window
        if let ts = timestampsOption(syn) { b.pointee.resilient.clientSynTSval = ts.value }
    }

    // MARK: Packets from the ends (PREROUTING)

    func resilientFromEnd(_ p: TCPPacket, entry e: UInt32, dir: FlowDirection,
                          block b: UnsafeMutablePointer<ConnectionBlock>, info: PacketInfo,
                          scratch: UnsafeMutableRawBufferPointer, now: Timestamp) -> Verdict {
        let tcp = p.tcp
        let flags = tcp.flags
        let phase = b.pointee.resilient.phase

        if flags.contains(.rst) {
            // The other end gets the reset as it would without us; the proxy's socket is told too.
            if phase >= .downEstablished { resetProxySocket(p, entry: e, dir: dir, block: b) }
            return .accept
        }

        if dir == .reply {
            if flags.contains(.syn) {
                guard flags.contains(.ack) else { return .drop }   // a simultaneous open: not ours to replay
                switch phase {
                case .clientSyn, .serverSynAck:
                    // To the client untouched, as without us: the proxy hears of the flow only
                    // once the client's ACK shows the client exists.
                    learnServerSynAck(p.tcp, block: b)
                    return .accept
                case .synToProxy:
                    // The proxy has not answered the SYN it was given (lost on the way, its
                    // queue full): the server's retry sends it again.
                    return replaySynToProxy(entry: e, block: b, scratch: scratch)
                case .downEstablished:
                    return .drop   // the proxy has not connected upstream yet; the server will retry
                case .upstreamAnswered, .established:
                    break          // a retransmitted SYN-ACK: the up socket answers it with an ACK
                case .none:
                    return .accept
                }
            } else if phase < .upstreamAnswered {
                return .drop
            }
            translateTowardProxy(p, delta: b.pointee.resilient.deltaUp, tsDelta: b.pointee.resilient.tsUp,
                                 shiftFrom: b.pointee.resilient.shiftServer,
                                 shiftTo: b.pointee.resilient.shiftServerAtProxy)
            releaseAckToClient(entry: e, block: b)
            // A packet for a local socket needs a complete checksum (KERNEL-NOTES.md).
            return .toProxy(length: p.bytes.count, mark: marks.toProxy, fillChecksum: info.checksumPartial)
        }

        // From the client.
        if flags.contains(.syn) {
            guard phase == .clientSyn || phase == .serverSynAck else { return .drop }
            // A retransmitted SYN: the server will hold its TSval as the latest; the replay
            // must start from it too, or the proxy's translated ACK would look old (PAWS).
            b.pointee.resilient.clientSynWindow = tcp.window
            if let ts = timestampsOption(tcp) { b.pointee.resilient.clientSynTSval = ts.value }
            return .accept
        }
        switch phase {
        case .none:
            return .drop
        case .clientSyn:
            // The client answers a SYN-ACK we never saw (it went by unseen, e.g. past a full
            // handshake queue under a SYN flood): the proxy cannot join; the flow goes on alone.
            table[e].mode = .bypass
            table[e].reason = .handshakeUnseen
            return .accept
        case .serverSynAck:
            // The handshake's last ACK: the client exists. It becomes the SYN to the proxy.
            guard flags.contains(.ack), tcp.acknowledgmentNumber == b.pointee.isnB + 1 else { return .drop }
            b.pointee.resilient.clientAckWindow = tcp.window
            b.pointee.resilient.clientAckTSval = timestampsOption(tcp)?.value ?? 0
            if tcp.payloadLength > 0 || flags.contains(.fin) { holdForProxy(p, entry: e, block: b, now: now) }
            counters.clientsValidated &+= 1
            return replaySynToProxy(entry: e, block: b, scratch: scratch)
        case .synToProxy:
            // The proxy's socket is not up yet: data waits for it. A pure ACK is the client
            // saying its handshake again (its data unanswered): the SYN may have been lost, so
            // it is sent again in the ACK's place.
            if tcp.payloadLength > 0 || flags.contains(.fin) {
                holdForProxy(p, entry: e, block: b, now: now)
                return .drop
            }
            return replaySynToProxy(entry: e, block: b, scratch: scratch)
        case .downEstablished, .upstreamAnswered, .established:
            break
        }
        translateTowardProxy(p, delta: b.pointee.resilient.deltaDown, tsDelta: b.pointee.resilient.tsDown,
                             shiftFrom: b.pointee.resilient.shiftClient,
                             shiftTo: b.pointee.resilient.shiftClientAtProxy)
        releaseAckToServer(entry: e, block: b)
        return .toProxy(length: p.bytes.count, mark: marks.toProxy, fillChecksum: info.checksumPartial)
    }

    /// What the server's SYN-ACK tells (FIG. 2A): its window and clock, and which options
    /// both ends negotiated, for the SYN replayed to the proxy later.
    func learnServerSynAck(_ tcp: TCPHeader, block b: UnsafeMutablePointer<ConnectionBlock>) {
        let summary = tcp.options.summary
        let client = b.pointee.optionsA
        var r = b.pointee.resilient
        r.serverSynAckWindow = tcp.window
        r.serverSynAckTSval = summary.timestamps?.value ?? 0
        r.windowScaling = client.windowScale != 0xff && summary.windowScale != nil
        r.sack = client.sackPermitted && summary.sackPermitted
        r.timestamps = client.timestamps && summary.timestamps != nil
        r.shiftClient = r.windowScaling ? min(client.windowScale, 14) : 0
        r.shiftServer = r.windowScaling ? min(summary.windowScale ?? 0, 14) : 0
        r.phase = .serverSynAck
        b.pointee.resilient = r
    }

    /// FIG. 2A-2B: a SYN to the proxy, from the client, with the client's ISN and the options
    /// both ends negotiated, built into `scratch` in place of the client's ACK.
    func replaySynToProxy(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>,
                          scratch: UnsafeMutableRawBufferPointer) -> Verdict {
        var r = b.pointee.resilient
        let client = b.pointee.optionsA
        let options = SynOptions(
            maximumSegmentSize: client.maximumSegmentSize == 0 ? nil : client.maximumSegmentSize,
            windowScale: r.windowScaling ? client.windowScale : nil,
            sackPermitted: r.sack,
            timestamps: r.timestamps ? TCPTimestamps(value: r.clientSynTSval, echo: 0) : nil)
        let entry = table[e]
        guard let n = TCPSegmentWriter.write(
            into: scratch, source: entry.addressA, destination: entry.addressB,
            sourcePort: entry.portA, destinationPort: entry.portB,
            sequenceNumber: b.pointee.isnA, acknowledgmentNumber: SeqNumber(0), flags: .syn,
            window: r.clientSynWindow, options: .syn(options)) else {
            table[e].mode = .bypass
            table[e].reason = .replayFailed
            return .accept
        }
        r.phase = .synToProxy
        b.pointee.resilient = r
        counters.handshakeReplays &+= 1
        return .toProxy(length: n, inScratch: true, mark: marks.toProxy)
    }

    // MARK: The client's packets that came before the proxy's socket was up

    /// How long a client's packet waits for the proxy's socket before it is dropped (the
    /// client sends it again).
    static let pendingLifetime = Timestamp.Duration(deciseconds: 30)
    /// The client's packets held for one flow at most (its first window, more than enough).
    static let pendingPerFlow: UInt8 = 64

    /// Keeps a copy of the client's packet until the proxy's socket facing it is up.
    func holdForProxy(_ p: TCPPacket, entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>, now: Timestamp) {
        if b.pointee.resilient.pendingToProxy < Engine.pendingPerFlow,
           pending.hold(UnsafeRawBufferPointer(p.bytes), entry: e, serial: b.pointee.serial,
                        proxyID: b.pointee.resilient.proxyID, towardClient: false,
                        deadline: now.deciseconds &+ Engine.pendingLifetime.deciseconds) {
            b.pointee.resilient.pendingToProxy &+= 1
            counters.pendingHeld &+= 1
        } else {
            counters.pendingDropped &+= 1
        }
    }

    /// Whether pending slot `i` still belongs to the flow it was held for.
    func pendingBelongs(_ i: Int) -> Bool {
        let slot = pending.slots[i]
        return table[slot.entry].state != .free && table.block(slot.entry)?.pointee.serial == slot.serial
    }

    /// A held client packet for the wire, unchanged but for a complete checksum.
    func forwardPending(_ packet: UnsafeMutableRawBufferPointer) {
        guard let p = TCPPacket(packet) else { return }
        p.fillChecksum()
        inject(UnsafeRawBufferPointer(packet), local: false)
    }

    /// The proxy's socket facing the client is up: its held packets go to it, translated.
    func releasePending(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) {
        guard b.pointee.resilient.pendingToProxy > 0 else { return }
        let r = b.pointee.resilient
        for i in 0..<pending.capacity where pending.slots[i].inUse && pending.slots[i].entry == e {
            guard pendingBelongs(i) else { continue }
            let packet = pending.packet(i)
            if let p = TCPPacket(packet) {
                translateTowardProxy(p, delta: r.deltaDown, tsDelta: r.tsDown,
                                     shiftFrom: r.shiftClient, shiftTo: r.shiftClientAtProxy)
                p.fillChecksum()
                inject(UnsafeRawBufferPointer(packet), local: true)
            }
            pending.free(i)
        }
        b.pointee.resilient.pendingToProxy = 0
    }

    /// Forgets the held client packets of a flow.
    func discardPending(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) {
        guard b.pointee.resilient.pendingToProxy > 0 else { return }
        for i in 0..<pending.capacity where pending.slots[i].inUse && pending.slots[i].entry == e && pendingBelongs(i) {
            pending.free(i)
            counters.pendingDropped &+= 1
        }
        b.pointee.resilient.pendingToProxy = 0
    }

    /// Drops held client packets that waited too long, or whose flow is gone.
    func expirePending(now: Timestamp) {
        guard pending.count > 0 else { return }
        for i in 0..<pending.capacity where pending.slots[i].inUse {
            let belongs = pendingBelongs(i)
            guard !belongs || pending.slots[i].deadline <= now.deciseconds else { continue }
            if belongs, let b = table.block(pending.slots[i].entry), b.pointee.resilient.pendingToProxy > 0 {
                b.pointee.resilient.pendingToProxy -= 1
            }
            pending.free(i)
            counters.pendingDropped &+= 1
        }
    }

    /// Rewrites an end's packet for the proxy's socket: acknowledgement numbers and SACK edges
    /// into the proxy's space, TSecr back into the proxy's clock, the window into the scale
    /// the proxy's socket reads.
    func translateTowardProxy(_ p: TCPPacket, delta: UInt32, tsDelta: UInt32, shiftFrom: UInt8, shiftTo: UInt8) {
        let tcp = p.tcp
        let back = Int32(bitPattern: 0 &- delta)
        if tcp.flags.contains(.ack) {
            tcp.updateAcknowledgmentNumber(tcp.acknowledgmentNumber.advanced(by: back))
        }
        if shiftFrom != shiftTo { tcp.updateWindow(Engine.rescale(tcp.window, from: shiftFrom, to: shiftTo)) }
        if tcp.headerLength > TCPHeader.Field.minimumLength {
            let options = tcp.options
            for o in options {
                switch options.value(of: o) {
                case .timestamps(let value, let echo):
                    if echo != 0 { tcp.updateTimestamps(o, value: value, echo: echo &- tsDelta) }
                case .sack:
                    tcp.shiftSACKBlocks(o, by: back)
                default: break
                }
            }
        }
    }

    /// Tells the proxy's socket of an end's reset (injected to the local socket).
    func resetProxySocket(_ p: TCPPacket, entry e: UInt32, dir: FlowDirection, block b: UnsafeMutablePointer<ConnectionBlock>) {
        let r = b.pointee.resilient
        let entry = table[e]
        let tcp = p.tcp
        // From the server: to the up socket (acks in its space); from the client: to the down socket.
        let fromServer = dir == .reply
        if fromServer && r.phase < .upstreamAnswered { return }
        let delta = fromServer ? r.deltaUp : r.deltaDown
        // At the socket's next expected byte (what it last acknowledged, unclamped): a reset
        // anywhere else is only challenged (RFC 5961), and the end's reset may answer an ACK
        // that was clamped below that point.
        let received = fromServer ? r.proxyUpAck : r.proxyDownAck
        let seq = tcp.sequenceNumber < received ? received : tcp.sequenceNumber
        let ack = tcp.flags.contains(.ack) ? tcp.acknowledgmentNumber.advanced(by: Int32(bitPattern: 0 &- delta)) : SeqNumber(0)
        guard let n = TCPSegmentWriter.write(
            into: buildBuffer,
            source: fromServer ? entry.addressB : entry.addressA, destination: fromServer ? entry.addressA : entry.addressB,
            sourcePort: fromServer ? entry.portB : entry.portA, destinationPort: fromServer ? entry.portA : entry.portB,
            sequenceNumber: seq, acknowledgmentNumber: ack, flags: tcp.flags.intersection([.rst, .ack]),
            window: 0, options: .none) else { return }
        inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), local: true)
    }

    // MARK: Packets of the proxy's sockets (OUTPUT, queued fail-closed)

    func fromProxySocket(_ p: TCPPacket, info: PacketInfo, scratch: UnsafeMutableRawBufferPointer, now: Timestamp) -> Verdict {
        let tcp = p.tcp
        guard let (e, dir) = table.lookup(source: p.source, sourcePort: tcp.sourcePort,
                                          destination: p.destination, destinationPort: tcp.destinationPort),
              table[e].mode == .resilient, let b = table.block(e) else {
            // No flow the proxy may speak for: its packets carry its own sequence space and must
            // never reach the wire (unknown after an engine restart, bypassed after its death).
            counters.proxyPacketsDropped &+= 1
            return .drop
        }
        table[e].lastSeen = now.deciseconds
        if dir == .reply {
            return fromDownSocket(p, entry: e, block: b, info: info, scratch: scratch, now: now)
        }
        return fromUpSocket(p, entry: e, block: b, info: info, now: now)
    }

    /// The socket facing the client: its SYN-ACK is answered with the client's ACK (the client
    /// has the server's SYN-ACK already); its data and ACKs get the server's sequence numbers,
    /// window scale and clock, its ACKs clamped (FIG. 2C).
    func fromDownSocket(_ p: TCPPacket, entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>,
                        info: PacketInfo, scratch: UnsafeMutableRawBufferPointer, now: Timestamp) -> Verdict {
        let tcp = p.tcp
        let flags = tcp.flags
        var r = b.pointee.resilient
        if flags.contains(.syn) {
            guard flags.contains(.ack), r.phase == .synToProxy || r.phase == .downEstablished else {
                counters.proxyPacketsDropped &+= 1
                return .drop
            }
            guard tcp.acknowledgmentNumber == b.pointee.isnA + 1 else {
                counters.proxyPacketsDropped &+= 1
                return .drop
            }
            let entry = table[e]
            if entry.state == .close {
                // The client reset the flow while the proxy was answering: its half-open socket
                // is reset too, and the client's held packets go nowhere.
                if let n = TCPSegmentWriter.write(
                    into: buildBuffer, source: entry.addressA, destination: entry.addressB,
                    sourcePort: entry.portA, destinationPort: entry.portB,
                    sequenceNumber: b.pointee.isnA + 1, acknowledgmentNumber: SeqNumber(0), flags: .rst,
                    window: 0, options: .none) {
                    inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), local: true)
                }
                discardPending(entry: e, block: b)
                counters.proxyPacketsDropped &+= 1
                return .drop
            }
            let summary = tcp.options.summary
            let proxyTS = summary.timestamps
            if r.phase == .synToProxy {
                r.proxyDownISN = tcp.sequenceNumber
                r.deltaDown = b.pointee.isnB.rawValue &- tcp.sequenceNumber.rawValue
                r.tsDown = r.serverSynAckTSval &- (proxyTS?.value ?? 0)
                if r.windowScaling, let ws = summary.windowScale {
                    r.shiftProxyDown = min(ws, 14)
                    r.shiftClientAtProxy = r.shiftClient
                } else {
                    r.shiftProxyDown = 0
                    r.shiftClientAtProxy = 0
                }
                r.phase = .downEstablished
                r.ackToClient = b.pointee.isnA + 1
                r.proxyDownAck = b.pointee.isnA + 1
                r.downSeqNext = b.pointee.isnB + 1
                r.windowToClient = r.serverSynAckWindow
                r.downTSval = r.serverSynAckTSval
                r.downTSvalShown = true
                r.downTSecr = proxyTS?.echo ?? 0
                b.pointee.resilient = r
            }
            // The handshake's last ACK, as the client sent it (its window, its clock) with the
            // proxy's TSval echoed; a retransmitted SYN-ACK (that ACK was lost) gets it again.
            if let n = TCPSegmentWriter.write(
                into: buildBuffer, source: entry.addressA, destination: entry.addressB,
                sourcePort: entry.portA, destinationPort: entry.portB,
                sequenceNumber: b.pointee.isnA + 1, acknowledgmentNumber: tcp.sequenceNumber + 1, flags: .ack,
                window: r.clientAckWindow,
                options: r.timestamps ? .timestamps(TCPTimestamps(value: r.clientAckTSval, echo: proxyTS?.value ?? 0)) : .none) {
                inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), local: true)
            }
            releasePending(entry: e, block: b)
            counters.handshakeReplays &+= 1
            return .drop
        }
        guard r.phase >= .downEstablished else {
            counters.proxyPacketsDropped &+= 1
            return .drop
        }
        // What the server has acknowledged of the client's data (client space): the clamp.
        let serverAck = b.pointee.ackSeenB ? b.pointee.ackB : b.pointee.isnA + 1
        let verdict = translateFromProxy(
            p, entry: e, block: b, state: &r, delta: r.deltaDown, tsDelta: r.tsDown,
            shiftFrom: r.shiftProxyDown, shiftTo: r.shiftServer, clamp: serverAck,
            towardClient: true, partial: info.checksumPartial, gso: info.gso, now: now)
        b.pointee.resilient = r
        return verdict
    }

    /// The socket facing the server (bound to the client's address and port): its SYN is
    /// answered with the server's ISN; its ACK and data go on as the client's.
    func fromUpSocket(_ p: TCPPacket, entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>,
                      info: PacketInfo, now: Timestamp) -> Verdict {
        let tcp = p.tcp
        let flags = tcp.flags
        var r = b.pointee.resilient
        if flags.contains(.syn) {
            guard !flags.contains(.ack), r.phase == .downEstablished || r.phase == .upstreamAnswered else {
                counters.proxyPacketsDropped &+= 1
                return .drop
            }
            let summary = tcp.options.summary
            r.proxyUpISN = tcp.sequenceNumber
            r.deltaUp = b.pointee.isnA.rawValue &- tcp.sequenceNumber.rawValue
            r.tsUp = r.clientSynTSval &- (summary.timestamps?.value ?? 0)
            let server = b.pointee.optionsB
            let scaling = server.windowScale != 0xff && summary.windowScale != nil
            r.shiftProxyUp = scaling ? min(summary.windowScale ?? 0, 14) : 0
            r.shiftServerAtProxy = scaling ? r.shiftServer : 0
            let ts = server.timestamps && summary.timestamps != nil
            let options = SynOptions(
                maximumSegmentSize: server.maximumSegmentSize == 0 ? nil : server.maximumSegmentSize,
                windowScale: scaling ? server.windowScale : nil,
                sackPermitted: server.sackPermitted && summary.sackPermitted,
                timestamps: ts ? TCPTimestamps(value: r.serverSynAckTSval, echo: summary.timestamps?.value ?? 0) : nil)
            let entry = table[e]
            if let n = TCPSegmentWriter.write(
                into: buildBuffer, source: entry.addressB, destination: entry.addressA,
                sourcePort: entry.portB, destinationPort: entry.portA,
                sequenceNumber: b.pointee.isnB, acknowledgmentNumber: tcp.sequenceNumber + 1, flags: [.syn, .ack],
                window: r.serverSynAckWindow, options: .syn(options)) {
                inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), local: true)
            }
            if r.phase == .downEstablished {
                r.phase = .upstreamAnswered
                r.ackToServer = b.pointee.isnB          // so that the proxy's handshake ACK goes through
                r.proxyUpAck = b.pointee.isnB + 1
                r.upSeqNext = b.pointee.isnA + 1
                r.windowToServer = 0
            }
            b.pointee.resilient = r
            counters.handshakeReplays &+= 1
            return .drop
        }
        guard r.phase >= .upstreamAnswered else {
            counters.proxyPacketsDropped &+= 1
            return .drop
        }
        // What the client has acknowledged of the server's data (server space): the clamp.
        let clientAck = b.pointee.ackSeenA ? b.pointee.ackA : b.pointee.isnB + 1
        if r.phase == .upstreamAnswered && flags.contains(.ack) && tcp.acknowledgmentNumber == b.pointee.isnB + 1 {
            r.phase = .established
        }
        let verdict = translateFromProxy(
            p, entry: e, block: b, state: &r, delta: r.deltaUp, tsDelta: r.tsUp,
            shiftFrom: r.shiftProxyUp, shiftTo: r.shiftClient, clamp: clientAck,
            towardClient: false, partial: info.checksumPartial, gso: info.gso, now: now)
        b.pointee.resilient = r
        return verdict
    }

    /// The common part of both sockets' data path.
    func translateFromProxy(_ p: TCPPacket, entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>,
                            state r: inout ResilientState, delta: UInt32, tsDelta: UInt32,
                            shiftFrom: UInt8, shiftTo: UInt8, clamp: SeqNumber, towardClient: Bool,
                            partial: Bool, gso: Bool, now: Timestamp) -> Verdict {
        let tcp = p.tcp
        let flags = tcp.flags
        let newSeq = tcp.sequenceNumber + delta
        let end = newSeq + tcp.sequenceLength

        // Both ends have closed and acknowledged each other's FIN: a RST now is the proxy's
        // listener answering a late segment for a socket that is gone (a FIN the server sent
        // again while its ACK waited for the client's). The ends need nothing more.
        if flags.contains(.rst) && table[e].state == .timeWait {
            counters.finRstDiscarded &+= 1
            return .drop
        }
        // An unannounced FIN or RST may be the kernel closing a dead proxy's socket.
        if flags.contains(.rst) || flags.contains(.fin) {
            let intent = towardClient ? r.closeIntentDown : r.closeIntentUp
            let announced = flags.contains(.rst) ? intent & ResilientState.intentRST != 0
                                                 : intent & ResilientState.intentFIN != 0
            let fl = table[e].flags
            // A FIN that relays the other end's FIN at the same place is the proxy doing its job.
            let relayed = flags.contains(.fin) && !flags.contains(.rst) && (towardClient
                ? fl.contains(.finB) && b.pointee.finSeqB == newSeq + UInt32(tcp.payloadLength)
                : fl.contains(.finA) && b.pointee.finSeqA == newSeq + UInt32(tcp.payloadLength))
            let graceOver = r.holding && now.deciseconds >= r.holdSince &+ holdGrace.deciseconds
            if graceOver { r.holding = false }   // this burst of closes is through; the next is held again
            if !announced && !relayed && !graceOver {
                if !r.holding {
                    r.holding = true
                    r.holdSince = now.deciseconds
                }
                rewriteFromProxy(p, state: &r, newSeq: newSeq, delta: delta, tsDelta: tsDelta, shiftFrom: shiftFrom,
                                 shiftTo: shiftTo, clamp: clamp, towardClient: towardClient)
                if partial { p.fillChecksum() }   // it will be injected as it is
                if held.hold(UnsafeRawBufferPointer(p.bytes), entry: e, serial: b.pointee.serial,
                             proxyID: r.proxyID, towardClient: towardClient,
                             deadline: r.holdSince &+ holdGrace.deciseconds) {
                    counters.finRstHeld &+= 1
                } else {
                    counters.finRstHoldFailed &+= 1
                }
                return .drop
            }
        }

        let clampedAck = rewriteFromProxy(p, state: &r, newSeq: newSeq, delta: delta, tsDelta: tsDelta,
                                          shiftFrom: shiftFrom, shiftTo: shiftTo, clamp: clamp,
                                          towardClient: towardClient)
        counters.fromProxyTranslated &+= 1
        let told = towardClient ? r.ackToClient : r.ackToServer
        let windowTold = towardClient ? r.windowToClient : r.windowToServer
        let pureAck = tcp.payloadLength == 0 && !flags.contains(.syn) && !flags.contains(.fin) && !flags.contains(.rst)
        if pureAck && (clampedAck.map { $0 <= told } ?? true) && tcp.window == windowTold && !hasSACK(tcp) {
            counters.acksSuppressed &+= 1
            return .drop
        }
        if let a = clampedAck, a > told {
            if towardClient { r.ackToClient = a } else { r.ackToServer = a }
        }
        if towardClient {
            r.windowToClient = tcp.window
            if end > r.downSeqNext { r.downSeqNext = end }
        } else {
            r.windowToServer = tcp.window
            if end > r.upSeqNext { r.upSeqNext = end }
        }
        // A small packet whose field held only the pseudo-header sum needs a full checksum; a
        // large (GSO) one leaving through an interface is segmented and checksummed again by
        // the kernel whatever its field holds (KERNEL-NOTES.md): no full sum over 64 KiB.
        var v = Verdict.acceptModified(length: p.bytes.count)
        v.fillChecksum = partial && !gso
        return v
    }

    /// Rewrites a proxy packet in place into the ends' space; returns the clamped ACK.
    @discardableResult
    func rewriteFromProxy(_ p: TCPPacket, state r: inout ResilientState, newSeq: SeqNumber, delta: UInt32,
                          tsDelta: UInt32, shiftFrom: UInt8, shiftTo: UInt8, clamp: SeqNumber,
                          towardClient: Bool) -> SeqNumber? {
        let tcp = p.tcp
        tcp.updateSequenceNumber(newSeq)
        var clamped: SeqNumber?
        if tcp.flags.contains(.ack) {
            let ack = tcp.acknowledgmentNumber
            if towardClient { if ack > r.proxyDownAck { r.proxyDownAck = ack } }
            else { if ack > r.proxyUpAck { r.proxyUpAck = ack } }
            let a = SeqNumber.earliest(ack, clamp)
            if a != ack {
                tcp.updateAcknowledgmentNumber(a)
                counters.acksClamped &+= 1
            }
            clamped = a
        }
        if shiftFrom != shiftTo { tcp.updateWindow(Engine.rescale(tcp.window, from: shiftFrom, to: shiftTo)) }
        if tcp.headerLength > TCPHeader.Field.minimumLength {
            let options = tcp.options
            for o in options {
                if case .timestamps(let value, let echo) = options.value(of: o) {
                    let v = value &+ tsDelta
                    tcp.updateTimestamps(o, value: v, echo: echo)
                    if towardClient { r.downTSval = v; r.downTSecr = echo; r.downTSvalShown = true }
                    else { r.upTSval = v; r.upTSecr = echo; r.upTSvalShown = true }
                }
            }
        }
        return clamped
    }

    // MARK: Releasing acknowledgements (FIG. 2C, messages 30-33)

    /// The server acknowledged more of the client's data: tell the client, up to what the
    /// proxy has acknowledged too, with an ACK in the down socket's (translated) state.
    func releaseAckToClient(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) {
        var r = b.pointee.resilient
        guard r.phase >= .downEstablished, b.pointee.ackSeenB else { return }
        let candidate = SeqNumber.earliest(b.pointee.ackB, r.proxyDownAck)
        guard candidate > r.ackToClient else { return }
        let entry = table[e]
        guard let n = TCPSegmentWriter.write(
            into: buildBuffer, source: entry.addressB, destination: entry.addressA,
            sourcePort: entry.portB, destinationPort: entry.portA,
            sequenceNumber: r.downSeqNext, acknowledgmentNumber: candidate, flags: .ack, window: r.windowToClient,
            options: r.timestamps ? .timestamps(TCPTimestamps(value: r.downTSval, echo: r.downTSecr)) : .none) else { return }
        r.ackToClient = candidate
        b.pointee.resilient = r
        counters.acksInjected &+= 1
        inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), local: false)
    }

    /// The client acknowledged more of the server's data: tell the server.
    func releaseAckToServer(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) {
        var r = b.pointee.resilient
        guard r.phase == .established, b.pointee.ackSeenA else { return }
        let candidate = SeqNumber.earliest(b.pointee.ackA, r.proxyUpAck)
        guard candidate > r.ackToServer else { return }
        let entry = table[e]
        guard let n = TCPSegmentWriter.write(
            into: buildBuffer, source: entry.addressA, destination: entry.addressB,
            sourcePort: entry.portA, destinationPort: entry.portB,
            sequenceNumber: r.upSeqNext, acknowledgmentNumber: candidate, flags: .ack, window: r.windowToServer,
            options: r.timestamps ? .timestamps(TCPTimestamps(value: r.upTSval, echo: r.upTSecr)) : .none) else { return }
        r.ackToServer = candidate
        b.pointee.resilient = r
        counters.acksInjected &+= 1
        inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), local: false)
    }

    // MARK: Helpers

    /// A window advertised with one scale, as a receiver expecting another must read it.
    @inline(__always)
    static func rescale(_ window: UInt16, from: UInt8, to: UInt8) -> UInt16 {
        let real = UInt64(window) << UInt64(from)
        let v = real >> UInt64(to)
        return v > 0xffff ? 0xffff : UInt16(v)
    }

    func timestampsOption(_ tcp: TCPHeader) -> TCPTimestamps? {
        guard tcp.headerLength > TCPHeader.Field.minimumLength else { return nil }
        return tcp.options.summary.timestamps
    }

    func hasSACK(_ tcp: TCPHeader) -> Bool {
        guard tcp.headerLength > TCPHeader.Field.minimumLength else { return false }
        return tcp.options.first(kind: TCPOptionKind.sack) != nil
    }
}
