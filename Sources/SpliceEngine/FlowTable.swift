#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SpliceWire

/// Idle timeouts per state, as conntrack keeps them (`nf_conntrack_tcp_timeout_*`), shortened
/// where a middlebox's table is better off forgetting.
public struct FlowTimeouts: Sendable {
    public var synSent = Timestamp.Duration.seconds(120)
    public var synReceived = Timestamp.Duration.seconds(60)
    /// Two hours and five minutes: past the first probe of a default TCP keepalive (sent after
    /// 7,200 s idle), so that an idle connection its ends keep alive keeps its entry (and a
    /// resilient flow its proxy). conntrack keeps 5 days.
    public var established = Timestamp.Duration.seconds(7500)
    public var finWait = Timestamp.Duration.seconds(120)
    public var closeWait = Timestamp.Duration.seconds(60)
    public var lastAck = Timestamp.Duration.seconds(30)
    /// 2*MSL, with Linux's MSL of 60 s.
    public var timeWait = Timestamp.Duration.seconds(120)
    public var close = Timestamp.Duration.seconds(10)
    /// A flow picked up mid-stream and not yet seen in both directions (a lone ACK, perhaps
    /// of a flood) is forgotten this soon, whatever its state says.
    public var unconfirmedPickup = Timestamp.Duration.seconds(30)
    /// How long a closed flow that kept its connection block (a resilient flow: the proxy's
    /// last ACKs and FINs still need translating) keeps it before it goes back to the pool.
    public var closedBlockLinger = Timestamp.Duration.seconds(10)
    public init() {}

    @inlinable public func timeout(for state: FlowState) -> Timestamp.Duration {
        switch state {
        case .free: return .seconds(0)
        case .synSent: return synSent
        case .synReceived: return synReceived
        case .established: return established
        case .finWait: return finWait
        case .closeWait: return closeWait
        case .lastAck: return lastAck
        case .timeWait: return timeWait
        case .close: return close
        }
    }
}

/// A conntrack-style flow table of fixed capacity: one `FlowEntry` per connection, found from
/// either direction's 4-tuple, plus a pool of `ConnectionBlock`s for the flows that need one.
///
/// Memory is reserved once, up front, and touched only as flows arrive (so the resident size
/// follows the number of flows, not the capacity); nothing on the per-packet path allocates.
/// The index is open addressing with linear probing and backward-shift deletion, keyed by a
/// direction-independent hash of the two endpoints. Not thread-safe: the engine serializes.
public final class FlowTable {
    public let capacity: Int
    public let blockCapacity: Int
    public var timeouts: FlowTimeouts

    let entries: UnsafeMutablePointer<FlowEntry>
    let blocks: UnsafeMutablePointer<ConnectionBlock>
    /// Index slots: 0 empty, else (hash tag << 32) | (entry index + 1).
    let index: UnsafeMutablePointer<UInt64>
    let indexMask: Int
    let seed: UInt64

    /// Entries below this index have been used at least once; above it, never touched.
    var entryHighWater: UInt32 = 0
    var freeEntryHead: UInt32 = 0   // index + 1, 0 = none
    var blockHighWater: UInt32 = 0
    var freeBlockHead: UInt32 = 0

    public private(set) var count = 0
    public private(set) var blockCount = 0
    var sweepCursor: UInt32 = 0
    var evictCursor: UInt32 = 0
    /// The serial of the last block attached (`ConnectionBlock.serial`).
    var nextSerial: UInt32 = 0
    /// Entries looked at, at most, to find one to evict when the table is full.
    static let evictionScan = 256

    public init(capacity: Int, blockCapacity: Int? = nil, timeouts: FlowTimeouts = FlowTimeouts(),
                seed: UInt64 = UInt64.random(in: .min ... .max)) {
        precondition(capacity > 0 && capacity < Int(UInt32.max / 2), "flow table capacity out of range")
        self.capacity = capacity
        self.blockCapacity = max(1, blockCapacity ?? capacity)
        self.timeouts = timeouts
        self.seed = seed
        var slots = 16
        while slots < capacity * 2 { slots <<= 1 }
        indexMask = slots - 1
        entries = UnsafeMutablePointer<FlowEntry>.allocate(capacity: capacity)
        blocks = UnsafeMutablePointer<ConnectionBlock>.allocate(capacity: self.blockCapacity)
        // calloc: zero pages come from the kernel untouched, so the index costs RSS as it fills.
        guard let raw = calloc(slots, MemoryLayout<UInt64>.stride) else {
            fatalError("cannot reserve \(slots * 8) bytes for the flow index")
        }
        index = raw.bindMemory(to: UInt64.self, capacity: slots)
    }

    deinit {
        entries.deallocate()
        blocks.deallocate()
        free(index)
    }

