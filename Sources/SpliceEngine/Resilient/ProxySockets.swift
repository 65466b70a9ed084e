import SpliceWire

// The packets of the proxy's two sockets (OUTPUT, queued fail-closed): each socket's handshake
// is answered with the other end's numbers, then its packets are translated into the ends' space.

extension Engine {
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
                counters.resilient.proxyPacketsDropped &+= 1
                return .drop
            }
            guard tcp.acknowledgmentNumber == b.pointee.ends.original.isn + 1 else {
                counters.resilient.proxyPacketsDropped &+= 1
                return .drop
            }
            let entry = table[e]
            if entry.state == .close {
                // The client reset the flow while the proxy was answering: its half-open socket
                // is reset too, and the client's held packets go nowhere.
                resetHalfOpenDownSocket(entry: e, block: b)
                discardPending(entry: e, block: b)
                counters.resilient.proxyPacketsDropped &+= 1
                return .drop
            }
            let summary = tcp.options.summary
            let proxyTS = summary.timestamps
            if r.phase == .synToProxy && r.timestamps && proxyTS == nil {
                return proxyAnsweredWithoutTimestamps(entry: e, block: b)
            }
            if r.phase == .synToProxy {
                r.proxy.reply.isn = tcp.sequenceNumber
                r.proxy.reply.seqDelta = SeqDelta(from: tcp.sequenceNumber, to: b.pointee.ends.reply.isn)
                r.proxy.reply.tsDelta = TimestampDelta(from: proxyTS?.value ?? 0, to: r.serverSynAckTSval)
                if r.windowScaling, let ws = summary.windowScale {
                    r.proxy.reply.shift = min(ws, 14)
                    r.proxy.reply.receiverShiftAtProxy = r.endShift.original
                } else {
                    r.proxy.reply.shift = 0
                    r.proxy.reply.receiverShiftAtProxy = 0
                }
                r.phase = .downEstablished
                r.proxy.reply.ackGiven = b.pointee.ends.original.isn + 1
                r.proxy.reply.ownAck = b.pointee.ends.original.isn + 1
                r.proxy.reply.seqNext = b.pointee.ends.reply.isn + 1
                // What the server's SYN-ACK offered, in the scale the client reads later
                // windows with (a SYN's own window is never scaled, RFC 7323 2.2).
                r.proxy.reply.window = UInt16(r.serverSynAckWindow >> r.endShift.reply)
                r.proxy.reply.tsval = r.serverSynAckTSval
                r.proxy.reply.tsvalShown = true
                r.proxy.reply.tsecr = proxyTS?.echo ?? 0
                b.pointee.resilient = r
            }
            // The handshake's last ACK, as the client sent it (its window, its clock) with the
            // proxy's TSval echoed; a retransmitted SYN-ACK (that ACK was lost) gets it again.
            if let n = TCPSegmentWriter.write(
                into: buildBuffer, source: entry.addressA, destination: entry.addressB,
                sourcePort: entry.portA, destinationPort: entry.portB,
                sequenceNumber: b.pointee.ends.original.isn + 1, acknowledgmentNumber: tcp.sequenceNumber + 1, flags: .ack,
                window: r.clientAckWindow,
                options: r.timestamps ? .timestamps(TCPTimestamps(value: r.clientAckTSval, echo: proxyTS?.value ?? 0)) : .none) {
                injectToProxy(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), to: entry.addressB)
            }
            releasePending(entry: e, block: b)
            counters.resilient.handshakeReplays &+= 1
            return .drop
        }
        guard r.phase >= .downEstablished else {
            // Not the SYN-ACK of the socket the replay was for: another socket holds the tuple
            // (a dead proxy's, not yet gone), answering the replayed SYN with an ACK.
            return dropFromStaleSocket(p)
        }
        let verdict = translateFromProxy(p, entry: e, block: b, state: &r, speaking: .reply, info: info, now: now)
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
                counters.resilient.proxyPacketsDropped &+= 1
                return .drop
            }
            let summary = tcp.options.summary
            r.proxy.original.isn = tcp.sequenceNumber
            r.proxy.original.seqDelta = SeqDelta(from: tcp.sequenceNumber, to: b.pointee.ends.original.isn)
            r.proxy.original.tsDelta = TimestampDelta(from: summary.timestamps?.value ?? 0, to: r.clientSynTSval)
            let server = b.pointee.ends.reply.options
            let scaling = server.windowScale != 0xff && summary.windowScale != nil
            r.proxy.original.shift = scaling ? min(summary.windowScale ?? 0, 14) : 0
            r.proxy.original.receiverShiftAtProxy = scaling ? r.endShift.reply : 0
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
                sequenceNumber: b.pointee.ends.reply.isn, acknowledgmentNumber: tcp.sequenceNumber + 1,
                // ECN as the server set it up with the client, if the socket asks for it
                // (the router's net.ipv4.tcp_ecn=1, which install-rules.sh sets).
                flags: r.ecn && flags.contains([.ece, .cwr]) ? [.syn, .ack, .ece] : [.syn, .ack],
                window: r.serverSynAckWindow, options: .syn(options)) {
                inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), to: entry.addressA, local: true)
            }
            if r.phase == .downEstablished {
                r.phase = .upstreamAnswered
                r.proxy.original.ackGiven = b.pointee.ends.reply.isn   // so that the proxy's handshake ACK goes through
                r.proxy.original.ownAck = b.pointee.ends.reply.isn + 1
                r.proxy.original.seqNext = b.pointee.ends.original.isn + 1
                r.proxy.original.window = 0
            }
            b.pointee.resilient = r
            counters.resilient.handshakeReplays &+= 1
            return .drop
        }
        guard r.phase >= .upstreamAnswered else {
            return dropFromStaleSocket(p)   // not the up socket's SYN: an older socket's packet
        }
        if r.phase == .upstreamAnswered && flags.contains(.ack) && tcp.acknowledgmentNumber == b.pointee.ends.reply.isn + 1 {
            r.phase = .established
        }
        let verdict = translateFromProxy(p, entry: e, block: b, state: &r, speaking: .original, info: info, now: now)
        b.pointee.resilient = r
        return verdict
    }

    /// The proxy's socket answered the replayed SYN without timestamps though both ends use
    /// them: the router's stack has them off (`net.ipv4.tcp_timestamps=0`, install-rules.sh
    /// turns them on), and its segments could not carry the clock the ends check (such flows
    /// stalled: seen 2026-12-07). The flow goes on alone before the proxy has any of its bytes:
    /// the socket is reset, the client's held packets dropped (it sends them again), and its
    /// handshake ACK, which became the replayed SYN, goes on to the server.
    func proxyAnsweredWithoutTimestamps(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) -> Verdict {
        let entry = table[e]
        let r = b.pointee.resilient
        let clientNext = b.pointee.ends.original.isn + 1
        resetHalfOpenDownSocket(entry: e, block: b)
        if let n = TCPSegmentWriter.write(
            into: buildBuffer, source: entry.addressA, destination: entry.addressB,
            sourcePort: entry.portA, destinationPort: entry.portB,
            sequenceNumber: clientNext, acknowledgmentNumber: b.pointee.ends.reply.isn + 1, flags: .ack,
            window: r.clientAckWindow,
            options: .timestamps(TCPTimestamps(value: r.clientAckTSval, echo: r.serverSynAckTSval))) {
            inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), to: entry.addressB, local: false)
        }
        discardPending(entry: e, block: b)
        table[e].mode = .bypass
        table[e].reason = .proxyWithoutTimestamps
        counters.resilient.proxyWithoutTimestamps &+= 1
        return .drop
    }

    /// A reset, as the client's, to the proxy's socket facing the client while that socket has
    /// only answered the replayed SYN (its first number after the client's ISN).
    func resetHalfOpenDownSocket(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) {
        let entry = table[e]
        guard let n = TCPSegmentWriter.write(
            into: buildBuffer, source: entry.addressA, destination: entry.addressB,
            sourcePort: entry.portA, destinationPort: entry.portB,
            sequenceNumber: b.pointee.ends.original.isn + 1, acknowledgmentNumber: SeqNumber(0), flags: .rst,
            window: 0, options: .none) else { return }
        inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), to: entry.addressB, local: true)
    }

    /// A packet of a proxy's socket that no flow can take (the socket of a dead proxy, or of
    /// a connection whose tuple a new one now uses): dropped, and the socket reset at the
    /// number it expects next (its acknowledgement: a reset anywhere else is only challenged,
    /// RFC 5961). Such a socket would otherwise linger retransmitting into the drop, and catch
    /// the replayed SYN of a new connection with its tuple (TPROXY finds established sockets
    /// first), which then never reaches the proxy's listener.
    func dropFromStaleSocket(_ p: TCPPacket) -> Verdict {
        counters.resilient.proxyPacketsDropped &+= 1
        let tcp = p.tcp
        let flags = tcp.flags
        guard flags.contains(.ack), !flags.contains(.rst), !flags.contains(.syn),
              let n = TCPSegmentWriter.write(
                into: buildBuffer, source: p.destination, destination: p.source,
                sourcePort: tcp.destinationPort, destinationPort: tcp.sourcePort,
                sequenceNumber: tcp.acknowledgmentNumber, acknowledgmentNumber: SeqNumber(0), flags: .rst,
                window: 0, options: .none) else { return .drop }
        inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), to: p.source, local: true)
        counters.resilient.staleSocketsReset &+= 1
        return .drop
    }
}
