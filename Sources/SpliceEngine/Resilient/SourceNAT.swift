import SpliceWire

// Flows the router source-NATs (Docs/resilient.md "Behind source NAT"). On a gateway that
// masquerades its clients toward the servers, a server answers the router's own address: in
// mangle PREROUTING, where the engine's queue is, its packets are not yet given back their
// client's address (conntrack's NAT does that later in PREROUTING), so the rules queue them in
// mangle FORWARD instead (TCPSPLICE_FWDQ, `--ctstate SNAT --ctdir REPLY`), where they carry
// the client's address again. Their flow is marked `behindSourceNAT`.
//
// Such a flow's packets cannot reach the proxy's sockets as verdicts: a server's packet in
// FORWARD is already routed past this host, and a client's packet keeps its conntrack entry,
// whose NAT rewrites its source to the router's address on the way in to a local socket
// (conntrack's SNAT in LOCAL_IN). So each goes by injection instead, untracked, with the
// proxy mark, through `lo` to the rules' TPROXY (the original is dropped). The proxy's socket
// facing the server sends as the client and is tracked, so the same NAT carries it out; the
// one facing the client is untracked (raw OUTPUT), as its tuple is no connection's there.

extension Engine {
    /// A server's packet of a resilient flow came through the FORWARD queue: the flow is
    /// source-NATed.
    @inline(__always)
    func noteSourceNAT(block b: UnsafeMutablePointer<ConnectionBlock>) {
        guard !b.pointee.resilient.behindSourceNAT else { return }
        b.pointee.resilient.behindSourceNAT = true
        counters.resilient.sourceNATFlows &+= 1
    }

    /// A verdict handing an end's packet `p` of a source-NATed flow to the proxy, carried out
    /// as an injection of the packet it made (its checksum complete), the original dropped,
    /// addressed as the packet made is: mostly where `p` went, but the SYN replayed in the place
    /// of the server's SYN-ACK sent again (`replaySynToProxy` in phase `synToProxy`) goes the
    /// other way (found by `EngineFuzzTests`; the proxy mark routes either to `lo`).
    func toProxyByInjection(_ v: Verdict, packet p: TCPPacket, scratch: UnsafeMutableRawBufferPointer) -> Verdict {
        let bytes = v.finish(packet: p.bytes, scratch: scratch) ?? p.bytes
        let destination = TCPPacket(bytes)?.destination ?? p.destination
        if injectToProxy(UnsafeRawBufferPointer(bytes), to: destination) { counters.resilient.injectedToProxy &+= 1 }
        return .drop
    }
}