    // MARK: Hashing

    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 33)) &* 0xff51_afd7_ed55_8ccd
        z = (z ^ (z >> 33)) &* 0xc4ce_b9fe_1a85_ec53
        return z ^ (z >> 33)
    }

    @inline(__always)
    func hash(_ a: IPAddress, _ pa: UInt16, _ b: IPAddress, _ pb: UInt16) -> UInt64 {
        let ea = FlowTable.mix(a.high &* 0x9e37_79b9_7f4a_7c15 ^ a.low ^ (UInt64(pa) << 48))
        let eb = FlowTable.mix(b.high &* 0x9e37_79b9_7f4a_7c15 ^ b.low ^ (UInt64(pb) << 48))
        // Addition is symmetric: both directions of a flow hash alike.
        return FlowTable.mix((ea &+ eb) ^ seed)
    }

    // MARK: Lookup, insert, remove

    /// The flow a packet belongs to and its direction, if the table knows it.
    public func lookup(source: IPAddress, sourcePort: UInt16,
                       destination: IPAddress, destinationPort: UInt16) -> (entry: UInt32, direction: FlowDirection)? {
        let h = hash(source, sourcePort, destination, destinationPort)
        let tag = h >> 32
        var slot = Int(truncatingIfNeeded: h) & indexMask
        while true {
            let v = index[slot]
            if v == 0 { return nil }
            if v >> 32 == tag {
                let e = UInt32(truncatingIfNeeded: v) - 1
                if let d = entries[Int(e)].direction(source: source, sourcePort: sourcePort,
                                                     destination: destination, destinationPort: destinationPort) {
                    return (e, d)
                }
            }
            slot = (slot + 1) & indexMask
        }
    }

    /// A slot of a slab: the head of its free list (index + 1, 0 = none; a free slot holds the
    /// next one's link, read by `next`), else the next never-used slot; nil when full.
    @inline(__always)
    static func take(free: inout UInt32, highWater: inout UInt32, capacity: Int, next: (UInt32) -> UInt32) -> UInt32? {
        if free != 0 {
            let slot = free - 1
            free = next(slot)
            return slot
        }
        guard Int(highWater) < capacity else { return nil }
        defer { highWater += 1 }
        return highWater
    }

    /// Adds a new flow with `a` as its initiator. Nil when the table is full.
    public func insert(initiator a: IPAddress, port pa: UInt16, responder b: IPAddress, port pb: UInt16,
                       now: Timestamp) -> UInt32? {
        guard let e = FlowTable.take(free: &freeEntryHead, highWater: &entryHighWater, capacity: capacity,
                                     next: { entries[Int($0)].blockRef }) else { return nil }
        (entries + Int(e)).initialize(to: FlowEntry(a: a, portA: pa, b: b, portB: pb, now: now))
        let h = hash(a, pa, b, pb)
        var slot = Int(truncatingIfNeeded: h) & indexMask
        while index[slot] != 0 { slot = (slot + 1) & indexMask }
        index[slot] = (h >> 32) << 32 | UInt64(e + 1)
        count += 1
        return e
    }

    /// Removes a flow (and its connection block, if any).
    public func remove(_ e: UInt32) {
        releaseBlock(e)
        let entry = entries[Int(e)]
        let h = hash(entry.addressA, entry.portA, entry.addressB, entry.portB)
        var slot = Int(truncatingIfNeeded: h) & indexMask
        while UInt32(truncatingIfNeeded: index[slot]) != e + 1 {
            precondition(index[slot] != 0, "flow table index lost an entry")
            slot = (slot + 1) & indexMask
        }
        // Backward-shift deletion: move later members of the probe run into the hole.
        var hole = slot
        var next = (hole + 1) & indexMask
        while index[next] != 0 {
            let ne = Int(UInt32(truncatingIfNeeded: index[next]) - 1)
            let n = entries[ne]
            let home = Int(truncatingIfNeeded: hash(n.addressA, n.portA, n.addressB, n.portB)) & indexMask
            // Move if the hole lies cyclically in [home, next).
            let distHole = (hole - home) & indexMask
            let distNext = (next - home) & indexMask
            if distHole < distNext {
                index[hole] = index[next]
                hole = next
            }
            next = (next + 1) & indexMask
        }
        index[hole] = 0
        entries[Int(e)].state = .free
        entries[Int(e)].blockRef = freeEntryHead
        freeEntryHead = e + 1
        count -= 1
    }

    /// The entry at `e` (which must be in use), for reading and writing in place.
    public subscript(e: UInt32) -> FlowEntry {
        unsafeAddress { UnsafePointer(entries + Int(e)) }
        unsafeMutableAddress { entries + Int(e) }
    }

    // MARK: Connection blocks

    /// Gives flow `e` a connection block, zeroed. False when the pool is exhausted (the flow
    /// then goes on with its entry alone).
    @discardableResult
    public func attachBlock(_ e: UInt32) -> Bool {
        if entries[Int(e)].blockRef != 0 { return true }
        guard let b = FlowTable.take(free: &freeBlockHead, highWater: &blockHighWater, capacity: blockCapacity,
                                     next: { blocks[Int($0)].owner }) else { return false }
        var block = ConnectionBlock()
        block.owner = e
        nextSerial &+= 1
        block.serial = nextSerial
        (blocks + Int(b)).initialize(to: block)
        entries[Int(e)].blockRef = b + 1
        blockCount += 1
        return true
    }

    public func releaseBlock(_ e: UInt32) {
        let ref = entries[Int(e)].blockRef
        guard ref != 0 else { return }
        blocks[Int(ref - 1)].owner = freeBlockHead
        freeBlockHead = ref
        entries[Int(e)].blockRef = 0
        blockCount -= 1
    }

    /// The connection block of flow `e`, if it has one.
    public func block(_ e: UInt32) -> UnsafeMutablePointer<ConnectionBlock>? {
        let ref = entries[Int(e)].blockRef
        return ref == 0 ? nil : blocks + Int(ref - 1)
    }

    // MARK: Expiry and listing

    /// Removes idle flows, looking at up to `budget` slots from where the last call stopped
    /// (so a periodic call of small budget sweeps the table without a pause). Returns how many
    /// flows it removed.
    @discardableResult
    public func expire(now: Timestamp, budget: Int) -> Int {
        guard entryHighWater > 0 else { return 0 }
        var removed = 0
        for _ in 0..<min(budget, Int(entryHighWater)) {
            if sweepCursor >= entryHighWater { sweepCursor = 0 }
            let e = sweepCursor
            sweepCursor += 1
            let entry = entries[Int(e)]
            let state = entry.state
            guard state != .free else { continue }
            var timeout = timeouts.timeout(for: state)
            if entry.flags.contains(.pickedUp) && !entry.isConfirmed && state != .close {
                timeout = Timestamp.Duration(deciseconds: min(timeout.deciseconds, timeouts.unconfirmedPickup.deciseconds))
            }
            let deadline = entry.lastSeen &+ timeout.deciseconds
            if now.deciseconds >= entry.lastSeen && now.deciseconds > deadline {
                remove(e)
                removed += 1
            } else if state.isClosed && entry.blockRef != 0
                        && now.deciseconds > entry.lastSeen &+ timeouts.closedBlockLinger.deciseconds {
                releaseBlock(e)
            }
        }
        return removed
    }

    /// Makes room in a full table, as conntrack's early drop does: removes a flow that is not
    /// confirmed (`FlowEntry.isConfirmed`: a handshake not completed, a pickup seen one way)
    /// or, failing that, one already closed, among the next `evictionScan` entries from where
    /// the last search stopped. False when it found none (every flow there is a live,
    /// confirmed connection).
    public func evictUnconfirmed() -> Bool {
        guard entryHighWater > 0 else { return false }
        var closed: UInt32?
        for _ in 0..<min(FlowTable.evictionScan, Int(entryHighWater)) {
            if evictCursor >= entryHighWater { evictCursor = 0 }
            let e = evictCursor
            evictCursor += 1
            let entry = entries[Int(e)]
            guard entry.state != .free else { continue }
            if !entry.isConfirmed {
                remove(e)
                return true
            }
            if closed == nil && entry.state.isClosed { closed = e }
        }
        if let e = closed {
            remove(e)
            return true
        }
        return false
    }

    /// Calls `body` with the index of every flow in use (entries may be changed through the
    /// subscript meanwhile, but not removed).
    public func forEachIndex(_ body: (UInt32) -> Void) {
        for e in 0..<entryHighWater where entries[Int(e)].state != .free { body(e) }
    }

    /// Calls `body` for every flow in use.
    public func forEach(_ body: (UInt32, FlowEntry, ConnectionBlock?) -> Void) {
        for e in 0..<entryHighWater {
            let entry = entries[Int(e)]
            guard entry.state != .free else { continue }
            body(e, entry, entry.blockRef == 0 ? nil : blocks[Int(entry.blockRef - 1)])
        }
    }

    // MARK: Memory

    public struct Memory: Sendable {
        public var entryBytes: Int
        public var blockBytes: Int
        public var indexBytes: Int
        /// Bytes reserved for the whole capacity.
        public var reservedBytes: Int
        /// Bytes of the parts in use (entries and blocks ever touched, plus the index).
        public var touchedBytes: Int
    }

    public var memory: Memory {
        let es = MemoryLayout<FlowEntry>.stride, bs = MemoryLayout<ConnectionBlock>.stride
        let ix = (indexMask + 1) * MemoryLayout<UInt64>.stride
        return Memory(entryBytes: es, blockBytes: bs, indexBytes: ix,
                      reservedBytes: capacity * es + blockCapacity * bs + ix,
                      touchedBytes: Int(entryHighWater) * es + Int(blockHighWater) * bs + ix)
    }
}
