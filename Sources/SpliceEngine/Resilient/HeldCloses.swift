import SpliceWire

// The proxy's FIN or RST that it did not announce may be the kernel closing a dead proxy's
// socket: it is held (`translateFromProxy`) until the proxy is known alive, and released here.

extension Engine {
    /// An unannounced FIN or RST of the proxy's socket speaking `d` may be the kernel closing
    /// a dead proxy's socket: it is translated and held (true), unless the proxy announced that
    /// kind, or it relays the other end's FIN at the same place (the proxy doing its job), or
    /// the grace of the current burst of closes is over.
    func holdsClose(_ p: TCPPacket, entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>,
                    state r: inout ResilientState, speaking d: FlowDirection, newSeq: SeqNumber,
                    clamp: SeqNumber, partial: Bool, now: Timestamp) -> Bool {
        let tcp = p.tcp
        let flags = tcp.flags
        guard flags.contains(.rst) || flags.contains(.fin) else { return false }
        let intent = r.proxy[d].closeIntent
        let announced = flags.contains(.rst) ? intent & ResilientState.intentRST != 0
                                             : intent & ResilientState.intentFIN != 0
        // The FIN of the end it speaks as, seen by the engine (finA: the client's).
        let endFin: FlowEntry.Flags = d == .original ? .finA : .finB
        let relayed = flags.contains(.fin) && !flags.contains(.rst) && table[e].flags.contains(endFin)
            && b.pointee.ends[d].finSeq == newSeq + UInt32(tcp.payloadLength)
        let graceOver = r.holding && now.deciseconds >= r.holdSince &+ holdGrace.deciseconds
        if graceOver { r.holding = false }   // this burst of closes is through; the next is held again
        guard !announced && !relayed && !graceOver else { return false }
        if !r.holding {
            r.holding = true
            r.holdSince = now.deciseconds
        }
        rewriteFromProxy(p, state: &r, speaking: d, newSeq: newSeq, clamp: clamp)
        if partial { p.fillChecksum() }   // it will be injected as it is
        if held.hold(UnsafeRawBufferPointer(p.bytes), entry: e, serial: b.pointee.serial,
                     proxyID: r.proxyID, towardClient: d == .reply,
                     deadline: r.holdSince &+ holdGrace.deciseconds) {
            counters.resilient.finRstHeld &+= 1
        } else {
            counters.resilient.finRstHoldFailed &+= 1
        }
        return true
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
        b.pointee.resilient.proxy[towardClient ? .reply : .original].closeIntent |= bit
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
                inject(UnsafeRawBufferPointer(held.packet(i)), to: table[e].address(receiving: slot.towardClient ? .reply : .original), local: false)
                counters.resilient.finRstReleased &+= 1
            } else {
                counters.resilient.finRstDiscarded &+= 1
            }
            held.free(i)
        }
    }
}
