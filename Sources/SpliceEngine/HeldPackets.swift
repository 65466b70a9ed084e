import SpliceWire

/// Copies of packets the engine keeps back for a while, in a fixed pool of slots (nothing is
/// allocated after start). Two uses:
///
/// - FIN and RST packets of the proxy that it did not announce, held until the engine knows
///   whether the proxy is alive (../shared/DESIGN.md, "Failure"): the kernel closing a dead
///   process's sockets sends them before the death is reported.
/// - The client's packets that arrive while the proxy's socket facing it is not yet up (its
///   handshake is replayed only once the client's ACK proved the client exists): given to the
///   socket once it is, or to the server unchanged if the proxy died meanwhile.
///
/// A slot remembers its flow's entry index and the serial of the flow's connection block, so
/// that a packet never goes to a later flow that reused the entry.
struct HeldPackets {
    struct Slot {
        var inUse = false
        var entry: UInt32 = 0
        /// The flow's `ConnectionBlock.serial`: an entry reused by another flow does not match.
        var serial: UInt32 = 0
        var proxyID: UInt16 = 0
        var towardClient = false
        var deadline: UInt32 = 0
        var length = 0
    }

    let capacity: Int
    let slotBytes: Int
    var slots: [Slot]
    let bytes: UnsafeMutableRawBufferPointer
    var count = 0
    /// Where the search for a free slot starts (the slot after the last one taken).
    var cursor = 0

    init(capacity: Int, slotBytes: Int) {
        self.capacity = capacity
        self.slotBytes = slotBytes
        slots = Array(repeating: Slot(), count: capacity)
        bytes = .allocate(byteCount: capacity * slotBytes, alignment: 16)
    }

    /// Frees the pool; the owner calls it once, from its deinit.
    func deallocate() {
        bytes.deallocate()
    }

    /// Copies `packet`; false when it is too large or the pool is full (nothing is kept then).
    mutating func hold(_ packet: UnsafeRawBufferPointer, entry: UInt32, serial: UInt32, proxyID: UInt16,
                       towardClient: Bool, deadline: UInt32) -> Bool {
        guard packet.count <= slotBytes, count < capacity else { return false }
        var i = cursor
        while slots[i].inUse { i = i + 1 == capacity ? 0 : i + 1 }
        cursor = i + 1 == capacity ? 0 : i + 1
        bytes.slice(i * slotBytes, i * slotBytes + packet.count).copyMemory(from: packet)
        slots[i] = Slot(inUse: true, entry: entry, serial: serial, proxyID: proxyID,
                        towardClient: towardClient, deadline: deadline, length: packet.count)
        count += 1
        return true
    }

    func packet(_ i: Int) -> UnsafeMutableRawBufferPointer {
        bytes.slice(i * slotBytes, i * slotBytes + slots[i].length)
    }

    mutating func free(_ i: Int) {
        slots[i].inUse = false
        count -= 1
    }
}
