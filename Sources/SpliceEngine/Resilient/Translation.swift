import SpliceWire

// Translation between the ends' spaces and the proxy's (Docs/resilient.md "Translation"): only
// the proxy's packets and the ends' packets for it are rewritten, with incremental checksums.

extension Engine {
    /// Rewrites an end's packet, going `d`, for the proxy's socket that receives it (the one
    /// speaking the other way): acknowledgement numbers and SACK edges into that socket's
    /// space, TSecr back into its clock, the window into the scale it reads.
    func translateTowardProxy(_ p: TCPPacket, going d: FlowDirection, block b: UnsafeMutablePointer<ConnectionBlock>) {
        let side = b.pointee.resilient.proxy[d.opposite]
        let tcp = p.tcp
        // A segment that starts before what the receiving socket has: a keepalive or
        // zero-window probe (SND.UNA - 1, no data or one old byte), a retransmission of bytes
        // the proxy holds. The socket answers it with an ACK that may repeat the last one, and
        // the sender must get that answer (RFC 9293 3.10.7.4): unanswered, its keepalive ends
        // an idle connection, and a sender facing a zero window times out without ACKs.
        if tcp.sequenceNumber < side.ownAck { b.pointee.resilient.proxy[d.opposite].answerOwed = true }
        if tcp.flags.contains(.urg) {
            // Urgent data (Telnet's Synch, FTP's ABOR): a socket that reads without
            // SO_OOBINLINE takes the urgent byte out of the stream, and splice(2) stops before
            // it as at the stream's end; either way the proxy would relay one byte less than
            // the end sent, and every number the engine maps after it would be one off. The
            // proxy's socket gets it as an ordinary byte; the mark itself does not cross.
            tcp.clearUrgent()
            counters.resilient.urgentToProxy &+= 1
        }
        let back = side.seqDelta.inverse
        if tcp.flags.contains(.ack) {
            tcp.updateAcknowledgmentNumber(tcp.acknowledgmentNumber + back)
        }
        let shiftFrom = b.pointee.resilient.endShift[d], shiftTo = side.receiverShiftAtProxy
        if shiftFrom != shiftTo { tcp.updateWindow(Engine.rescale(tcp.window, from: shiftFrom, to: shiftTo)) }
        if tcp.headerLength > TCPHeader.Field.minimumLength {
            let options = tcp.options
            for o in options {
                switch options.value(of: o) {
                case .timestamps(let value, let echo):
                    if echo != 0 { tcp.updateTimestamps(o, value: value, echo: side.tsDelta.back(echo)) }
                case .sack:
                    tcp.shiftSACKBlocks(o, by: back.signed)
                default: break
                }
            }
        }
    }

