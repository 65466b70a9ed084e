import SpliceWire

// The resilient mode (seed 000, FIG. 2A-2D; ../shared/DESIGN.md "resilient"): the proxy is in
// the path and the ends cannot tell. The handshake is replayed so that the proxy's socket
// facing the client starts at the client's ISN and the one facing the server sees the
// server's ISN; from then on only the proxy's packets are translated, and the proxy's
// acknowledgements never run ahead of the receiver's, so that the proxy can vanish at any
// moment and the ends go on alone.
//
// The mode's files, one job each:
//   ResilientMode.swift    this file: where the engine hands a resilient flow's packets over
//   ResilientState.swift   what the connection block keeps for the mode
//   HandshakeReplay.swift  the client proven by its ACK, the SYN replayed to the proxy
//   (../Splice/RequestDecision.swift  or first its request read by the engine, for the rules)
//   EarlyData.swift        the client's packets that came before the proxy's socket was up
//   ProxySockets.swift     the proxy's two sockets: their handshakes, then their data
//   Translation.swift      sequence, acknowledgement, window, timestamp and SACK rewriting
//   AckClamp.swift         acknowledgements released to a sender as its receiver catches up
//   HeldCloses.swift       the proxy's unannounced FIN/RST, held until its liveness is known
//   Failover.swift         proxies registering and dying; the ends' packets after a failover

