import SpliceWire

// Path MTU discovery for the proxy's sockets (Docs/resilient.md "Path MTU"). A hop beyond the
// router that cannot forward one of the proxy's segments whole sends its "too big" error to
// the segment's source address, which is the end the socket speaks as: left alone, the router
// forwarded it to that end, the socket never learned the path's MTU and sent its large segments
// into the hop again and again (an upload to a server behind a smaller link hung). The error
// is given to the socket instead: its quoted sequence number taken back into the socket's
// space (a socket ignores an error about a number it did not send; the ICMP checksum follows
// incrementally, so a corrupt error stays corrupt), and the packet marked for
// the router's local delivery, as the proxy's transparent sockets get their own packets.

extension Engine {
    /// An ICMP "fragmentation needed" or ICMPv6 "packet too big" passing through the router.
    func tooBigFromHop(_ m: ICMPTooBig) -> Verdict {
        // The quoted segment went from its source to its destination: a packet of the proxy's
        // socket that speaks in that direction, if the flow is resilient.
        guard let (e, dir) = table.lookup(source: m.innerSource, sourcePort: m.innerSourcePort,
                                          destination: m.innerDestination, destinationPort: m.innerDestinationPort),
              table[e].mode == .resilient, let b = table.block(e) else { return .accept }
        let phase = b.pointee.resilient.phase
        // The socket exists and has sent translated segments: the up socket once the server's
        // SYN-ACK was given to it, the down socket once its handshake was done.
        guard phase >= (dir == .original ? .upstreamAnswered : .downEstablished) else { return .accept }
        m.innerSequenceNumber = m.innerSequenceNumber + b.pointee.resilient.proxy[dir].seqDelta.inverse
        counters.resilient.tooBigToProxy &+= 1
        if b.pointee.resilient.behindSourceNAT {
            // Its conntrack entry (the flow's, as related) would be translated on the way in
            // to this host as the flow's packets are (SourceNAT.swift): it goes untracked.
            inject(UnsafeRawBufferPointer(m.bytes), to: m.destination, local: true)
            return .drop
        }
        return Verdict(action: .accept, rewrittenLength: m.bytes.count, mark: marks.local)
    }
}
