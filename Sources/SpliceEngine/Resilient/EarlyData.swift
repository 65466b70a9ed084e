import SpliceWire

// The client's packets that came before the proxy's socket facing it was up: held in
// `Engine.pending`, given to the socket once it is, forwarded to the server if the proxy dies.

extension Engine {
    /// How long a client's packet waits for the proxy's socket before it is dropped (the
    /// client sends it again).
    static let pendingLifetime = Timestamp.Duration(deciseconds: 30)
    /// The client's packets held for one flow at most (its first window, more than enough).
    static let pendingPerFlow: UInt8 = 64

    /// Keeps a copy of the client's packet until the proxy's socket facing it is up.
    func holdForProxy(_ p: TCPPacket, entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>, now: Timestamp) {
        if b.pointee.resilient.pendingToProxy < Engine.pendingPerFlow,
           pending.hold(UnsafeRawBufferPointer(p.bytes), entry: e, serial: b.pointee.serial,
                        proxyID: b.pointee.resilient.proxyID, towardClient: false,
                        deadline: now.deciseconds &+ Engine.pendingLifetime.deciseconds) {
            b.pointee.resilient.pendingToProxy &+= 1
            counters.resilient.pendingHeld &+= 1
        } else {
            counters.resilient.pendingDropped &+= 1
        }
    }

    /// Whether pending slot `i` still belongs to the flow it was held for.
    func pendingBelongs(_ i: Int) -> Bool {
        let slot = pending.slots[i]
        return table[slot.entry].state != .free && table.block(slot.entry)?.pointee.serial == slot.serial
    }

    /// A held client packet of flow `e` for the wire (to the server), unchanged but for a
    /// complete checksum.
    func forwardPending(_ packet: UnsafeMutableRawBufferPointer, entry e: UInt32) {
        guard let p = TCPPacket(packet) else { return }
        p.fillChecksum()
        inject(UnsafeRawBufferPointer(packet), to: table[e].addressB, local: false)
    }

    /// The proxy's socket facing the client is up: its held packets go to it, translated.
    func releasePending(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) {
        givePendingToProxy(entry: e, block: b) { translateTowardProxy($0, going: .original, block: b) }
    }

    /// Flow `e`'s held client packets, each made ready by `prepare`, go to the proxy's socket
    /// (local delivery, a complete checksum).
    func givePendingToProxy(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>, _ prepare: (TCPPacket) -> Void) {
        guard b.pointee.resilient.pendingToProxy > 0 else { return }
        for i in 0..<pending.capacity where pending.slots[i].inUse && pending.slots[i].entry == e {
            guard pendingBelongs(i) else { continue }
            let packet = pending.packet(i)
            if let p = TCPPacket(packet) {
                prepare(p)
                p.fillChecksum()
                inject(UnsafeRawBufferPointer(packet), to: table[e].addressB, local: true)
            }
            pending.free(i)
        }
        b.pointee.resilient.pendingToProxy = 0
    }

    /// Forgets the held client packets of a flow.
    func discardPending(entry e: UInt32, block b: UnsafeMutablePointer<ConnectionBlock>) {
        guard b.pointee.resilient.pendingToProxy > 0 else { return }
        for i in 0..<pending.capacity where pending.slots[i].inUse && pending.slots[i].entry == e && pendingBelongs(i) {
            pending.free(i)
            counters.resilient.pendingDropped &+= 1
        }
        b.pointee.resilient.pendingToProxy = 0
    }

    /// Drops held client packets that waited too long, or whose flow is gone.
    func expirePending(now: Timestamp) {
        guard pending.count > 0 else { return }
        for i in 0..<pending.capacity where pending.slots[i].inUse {
            let belongs = pendingBelongs(i)
            guard !belongs || pending.slots[i].deadline <= now.deciseconds else { continue }
            if belongs, let b = table.block(pending.slots[i].entry), b.pointee.resilient.pendingToProxy > 0 {
                b.pointee.resilient.pendingToProxy -= 1
            }
            pending.free(i)
            counters.resilient.pendingDropped &+= 1
        }
    }
}
