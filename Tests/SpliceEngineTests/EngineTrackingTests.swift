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
        #expect(b.pointee.isnA == c.clientISN && b.pointee.isnB == c.serverISN)
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
        #expect(e.counters.flowsReopened == 1)
    }

    @Test("a flow first seen mid-stream is picked up as ESTABLISHED bypass, the lower port as server")
    func pickup() {
        let c = Conversation()
        let e = engine()
        #expect(e.feed(c.packet(fromClient: false, flags: .ack, seq: SeqNumber(5), ack: SeqNumber(9), payload: 10)) == .accept)
        let f = e.flows(now: .seconds(0))[0]
        #expect(f.state == .established && f.pickedUp && f.reason == .pickedUpMidStream)
        #expect(f.initiator == c.client && f.responderPort == 80 && f.bytesFromResponder == 10)
        #expect(e.counters.flowsPickedUp == 1)
    }

    @Test("a stray RST of no known flow is accepted untracked")
    func strayReset() {
        let c = Conversation()
        let e = engine()
        #expect(e.feed(c.packet(fromClient: true, flags: .rst, seq: SeqNumber(1))) == .accept)
        #expect(e.table.count == 0 && e.counters.untracked == 1)
    }

    @Test("a full table lets new flows through untracked and counts them")
    func tableFull() {
        var c = Conversation()
        let e = engine(capacity: 2)
        for p in 0..<5 {
            c.clientPort = UInt16(50000 + p)
            #expect(e.feed(c.syn) == .accept)
        }
        #expect(e.table.count == 2 && e.counters.tableFull == 3)
    }

    @Test("flows beyond the block pool go on with their entry alone")
    func blocksExhausted() {
        var c = Conversation()
        let e = engine(capacity: 8, blocks: 1)
        for p in 0..<3 {
            c.clientPort = UInt16(50000 + p)
            e.feed(c.syn); e.feed(c.synAck); e.feed(c.ack)
        }
        #expect(e.counters.blocksExhausted == 2)
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
        #expect(e.counters.malformed == 2 && e.counters.notTCP == 1 && e.counters.fragments == 1)
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
        #expect(e.table.count == 0 && e.counters.flowsExpired == 1)
    }
}
