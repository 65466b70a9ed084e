import SpliceWire

/// FIN and RST packets of the proxy that it did not announce, held until the engine knows
/// whether the proxy is alive (../shared/DESIGN.md, "Failure"): the kernel closing a dead
/// process's sockets sends them before the death is reported. A fixed pool of small slots;
/// nothing is allocated after start.
struct HeldPackets {
    static let slotBytes = 160

    struct Slot {
        var inUse = false
        var entry: UInt32 = 0
        var proxyID: UInt16 = 0
        var towardClient = false
        var deadline: UInt32 = 0
        var length = 0
    }

    let capacity: Int
    var slots: [Slot]
    let bytes: UnsafeMutableRawBufferPointer
    var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        slots = Array(repeating: Slot(), count: capacity)
        bytes = .allocate(byteCount: capacity * HeldPackets.slotBytes, alignment: 16)
    }

    /// Copies `packet`; false when it is too large or the pool is full.
    mutating func hold(_ packet: UnsafeMutableRawBufferPointer, entry: UInt32, proxyID: UInt16, towardClient: Bool,
                       deadline: UInt32) -> Bool {
        guard packet.count <= HeldPackets.slotBytes, count < capacity,
              let i = slots.firstIndex(where: { !$0.inUse }) else { return false }
        bytes.slice(i * HeldPackets.slotBytes, i * HeldPackets.slotBytes + packet.count)
            .copyMemory(from: UnsafeRawBufferPointer(packet))
        slots[i] = Slot(inUse: true, entry: entry, proxyID: proxyID, towardClient: towardClient, deadline: deadline,
                        length: packet.count)
        count += 1
        return true
    }

    func packet(_ i: Int) -> UnsafeMutableRawBufferPointer {
        bytes.slice(i * HeldPackets.slotBytes, i * HeldPackets.slotBytes + slots[i].length)
    }

    mutating func free(_ i: Int) {
        slots[i].inUse = false
        count -= 1
    }
}
