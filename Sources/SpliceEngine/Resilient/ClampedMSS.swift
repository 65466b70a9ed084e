import SpliceWire

// The MSS the ends gave each other, as it left the router (Docs/resilient.md, "MSS clamping on
// the router").
//
// The engine reads a flow's handshake in mangle PREROUTING, before the router's own rules have
// run on it. A router that clamps the MSS of the handshakes it forwards (`-j TCPMSS --set-mss`
// or `--clamp-mss-to-pmtu` in FORWARD, nft's `tcp option maxseg size set`: the usual cure for
// a tunnel or PPPoE link beyond it whose hops send no ICMP) lowers it after that: each end then
// sends segments the path takes, but the proxy's sockets, built from the handshake the engine
// replays, took the MSS the ends offered and sent segments the path dropped, unannounced: the
// transfer hung where plain forwarding worked (seen 2026-12-06). The rules log a copy of each
// SYN and SYN-ACK they intercept as it leaves the router (mangle POSTROUTING, after every
// FORWARD rule; NFLOG, `install-rules.sh --syn-log-group`), and the MSS the copy carries, when
// lower, is what the replay gives the proxy's socket: the client's for the socket facing the
// client, the server's for the one facing the server.

extension Engine {
    /// A copy of an intercepted SYN or SYN-ACK as it left the router (`header`: its IP and TCP
    /// headers; `room`: where it is viewed, as for `loggedFromSplicedFlow`). When it belongs to
    /// a resilient flow whose replay to the proxy has still to use its MSS (the client's SYN
    /// before the replayed SYN, the server's SYN-ACK before it answers the proxy's SYN) and
    /// carries a lower MSS than its end offered, that is the MSS the replay gives. Anything
    /// else is ignored. The reader takes these copies before each turn of the ends' queues,
    /// so the copy of a handshake packet is in before the client's ACK that answers it.
    public func loggedHandshake(_ header: UnsafeRawBufferPointer, room: UnsafeMutableRawBufferPointer) {
        guard let p = Engine.viewLogged(header, room: room) else { return }
        let tcp = p.tcp
        let flags = tcp.flags
        guard flags.contains(.syn), !flags.contains(.rst), !flags.contains(.fin),
              let mss = tcp.options.summary.maximumSegmentSize,
              let (e, dir) = table.lookup(source: p.source, sourcePort: tcp.sourcePort,
                                          destination: p.destination, destinationPort: tcp.destinationPort),
              table[e].mode == .resilient, let b = table.block(e) else { return }
        // The SYN from the client, the SYN-ACK from the server, of this flow's handshake.
        guard flags.contains(.ack) == (dir == .reply),
              b.pointee.ends[dir].isnKnown, tcp.sequenceNumber == b.pointee.ends[dir].isn else { return }
        // Still to be used: the client's before the replayed SYN, the server's before the
        // answer to the proxy's SYN.
        let phase = b.pointee.resilient.phase
        guard dir == .original ? phase < .synToProxy : phase < .upstreamAnswered else { return }
        let offered = b.pointee.ends[dir].options.maximumSegmentSize
        guard offered == 0 || mss < offered else { return }
        b.pointee.ends[dir].options.maximumSegmentSize = mss
        counters.resilient.mssLowered &+= 1
    }
}
