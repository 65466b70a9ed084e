import Testing
import SpliceWire
@testable import SpliceEngine
import TestSupport

@Suite("FlowTable")
struct FlowTableTests {
    @Test("a flow entry is exactly one 64-byte cache line (seed 004's small part)")
    func entryLayout() {
        #expect(MemoryLayout<FlowEntry>.size == 64)
        #expect(MemoryLayout<FlowEntry>.stride == 64)
    }

    @Test("an entry is found from both directions' tuples")
    func lookupBothDirections() throws {
        let t = FlowTable(capacity: 16, seed: 1)
        let a = IPAddress("10.0.0.1")!, b = IPAddress("2001:db8::2")!
        let e = try #require(t.insert(initiator: a, port: 1234, responder: b, port: 80, now: .seconds(0)))
        let fwd = try #require(t.lookup(source: a, sourcePort: 1234, destination: b, destinationPort: 80))
        #expect(fwd.entry == e && fwd.direction == .original)
        let rev = try #require(t.lookup(source: b, sourcePort: 80, destination: a, destinationPort: 1234))
        #expect(rev.entry == e && rev.direction == .reply)
        #expect(t.lookup(source: a, sourcePort: 1235, destination: b, destinationPort: 80) == nil)
        #expect(t.lookup(source: b, sourcePort: 1234, destination: a, destinationPort: 80) == nil)
    }

    @Test("full table refuses new flows; removal frees the slot")
    func fullPolicy() throws {
        let t = FlowTable(capacity: 4, seed: 7)
        let a = IPAddress("10.0.0.1")!, b = IPAddress("10.0.0.2")!
        var ids: [UInt32] = []
        for p in 0..<4 { ids.append(try #require(t.insert(initiator: a, port: UInt16(1000 + p), responder: b, port: 80, now: .seconds(0)))) }
        #expect(t.insert(initiator: a, port: 2000, responder: b, port: 80, now: .seconds(0)) == nil)
        t.remove(ids[1])
        #expect(t.count == 3)
        #expect(t.insert(initiator: a, port: 2000, responder: b, port: 80, now: .seconds(0)) != nil)
        #expect(t.lookup(source: a, sourcePort: 1001, destination: b, destinationPort: 80) == nil)
    }

    @Test("random inserts and removes keep every live flow findable (backward-shift deletion)")
    func randomChurn() throws {
        // A tiny index forces long probe runs and wraparound.
        let t = FlowTable(capacity: 200, seed: 3)
        var rng = SplitMix64(seed: 42)
        var live: [UInt16: UInt32] = [:]
        let a = IPAddress("192.0.2.1")!, b = IPAddress("192.0.2.2")!
        for _ in 0..<20_000 {
            let port = UInt16(rng.next() % 400)
            if let e = live[port] {
                t.remove(e)
                live[port] = nil
            } else if let e = t.insert(initiator: a, port: port, responder: b, port: 443, now: .seconds(0)) {
                t[e].state = .established
                live[port] = e
            }
            if rng.next() % 97 == 0 {
                for (p, e) in live {
                    let found = try #require(t.lookup(source: b, sourcePort: 443, destination: a, destinationPort: p))
                    #expect(found.entry == e)
                }
            }
        }
        #expect(t.count == live.count)
    }

    @Test("connection blocks come from a bounded pool and go back to it")
    func blockPool() throws {
        let t = FlowTable(capacity: 8, blockCapacity: 2, seed: 5)
        let a = IPAddress("10.0.0.1")!, b = IPAddress("10.0.0.2")!
        let e1 = try #require(t.insert(initiator: a, port: 1, responder: b, port: 80, now: .seconds(0)))
        let e2 = try #require(t.insert(initiator: a, port: 2, responder: b, port: 80, now: .seconds(0)))
        let e3 = try #require(t.insert(initiator: a, port: 3, responder: b, port: 80, now: .seconds(0)))
        #expect(t.attachBlock(e1) && t.attachBlock(e2))
        #expect(!t.attachBlock(e3))
        t.releaseBlock(e1)
        #expect(t.attachBlock(e3))
        #expect(t.block(e3)?.pointee.owner == e3)
        #expect(t.blockCount == 2)
        t.remove(e2)
        #expect(t.blockCount == 1)
    }

    @Test("a closed flow that kept its block gives it back after the linger time, keeping its entry")
    func closedBlockLinger() throws {
        let t = FlowTable(capacity: 8, seed: 9)
        let a = IPAddress("10.0.0.1")!, b = IPAddress("10.0.0.2")!
        let e = try #require(t.insert(initiator: a, port: 1, responder: b, port: 80, now: .seconds(0)))
        t.attachBlock(e)
        t[e].state = .timeWait
        t.expire(now: .seconds(5), budget: 100)
        #expect(t.blockCount == 1)
        t.expire(now: .seconds(11), budget: 100)
        #expect(t.blockCount == 0 && t.count == 1)
    }

    @Test("idle flows expire after their state's timeout")
    func expiry() throws {
        var timeouts = FlowTimeouts()
        timeouts.established = .seconds(100)
        timeouts.timeWait = .seconds(10)
        let t = FlowTable(capacity: 8, timeouts: timeouts, seed: 9)
        let a = IPAddress("10.0.0.1")!, b = IPAddress("10.0.0.2")!
        let e1 = try #require(t.insert(initiator: a, port: 1, responder: b, port: 80, now: .seconds(0)))
        t[e1].state = .established
        let e2 = try #require(t.insert(initiator: a, port: 2, responder: b, port: 80, now: .seconds(0)))
        t[e2].state = .timeWait
        #expect(t.expire(now: .seconds(5), budget: 100) == 0)
        #expect(t.expire(now: .seconds(11), budget: 100) == 1)
        #expect(t.lookup(source: a, sourcePort: 2, destination: b, destinationPort: 80) == nil)
        #expect(t.expire(now: .seconds(101), budget: 100) == 1)
        #expect(t.count == 0)
    }
}
