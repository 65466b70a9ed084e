import SpliceWire

// The handshake (FIG. 2A-2B, Docs/resilient.md "The handshake"): the ends' handshake passes
// untouched; the client's ACK, the proof that it exists, becomes the SYN replayed to the proxy.

extension Engine {
    /// Called for a new flow's SYN: resilient if the policy claims it and a proxy is alive.
    func claimForProxy(_ e: UInt32, syn: TCPHeader, block b: UnsafeMutablePointer<ConnectionBlock>) {
        let entry = table[e]
        guard policy.claims(client: entry.addressA, server: entry.addressB, serverPort: entry.portB) else { return }
        if b.pointee.ends.original.options.signed {
            // Every segment is signed over its header and payload with a key only the ends
            // hold: the proxy could not answer one, and a rewrite would fail the check.
            table[e].reason = .signed
            counters.flows.signed &+= 1
            return
        }
        if spliceAtOnce(e, block: b) { return }
        guard activeProxy != 0 else {
            table[e].reason = .noProxy
            return
        }
        table[e].mode = .resilient
        table[e].reason = .policy
        counters.resilient.flows &+= 1
        b.pointee.resilient.phase = .clientSyn
        b.pointee.resilient.proxyID = activeProxy
        b.pointee.resilient.clientSynWindow = syn.window
        b.pointee.resilient.ecn = syn.flags.contains([.ece, .cwr])
        if let ts = timestampsOption(syn) { b.pointee.resilient.clientSynTSval = ts.value }
    }

    /// What the server's SYN-ACK tells (FIG. 2A): its window and clock, and which options
    /// both ends negotiated, for the SYN replayed to the proxy later.
    func learnServerSynAck(_ tcp: TCPHeader, block b: UnsafeMutablePointer<ConnectionBlock>) {
        let summary = tcp.options.summary
        let client = b.pointee.ends.original.options
        var r = b.pointee.resilient
        r.serverSynAckWindow = tcp.window
        r.serverSynAckTSval = summary.timestamps?.value ?? 0
        r.windowScaling = client.windowScale != 0xff && summary.windowScale != nil
        r.sack = client.sackPermitted && summary.sackPermitted
        r.timestamps = client.timestamps && summary.timestamps != nil
        r.ecn = r.ecn && tcp.flags.contains(.ece) && !tcp.flags.contains(.cwr)
        if r.ecn && r.phase == .clientSyn { counters.resilient.ecnFlows &+= 1 }   // not for a retransmission
        r.endShift.original = r.windowScaling ? min(client.windowScale, 14) : 0
        r.endShift.reply = r.windowScaling ? min(summary.windowScale ?? 0, 14) : 0
        r.phase = .serverSynAck
        b.pointee.resilient = r
    }

    /// FIG. 2A-2B: a SYN to the proxy, from the client, with the client's ISN and the options
    /// both ends negotiated, built into `scratch` in place of the client's ACK.
    func replaySynToProxy(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>,
                          scratch: UnsafeMutableRawBufferPointer, now: Timestamp) -> Verdict {
        var r = b.pointee.resilient
        let client = b.pointee.ends.original.options
        let options = SynOptions(
            maximumSegmentSize: client.maximumSegmentSize == 0 ? nil : client.maximumSegmentSize,
            windowScale: r.windowScaling ? client.windowScale : nil,
            sackPermitted: r.sack,
            timestamps: r.timestamps ? TCPTimestamps(value: r.clientSynTSval, echo: 0) : nil)
        let entry = table[e]
        guard let n = TCPSegmentWriter.write(
            into: scratch, source: entry.addressA, destination: entry.addressB,
            sourcePort: entry.portA, destinationPort: entry.portB,
            sequenceNumber: b.pointee.ends.original.isn, acknowledgmentNumber: SeqNumber(0),
            flags: r.ecn ? [.syn, .ece, .cwr] : .syn,
            window: r.clientSynWindow, options: .syn(options)) else {
            table[e].mode = .bypass
            table[e].reason = .replayFailed
            return .accept
        }
        if r.phase != .synToProxy { r.phaseSince = now.deciseconds }
        r.phase = .synToProxy
        b.pointee.resilient = r
        counters.resilient.handshakeReplays &+= 1
        return .toProxy(length: n, inScratch: true, mark: marks.toProxy)
    }

    /// A replay the proxy left unanswered past `replayPatience` (its listener full, or a stale
    /// socket of a dead proxy holding the tuple: `dropFromStaleSocket`): the flow goes on alone.
    /// Lossless: the proxy has none of its bytes, and the client's held ones were dropped (it
    /// sends them again). True when the flow was moved.
    func abandonReplayIfLate(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>, now: Timestamp) -> Bool {
        guard b.pointee.resilient.phase == .synToProxy,
              now.deciseconds &- b.pointee.resilient.phaseSince >= replayPatience.deciseconds else { return false }
        discardPending(entry: e, block: b)
        table[e].mode = .bypass
        table[e].reason = .proxyNoAnswer
        counters.resilient.replaysAbandoned &+= 1
        return true
    }

}