    /// Tells the proxy's socket of an end's reset, going `d` (injected to the local socket
    /// that speaks the other way).
    func resetProxySocket(_ p: TCPPacket, entry e: UInt32, going d: FlowDirection,
                          block b: UnsafeMutablePointer<ConnectionBlock>) {
        let r = b.pointee.resilient
        // The server's reset goes to the up socket, which exists only once it was answered.
        if d == .reply && r.phase < .upstreamAnswered { return }
        let side = r.proxy[d.opposite]
        let entry = table[e]
        let tcp = p.tcp
        // At the socket's next expected byte (what it last acknowledged, unclamped): a reset
        // anywhere else is only challenged (RFC 5961), and the end's reset may answer an ACK
        // that was clamped below that point.
        let seq = SeqNumber.latest(tcp.sequenceNumber, side.ownAck)
        let ack = tcp.flags.contains(.ack) ? tcp.acknowledgmentNumber + side.seqDelta.inverse : SeqNumber(0)
        guard let n = TCPSegmentWriter.write(
            into: buildBuffer, source: entry.address(sending: d), destination: entry.address(receiving: d),
            sourcePort: entry.port(sending: d), destinationPort: entry.port(receiving: d),
            sequenceNumber: seq, acknowledgmentNumber: ack, flags: tcp.flags.intersection([.rst, .ack]),
            window: 0, options: .none) else { return }
        inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), to: entry.address(receiving: d), local: true)
    }

    /// A data-path packet of the proxy's socket speaking `d`, into the ends' space: its end's
    /// sequence numbers, window scale and clock, its ACK clamped to what its end has
    /// acknowledged (FIG. 2C); an unannounced FIN or RST held (HeldCloses.swift); a pure ACK
    /// that tells the receiver nothing new dropped, unless it answers the receiver's probe.
    func translateFromProxy(_ p: TCPPacket, entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>,
                            state r: inout ResilientState, speaking d: FlowDirection,
                            info: PacketInfo, now: Timestamp) -> Verdict {
        let tcp = p.tcp
        let flags = tcp.flags
        let newSeq = tcp.sequenceNumber + r.proxy[d].seqDelta
        let end = newSeq + tcp.sequenceLength
        // What its end has acknowledged of the other end's data: the clamp.
        let own = b.pointee.ends[d], other = b.pointee.ends[d.opposite]
        let clamp = own.ackSeen ? own.ack : other.isn + 1

        // Both ends have closed and acknowledged each other's FIN: a RST now is the proxy's
        // listener answering a late segment for a socket that is gone (a FIN the server sent
        // again while its ACK waited for the client's). The ends need nothing more.
        if flags.contains(.rst) && table[e].state == .timeWait {
            counters.resilient.finRstDiscarded &+= 1
            return .drop
        }
        if holdsClose(p, entry: e, block: b, state: &r, speaking: d, newSeq: newSeq, clamp: clamp,
                      partial: info.checksumPartial, now: now) {
            return .drop
        }

        let (clampedAck, carriesSACK) = rewriteFromProxy(p, state: &r, speaking: d, newSeq: newSeq, clamp: clamp)
        if r.splice != .pending {
            // Its end (the one it speaks for) takes nothing more: the other end is told so. The
            // bytes the proxy holds beyond what that end acknowledged stay unacknowledged (the
            // clamp); a sender with unacknowledged data and an open window gives up after its
            // retransmission limit (tcp_retries2: ~15 minutes by default), while one facing a
            // zero window goes on probing as long as its probes are answered, as it would
            // with that end itself. Reopened in `releaseAck`.
            r.proxy[d].ownWindow = tcp.window
            let closed = own.windowKnown && own.window == 0 && tcp.window != 0
            if closed { tcp.updateWindow(0) }
            r.proxy[d].closedForEnd = closed
        }
        counters.resilient.fromProxyTranslated &+= 1
        let told = r.proxy[d].ackGiven
        let pureAck = tcp.payloadLength == 0 && !flags.contains(.syn) && !flags.contains(.fin) && !flags.contains(.rst)
        if pureAck && (clampedAck.map { $0 <= told } ?? true) && tcp.window == r.proxy[d].window && !carriesSACK
            && !r.proxy[d].answerOwed {
            counters.resilient.acksSuppressed &+= 1
            return .drop
        }
        r.proxy[d].answerOwed = false
        if let a = clampedAck, a > told { r.proxy[d].ackGiven = a }
        r.proxy[d].window = tcp.window
        if end > r.proxy[d].seqNext { r.proxy[d].seqNext = end }
        return .acceptModified(p, info: info)
    }

    /// Rewrites a packet of the proxy's socket speaking `d` in place into the ends' space (its
    /// end's DSCP too); returns the clamped ACK, and whether SACK blocks are left on it (one
    /// walk of the options serves both).
    @discardableResult
    func rewriteFromProxy(_ p: TCPPacket, state r: inout ResilientState, speaking d: FlowDirection,
                          newSeq: SeqNumber, clamp: SeqNumber) -> (ack: SeqNumber?, carriesSACK: Bool) {
        let tcp = p.tcp
        // The end's DSCP, not the proxy socket's (its ECN bits are its own: ECN is set up
        // per connection, and the proxy's sockets set it up as the ends did).
        if p.dscp != r.proxy[d].dscp {
            p.updateDSCP(r.proxy[d].dscp)
            counters.resilient.dscpCopied &+= 1
        }
        tcp.updateSequenceNumber(newSeq)
        if !tcp.flags.contains(.syn) { r.proxy[d].echoingCE = tcp.flags.contains(.ece) }
        var clamped: SeqNumber?
        var heldBack = false
        var carriesSACK = false
        if tcp.flags.contains(.ack) {
            let ack = tcp.acknowledgmentNumber
            if ack > r.proxy[d].ownAck { r.proxy[d].ownAck = ack }
            let a = SeqNumber.earliest(ack, clamp)
            if a != ack {
                tcp.updateAcknowledgmentNumber(a)
                counters.resilient.acksClamped &+= 1
                heldBack = true
            }
            clamped = a
        }
        let shiftFrom = r.proxy[d].shift, shiftTo = r.endShift[d]
        if r.splice == .pending {
            // A splice drains: the sender is told to send nothing more (seed 003's PENDING
            // shrinks the window rather than hold acknowledgements).
            if tcp.window != 0 { tcp.updateWindow(0) }
        } else if shiftFrom != shiftTo {
            tcp.updateWindow(Engine.rescale(tcp.window, from: shiftFrom, to: shiftTo))
        }
        if tcp.headerLength > TCPHeader.Field.minimumLength {
            let options = tcp.options
            for o in options {
                switch options.value(of: o) {
                case .timestamps(let value, let echo):
                    let v = r.proxy[d].tsDelta.forward(value)
                    tcp.updateTimestamps(o, value: v, echo: echo)
                    r.proxy[d].tsval = v
                    r.proxy[d].tsecr = echo
                    r.proxy[d].tsvalShown = true
                case .sack where heldBack:
                    // The socket's SACK blocks lie above its own ACK, so above the clamped one:
                    // the end would read the bytes between (the proxy holds them) as lost, and
                    // send them all again (RACK, RFC 8985). Taken off; they pass again once the
                    // clamp has caught up with the socket (Docs/resilient.md).
                    tcp.replaceWithNOPs(o)
                    counters.resilient.sackTakenOffClamped &+= 1
                case .sack: carriesSACK = true
                default: break
                }
            }
        }
        return (clamped, carriesSACK)
    }
}
