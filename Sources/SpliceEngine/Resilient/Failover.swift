import SpliceWire

// Proxies registering and dying (FIG. 2D, claims 3-4): a dead proxy's flows go to bypass at once;
// the ends' packets after a failover keep each end's view of the other's clock.

extension Engine {
    /// A proxy registered: it takes new flows from now on.
    public func proxyRegistered(id: UInt16) {
        activeProxy = id
    }

    /// A proxy died (or deregistered): its flows fall back to bypass at once, and what it
    /// left held is discarded. Returns the number of flows moved.
    @discardableResult
    public func proxyGone(id: UInt16) -> Int {
        if activeProxy == id { activeProxy = 0 }
        if balancerProxies.remove(id) != nil { giveUpReturns() }
        var moved = 0
        table.forEachIndex { e in
            guard table[e].mode == .resilient, let b = table.block(e), b.pointee.resilient.proxyID == id else { return }
            table[e].mode = .bypass
            table[e].reason = .proxyDied
            moved += 1
            if b.pointee.resilient.splice == .pending {
                // Its senders were told a zero window: they go on at once, not at a probe.
                b.pointee.resilient.splice = .none
                counters.splices.failed &+= 1
                reopenWindows(block: b, entry: e)
            }
        }
        counters.resilient.failovers &+= UInt64(moved)
        for i in 0..<held.capacity where held.slots[i].inUse && held.slots[i].proxyID == id {
            held.free(i)
            counters.resilient.finRstDiscarded &+= 1
        }
        // The client's packets held for the proxy's socket are the client's own: in bypass
        // they go to the server as they came (their checksum completed).
        for i in 0..<pending.capacity where pending.slots[i].inUse && pending.slots[i].proxyID == id {
            if pendingBelongs(i) {
                let e = pending.slots[i].entry
                if table[e].mode == .bypass { forwardPending(pending.packet(i), entry: e) }
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
        // The receiver took TSvals in this sender's name from the proxy's socket speaking `dir`.
        guard b.pointee.resilient.timestamps, b.pointee.resilient.proxy[dir].tsvalShown,
              p.tcp.headerLength > TCPHeader.Field.minimumLength else { return .accept }
        let floor = b.pointee.resilient.proxy[dir].tsval
        // `track` has just recorded this packet's TSval (if it has one): the options are walked
        // again only for a packet that may need raising.
        guard timestamp(b.pointee.ends[dir].tsRecent, isOlderThan: floor) else { return .accept }
        let tcp = p.tcp
        let options = tcp.options
        guard let o = options.first(kind: TCPOptionKind.timestamps),
              case .timestamps(let value, let echo) = options.value(of: o),
              timestamp(value, isOlderThan: floor) else { return .accept }
        tcp.updateTimestamps(o, value: floor, echo: echo)
        counters.resilient.timestampsRaised &+= 1
        return .acceptModified(p, info: info)
    }
}
