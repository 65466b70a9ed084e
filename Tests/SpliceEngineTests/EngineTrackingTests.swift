import Testing
import SpliceWire
@testable import SpliceEngine

@Suite("Engine tracking (bypass)")
struct EngineTrackingTests {
    func engine(capacity: Int = 64, blocks: Int? = nil) -> Engine {
        Engine(table: FlowTable(capacity: capacity, blockCapacity: blocks, seed: 11))
    }

    @Test("handshake: SYN_SENT, SYN_RECV, ESTABLISHED; ISNs and options learned; all accepted")
    func handshake() throws {
        let c = Conversation()
        let e = engine()
        #expect(e.feed(c.syn) == .accept)
        var flows = e.flows(now: .seconds(0))
        #expect(flows.count == 1 && flows[0].state == .synSent)
        #expect(e.feed(c.synAck) == .accept)
        #expect(e.flows(now: .seconds(0))[0].state == .synReceived)
        #expect(e.feed(c.ack) == .accept)
        flows = e.flows(now: .seconds(0))
        let f = flows[0]
        #expect(f.state == .established && f.mode == .bypass && !f.pickedUp)
        #expect(f.initiator == c.client && f.initiatorPort == c.clientPort && f.responderPort == c.serverPort)
        let oa = try #require(f.initiatorOptions)
        #expect(oa.maximumSegmentSize == 1460 && oa.windowScale == 7 && oa.sackPermitted && oa.timestamps)
        let ob = try #require(f.responderOptions)
        #expect(ob.maximumSegmentSize == 1400 && ob.windowScale == 9 && !ob.sackPermitted && !ob.timestamps)
        let (entry, _) = try #require(e.table.lookup(source: c.client, sourcePort: c.clientPort,
                                                     destination: c.server, destinationPort: c.serverPort))
        let b = try #require(e.table.block(entry))
        #expect(b.pointee.ends.original.isn == c.clientISN && b.pointee.ends.reply.isn == c.serverISN)
    }

    @Test("an ACK that does not acknowledge the SYN-ACK does not establish")
    func wrongAck() {
        let c = Conversation()
        let e = engine()
        e.feed(c.syn); e.feed(c.synAck)
        e.feed(c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 7))
        #expect(e.flows(now: .seconds(0))[0].state == .synReceived)
    }

    @Test("FINs both ways and their ACKs reach TIME_WAIT, releasing the connection block")
    func closeSequence() {
        let c = Conversation()
        let e = engine()
        e.feed(c.syn); e.feed(c.synAck); e.feed(c.ack)
        let cs = c.clientISN + 1, ss = c.serverISN + 1
        e.feed(c.packet(fromClient: true, flags: [.ack, .psh], seq: cs, ack: ss, payload: 100))
        e.feed(c.packet(fromClient: false, flags: [.ack, .psh], seq: ss, ack: cs + 100, payload: 3000))
        #expect(e.flows(now: .seconds(0))[0].bytesFromInitiator == 100)
        #expect(e.flows(now: .seconds(0))[0].bytesFromResponder == 3000)
        e.feed(c.packet(fromClient: false, flags: [.fin, .ack], seq: ss + 3000, ack: cs + 100))
        #expect(e.flows(now: .seconds(0))[0].state == .finWait)
        e.feed(c.packet(fromClient: true, flags: .ack, seq: cs + 100, ack: ss + 3001))
        #expect(e.flows(now: .seconds(0))[0].state == .closeWait)
        e.feed(c.packet(fromClient: true, flags: [.fin, .ack], seq: cs + 100, ack: ss + 3001))
        #expect(e.flows(now: .seconds(0))[0].state == .lastAck)
        #expect(e.table.blockCount == 1)
        e.feed(c.packet(fromClient: false, flags: .ack, seq: ss + 3001, ack: cs + 101))
        let f = e.flows(now: .seconds(0))[0]
        #expect(f.state == .timeWait && !f.hasBlock)
        #expect(e.table.blockCount == 0)
    }

    @Test("RST closes the flow; a new SYN on the same tuple reopens it")
    func resetAndReopen() {
        let c = Conversation()
        let e = engine()
        e.feed(c.syn); e.feed(c.synAck); e.feed(c.ack)
        e.feed(c.packet(fromClient: false, flags: .rst, seq: c.serverISN + 1))
        #expect(e.flows(now: .seconds(0))[0].state == .close)
        #expect(e.table.blockCount == 0)
        e.feed(c.syn, at: 1)
        #expect(e.flows(now: .seconds(1))[0].state == .synSent)
        #expect(e.counters.flows.reopened == 1)
    }

    @Test("a flow first seen mid-stream is picked up as ESTABLISHED bypass, the lower port as server")
    func pickup() {
        let c = Conversation()
        let e = engine()
        #expect(e.feed(c.packet(fromClient: false, flags: .ack, seq: SeqNumber(5), ack: SeqNumber(9), payload: 10)) == .accept)
        let f = e.flows(now: .seconds(0))[0]
        #expect(f.state == .established && f.pickedUp && f.reason == .pickedUpMidStream)
        #expect(f.initiator == c.client && f.responderPort == 80 && f.bytesFromResponder == 10)
        #expect(e.counters.flows.pickedUp == 1)
    }

    @Test("a stray RST of no known flow is accepted untracked")
    func strayReset() {
        let c = Conversation()
        let e = engine()
        #expect(e.feed(c.packet(fromClient: true, flags: .rst, seq: SeqNumber(1))) == .accept)
        #expect(e.table.count == 0 && e.counters.packets.untracked == 1)
    }

    /// Whether the engine tracks the flow of conversation `c`.
    func tracked(_ e: Engine, _ c: Conversation) -> Bool {
        e.table.lookup(source: c.client, sourcePort: c.clientPort, destination: c.server, destinationPort: c.serverPort) != nil
    }

    func conversation(port: Int) -> Conversation {
        var c = Conversation()
        c.clientPort = UInt16(port)
        return c
    }

    @Test("early drop: a full table of SYN_SENT flows still admits a new flow, evicting one of them, and counts it")
    func earlyDropOfSynSent() {
        let e = engine(capacity: 4)
        let old = (0..<4).map { conversation(port: 50000 + $0) }
        for c in old { #expect(e.feed(c.syn) == .accept) }
        #expect(e.table.count == 4 && e.counters.flows.earlyDrops == 0)
        let newcomer = conversation(port: 51000)
        #expect(e.feed(newcomer.syn) == .accept)
        #expect(tracked(e, newcomer))
        #expect(e.table.count == 4 && old.filter { tracked(e, $0) }.count == 3)
        #expect(e.counters.flows.earlyDrops == 1 && e.counters.flows.tableFull == 0 && e.counters.flows.created == 5)
        // A SYN flood goes on: every new SYN still finds room.
        for p in 0..<20 { e.feed(conversation(port: 52000 + p).syn) }
        #expect(e.counters.flows.earlyDrops == 21 && e.counters.flows.tableFull == 0 && e.table.count == 4)
        // The newest can complete its handshake.
        let last = conversation(port: 52019)
        e.feed(last.synAck); e.feed(last.ack)
        #expect(tracked(e, last))
        #expect(e.flows(now: .seconds(0)).contains { $0.initiatorPort == 52019 && $0.state == .established })
    }

    @Test("early drop spares confirmed flows: a full table of ESTABLISHED flows refuses a new one (tableFull); an unconfirmed one goes first, a closed one next")
    func earlyDropSparesConfirmed() {
        let e = engine(capacity: 4)
        let est = (0..<3).map { conversation(port: 50000 + $0) }
        for c in est { e.feed(c.syn); e.feed(c.synAck); e.feed(c.ack) }
        // One handshake not completed (SYN_RECV), placed last: the scan must skip the others.
        let half = conversation(port: 50003)
        e.feed(half.syn); e.feed(half.synAck)
        let first = conversation(port: 51000)
        #expect(e.feed(first.syn) == .accept)
        #expect(e.counters.flows.earlyDrops == 1 && e.counters.flows.tableFull == 0)
        #expect(!tracked(e, half) && tracked(e, first) && est.allSatisfy { tracked(e, $0) })
        // Now every flow is confirmed: a new one is let through untracked and the others stay.
        e.feed(first.synAck); e.feed(first.ack)
        let all = est + [first]
        #expect(e.flows(now: .seconds(0)).allSatisfy { $0.state == .established })
        let refused = conversation(port: 51001)
        #expect(e.feed(refused.syn) == .accept)
        #expect(!tracked(e, refused) && all.allSatisfy { tracked(e, $0) })
        #expect(e.counters.flows.tableFull == 1 && e.counters.flows.earlyDrops == 1 && e.table.count == 4)
        // A reset one is closed: it makes room when nothing unconfirmed is left.
        let reset = all[2]
        e.feed(reset.packet(fromClient: false, flags: .rst, seq: reset.serverISN + 1))
        let admitted = conversation(port: 51002)
        #expect(e.feed(admitted.syn) == .accept)
        #expect(tracked(e, admitted) && !tracked(e, reset))
        #expect(all.filter { $0.clientPort != reset.clientPort }.allSatisfy { tracked(e, $0) })
        #expect(e.counters.flows.earlyDrops == 2 && e.counters.flows.tableFull == 1)
    }

    @Test("early drop: a pickup seen one way only is unconfirmed and goes before an established flow")
    func earlyDropOfOneWayPickup() {
        let e = engine(capacity: 2)
        let est = conversation(port: 50000)
        e.feed(est.syn); e.feed(est.synAck); e.feed(est.ack)
        let lone = conversation(port: 50001)
        e.feed(lone.packet(fromClient: true, flags: .ack, seq: SeqNumber(5), ack: SeqNumber(9)))
        let c = conversation(port: 51000)
        e.feed(c.syn)
        #expect(tracked(e, c) && tracked(e, est) && !tracked(e, lone))
        #expect(e.counters.flows.earlyDrops == 1 && e.counters.flows.tableFull == 0)
    }

    @Test("a mid-stream pickup seen one way only expires after unconfirmedPickup; one seen both ways does not")
    func unconfirmedPickupExpires() {
        let e = engine()
        let oneWay = conversation(port: 50001)
        let bothWays = conversation(port: 50002)
        e.feed(oneWay.packet(fromClient: false, flags: .ack, seq: SeqNumber(5), ack: SeqNumber(9), payload: 10))
        e.feed(bothWays.packet(fromClient: false, flags: .ack, seq: SeqNumber(5), ack: SeqNumber(9), payload: 10))
        e.feed(bothWays.packet(fromClient: true, flags: .ack, seq: SeqNumber(9), ack: SeqNumber(15)), at: 1)
        #expect(e.flows(now: .seconds(1)).allSatisfy { $0.state == .established && $0.pickedUp })
        #expect(e.table.timeouts.unconfirmedPickup == .seconds(30))
        e.tick(now: .seconds(29))
        #expect(tracked(e, oneWay) && tracked(e, bothWays) && e.counters.flows.expired == 0)
        e.tick(now: .seconds(31))
        #expect(!tracked(e, oneWay) && tracked(e, bothWays) && e.counters.flows.expired == 1)
        // The one seen both ways keeps ESTABLISHED's timeout (7500 s: past a default
        // keepalive's first probe, 7200 s).
        e.tick(now: .seconds(7202))
        #expect(tracked(e, bothWays) && e.counters.flows.expired == 1)
        e.tick(now: .seconds(7502))
        #expect(!tracked(e, bothWays) && e.counters.flows.expired == 2)
    }

    @Test("flows beyond the block pool go on with their entry alone")
    func blocksExhausted() {
        var c = Conversation()
        let e = engine(capacity: 8, blocks: 1)
        for p in 0..<3 {
            c.clientPort = UInt16(50000 + p)
            e.feed(c.syn); e.feed(c.synAck); e.feed(c.ack)
        }
        #expect(e.counters.flows.blocksExhausted == 2)
        #expect(e.flows(now: .seconds(0)).allSatisfy { $0.state == .established })
    }

    @Test("what cannot be parsed gets the kernel's default verdict, and is counted")
    func malformed() {
        let e = engine()
        #expect(e.feed([]) == .accept)
        #expect(e.feed([0x45, 0, 0]) == .accept)
        var udp = Conversation().syn
        udp[9] = 17
        #expect(e.feed(udp) == .accept)
        var frag = Conversation().syn
        frag[6] = 0x20   // more fragments
        #expect(e.feed(frag) == .accept)
        #expect(e.counters.packets.malformed == 2 && e.counters.packets.notTCP == 1 && e.counters.packets.fragments == 1)
        #expect(e.table.count == 0)
    }

    @Test("IPv6 flows are tracked like IPv4 ones")
    func ipv6() {
        var c = Conversation()
        c.client = IPAddress("fd00:1::2")!
        c.server = IPAddress("fd00:2::2")!
        let e = engine()
        e.feed(c.syn); e.feed(c.synAck); e.feed(c.ack)
        let f = e.flows(now: .seconds(0))[0]
        #expect(f.state == .established && !f.initiator.isIPv4)
    }

    @Test("tick expires idle flows")
    func tickExpires() {
        let c = Conversation()
        let e = engine()
        e.feed(c.syn, at: 0)
        e.tick(now: .seconds(121))
        #expect(e.table.count == 0 && e.counters.flows.expired == 1)
    }
}
