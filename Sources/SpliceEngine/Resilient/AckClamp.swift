import SpliceWire

// No byte acknowledged that only the proxy holds (FIG. 2C, messages 21-33): the proxy's
// acknowledgements are clamped in `translateFromProxy`; what the receiver acknowledges later is
// released to the sender here.

extension Engine {
    /// The end that sends `d` acknowledged more of the other end's data (its packet is on its
    /// way to the proxy): tell the other end, with an ACK in the translated state of the proxy's
    /// socket speaking `d` (next sequence number, window, timestamps).
    ///
    /// What the receiver acknowledged it got through the proxy, so the proxy had it: the release
    /// does not wait for that socket's own acknowledgement, which the kernel may delay by up to
    /// 200 ms (a socket that received a FIN acknowledges in "pingpong" mode), long enough for
    /// the sender to time out and send again. It never goes past what the sender sent.
    func releaseAck(speaking d: FlowDirection, entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) {
        // Called for every end's packet: nothing here copies the mode's whole state.
        // The socket facing the client is up after the replayed handshake; the one facing the
        // server once its handshake ACK went through.
        let phase = b.pointee.resilient.phase
        guard d == .reply ? phase >= .downEstablished : phase == .established else { return }
        let end = b.pointee.ends[d]
        guard end.ackSeen else { return }
        let side = b.pointee.resilient.proxy[d]
        let candidate = SeqNumber.earliest(end.ack, b.pointee.ends[d.opposite].nextSeq)
        // The end's window: zero, the sender is told zero; open again after the engine closed
        // it for the end (Translation.swift), the sender is told the socket's own window.
        let pending = b.pointee.resilient.splice == .pending
        let endClosed = !pending && end.windowKnown && end.window == 0
        let reopened = !pending && side.closedForEnd && !endClosed
        guard candidate > side.ackGiven || reopened else { return }
        let ack = candidate > side.ackGiven ? candidate : side.ackGiven
        let window: UInt16 = pending || endClosed ? 0 : reopened ? side.ownWindow : side.window
        let entry = table[e]
        guard let n = TCPSegmentWriter.write(
            into: buildBuffer, source: entry.address(sending: d), destination: entry.address(receiving: d),
            sourcePort: entry.port(sending: d), destinationPort: entry.port(receiving: d),
            // The socket's congestion echo as well (its own ACK, dropped as clamped, had it).
            sequenceNumber: side.seqNext, acknowledgmentNumber: ack, flags: side.echoingCE ? [.ack, .ece] : .ack,
            // A pending splice drains: the sender is told to send nothing more (Translation.swift).
            window: window,
            options: b.pointee.resilient.timestamps ? .timestamps(TCPTimestamps(value: side.tsval, echo: side.tsecr)) : .none,
            trafficClass: side.dscp << 2)   // in its end's name: that end's DSCP
        else { return }
        b.pointee.resilient.proxy[d].ackGiven = ack
        if endClosed && side.window != 0 {
            if side.ownWindow == 0 { b.pointee.resilient.proxy[d].ownWindow = side.window }
            b.pointee.resilient.proxy[d].window = 0
            b.pointee.resilient.proxy[d].closedForEnd = true
        } else if reopened {
            b.pointee.resilient.proxy[d].window = window
            b.pointee.resilient.proxy[d].closedForEnd = false
        }
        counters.resilient.acksInjected &+= 1
        if side.echoingCE { counters.resilient.acksEchoingCE &+= 1 }
        inject(UnsafeRawBufferPointer(buildBuffer.slice(0, n)), to: entry.address(receiving: d), local: false)
    }
}