extension Engine {
    /// An end's packet of a resilient flow (PREROUTING, the ends' queue): the handshake's
    /// steps, then the packet translated for the proxy's socket and handed to it (NF_REPEAT
    /// with the proxy mark, TPROXY delivers it), releasing the ACK its sender waits for.
    func resilientFromEnd(_ p: TCPPacket, entry e: UInt32, dir: FlowDirection,
                          block b: UnsafeMutablePointer<ConnectionBlock>, info: PacketInfo,
                          scratch: UnsafeMutableRawBufferPointer, now: Timestamp) -> Verdict {
        let tcp = p.tcp
        let flags = tcp.flags
        let phase = b.pointee.resilient.phase

        if flags.contains(.rst) {
            // The other end gets the reset as it would without us; the proxy's socket is told too.
            if phase >= .downEstablished { resetProxySocket(p, entry: e, going: dir, block: b) }
            return .accept
        }
        if abandonReplayIfLate(entry: e, block: b, now: now) { return .accept }
        // Its marking, for the proxy's packets in its name (QoS past the router sees the
        // ends' DSCP, as without us).
        b.pointee.resilient.proxy[dir].dscp = p.dscp

        if dir == .reply {
            if flags.contains(.syn) {
                guard flags.contains(.ack) else { return .drop }   // a simultaneous open: not ours to replay
                switch phase {
                case .clientSyn, .serverSynAck:
                    // To the client untouched, as without us: the proxy hears of the flow only
                    // once the client's ACK shows the client exists.
                    learnServerSynAck(p.tcp, block: b)
                    return .accept
                case .awaitingRequest:
                    // The server, still waiting for the client's ACK the engine holds, tries again.
                    return serverRetryAwaitingRequest(entry: e, block: b, scratch: scratch, now: now)
                case .synToProxy:
                    // The proxy has not answered the SYN it was given (lost on the way, its
                    // queue full): the server's retry sends it again.
                    return replaySynToProxy(entry: e, block: b, scratch: scratch, now: now)
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
        } else if flags.contains(.syn) {
            // From the client: its SYN.
            guard phase == .clientSyn || phase == .serverSynAck else { return .drop }
            // A retransmitted SYN: the server will hold its TSval as the latest; the replay
            // must start from it too, or the proxy's translated ACK would look old (PAWS).
            b.pointee.resilient.clientSynWindow = tcp.window
            if let ts = timestampsOption(tcp) { b.pointee.resilient.clientSynTSval = ts.value }
            // Fast Open: data in the SYN would reach the server before the proxy's socket
            // exists, and past the rules that read the request. The server gets the SYN without
            // it; the client sends the data again right after the handshake.
            if let n = p.removingFastOpen(partial: info.checksumPartial) {
                b.pointee.ends.original.nextSeq = tcp.sequenceNumber + 1
                counters.resilient.fastOpenRemoved &+= 1
                return .acceptModified(length: n)
            }
            return .accept
        } else {
            // From the client.
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
                guard flags.contains(.ack), tcp.acknowledgmentNumber == b.pointee.ends.reply.isn + 1 else { return .drop }
                b.pointee.resilient.clientAckWindow = tcp.window
                b.pointee.resilient.clientAckTSval = timestampsOption(tcp)?.value ?? 0
                counters.resilient.clientsValidated &+= 1
                if b.pointee.resilient.readsRequest {
                    // The engine reads the request itself (Splice/RequestDecision.swift).
                    b.pointee.resilient.phase = .awaitingRequest
                    b.pointee.resilient.phaseSince = now.deciseconds
                    counters.splices.requestsRead &+= 1
                    return fromClientAwaitingRequest(p, entry: e, block: b, scratch: scratch, now: now)
                }
                if tcp.payloadLength > 0 || flags.contains(.fin) { holdForProxy(p, entry: e, block: b, now: now) }
                return replaySynToProxy(entry: e, block: b, scratch: scratch, now: now)
            case .awaitingRequest:
                return fromClientAwaitingRequest(p, entry: e, block: b, scratch: scratch, now: now)
            case .synToProxy:
                // The proxy's socket is not up yet: data waits for it. A pure ACK is the client
                // saying its handshake again (its data unanswered): the SYN may have been lost, so
                // it is sent again in the ACK's place.
                if tcp.payloadLength > 0 || flags.contains(.fin) {
                    holdForProxy(p, entry: e, block: b, now: now)
                    return .drop
                }
                return replaySynToProxy(entry: e, block: b, scratch: scratch, now: now)
            case .downEstablished, .upstreamAnswered, .established:
                break
            }
        }
        // The data path, either way: into the space of the proxy's socket that receives it,
        // and the sender's acknowledgement released to the other end as far as the proxy has it.
        translateTowardProxy(p, going: dir, block: b)
        releaseAck(speaking: dir, entry: e, block: b)
        // A packet for a local socket needs a complete checksum (KERNEL-NOTES.md).
        return .toProxy(p, mark: marks.toProxy, fillChecksum: info.checksumPartial)
    }

    /// A packet of one of the proxy's sockets (OUTPUT, the proxy's queue, fail-closed): the
    /// socket facing the client ("down") or the server ("up"), found by the ends' tuple.
    func fromProxySocket(_ p: TCPPacket, info: PacketInfo, scratch: UnsafeMutableRawBufferPointer, now: Timestamp) -> Verdict {
        let tcp = p.tcp
        let found = table.lookup(source: p.source, sourcePort: tcp.sourcePort,
                                 destination: p.destination, destinationPort: tcp.destinationPort)
        guard let (e, dir) = found, table[e].mode == .resilient, let b = table.block(e) else {
            if let (e, _) = found, table[e].mode == .spliced {
                // The proxy stepped out of this flow and closes its sockets without a word;
                // anything they still send is dropped quietly.
                counters.resilient.proxyPacketsDropped &+= 1
                return .drop
            }
            // No flow the proxy may speak for: its packets carry its own sequence space and must
            // never reach the wire (unknown after an engine restart, bypassed after its death),
            // and the socket that sent it is a stale one: reset, so that it lets go of the tuple.
            return dropFromStaleSocket(p)
        }
        table[e].lastSeen = now.deciseconds
        if dir == .reply {
            return fromDownSocket(p, entry: e, block: b, info: info, scratch: scratch, now: now)
        }
        return fromUpSocket(p, entry: e, block: b, info: info, now: now)
    }

    /// A packet the engine built (or held), to `destination`: on the wire or (`local`) a local
    /// socket bound to that foreign address.
    func inject(_ packet: UnsafeRawBufferPointer, to destination: IPAddress, local: Bool) {
        guard let injector else {
            counters.resilient.injectionFailures &+= 1
            return
        }
        injector.inject(packet, to: destination, toLocalSocket: local)
    }

    /// A packet for a proxy's socket (or its listener), through the rules' TPROXY (the proxy
    /// mark, untracked): a source-NATed flow's end packets, and the handshake's last ACK. TPROXY finds the listener's request socket or, when the listener
    /// answered the replayed SYN with a SYN cookie and keeps no request socket
    /// (`net.ipv4.tcp_syncookies=2`, or a listen queue overflowing under 1), the listener
    /// itself, which makes the socket from the cookie. With the local mark the ACK was looked
    /// up by its addresses alone, found no socket in that case, and the router reset the
    /// client (seen 2026-12-07: uploads reset at both ends).
    @discardableResult
    func injectToProxy(_ packet: UnsafeRawBufferPointer, to destination: IPAddress) -> Bool {
        guard let injector else {
            counters.resilient.injectionFailures &+= 1
            return false
        }
        injector.injectToProxy(packet, to: destination)
        return true
    }

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
}
