import Testing
import SpliceWire
@testable import SpliceEngine

/// Retransmissions, losses and refusals during the handshake replay (FIG. 2A-2B): the client
/// sees exactly what it would see without us.
@Suite("Handshake replay: retransmissions, losses, refusals")
struct HandshakeReplayTests {
    let opts = SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                          timestamps: TCPTimestamps(value: 5000, echo: 0))
    let serverOpts = SynOptions(maximumSegmentSize: 1400, windowScale: 9, sackPermitted: true,
                                timestamps: TCPTimestamps(value: 90000, echo: 5000))
    let proxyOpts = SynOptions(maximumSegmentSize: 65000, windowScale: 10, sackPermitted: true,
                               timestamps: TCPTimestamps(value: 777, echo: 5000))

    func syn(_ h: ResilientHarness) -> [UInt8] { h.c.packet(fromClient: true, flags: .syn, seq: h.c.clientISN, options: opts) }
    func synAck(_ h: ResilientHarness) -> [UInt8] {
        h.c.packet(fromClient: false, flags: [.syn, .ack], seq: h.c.serverISN, ack: h.c.clientISN + 1, options: serverOpts)
    }
    func proxySynAck(_ h: ResilientHarness) -> [UInt8] {
        h.proxyPacket(down: true, flags: [.syn, .ack], seq: h.proxyDownISN, ack: h.c.clientISN + 1, options: proxyOpts)
    }
    func proxySyn(_ h: ResilientHarness) -> [UInt8] {
        h.proxyPacket(down: false, flags: .syn, seq: h.proxyUpISN, ack: SeqNumber(0), options: proxyOpts)
    }

    @Test("a server that refuses (RST to the SYN) resets the client as without us; nothing reaches the proxy")
    func refused() {
        let h = ResilientHarness()
        _ = h.feed(syn(h))
        let rst = h.c.packet(fromClient: false, flags: [.rst, .ack], seq: SeqNumber(0), ack: h.c.clientISN + 1)
        let (v, out) = h.feed(rst)
        #expect(v == .accept && out == rst)
        #expect(h.injector.packets.isEmpty)
        #expect(h.engine.flows(now: .seconds(0))[0].state == .close)
    }

    @Test("a retransmitted client SYN before the server answered goes on to the server")
    func clientSynRetransmitted() {
        let h = ResilientHarness()
        _ = h.feed(syn(h))
        let (v, out) = h.feed(syn(h))
        #expect(v == .accept && out == syn(h))
    }

    @Test("a retransmitted client SYN with a later TSval: the SYN replayed to the proxy carries that one")
    func clientSynRetransmittedLaterTimestamp() {
        let h = ResilientHarness()
        _ = h.feed(syn(h))
        let later = h.c.packet(fromClient: true, flags: .syn, seq: h.c.clientISN,
                               options: SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                                                   timestamps: TCPTimestamps(value: 6000, echo: 0)))
        _ = h.feed(later)
        let (_, out) = h.feed(synAck(h))
        #expect(h.options(out).timestamps == TCPTimestamps(value: 6000, echo: 0))
    }

    @Test("the server's SYN-ACK retransmitted before the proxy answered is replayed again")
    func synAckRetransmittedEarly() {
        let h = ResilientHarness()
        _ = h.feed(syn(h))
        let (v1, out1) = h.feed(synAck(h))
        let (v2, out2) = h.feed(synAck(h))
        #expect(v1.action == .repeatHook && v2.action == .repeatHook)
        #expect(out1 == out2)
        #expect(h.spec(out2).flags == .syn && h.spec(out2).sequenceNumber == h.c.clientISN)
    }

    @Test("the server's SYN-ACK retransmitted while the proxy has not connected upstream is dropped")
    func synAckRetransmittedMiddle() {
        let h = ResilientHarness()
        _ = h.feed(syn(h)); _ = h.feed(synAck(h)); _ = h.feed(proxySynAck(h), fromProxy: true)
        #expect(h.feed(synAck(h)).0 == .drop)
        // A client SYN retransmitted now (its SYN-ACK was lost) is dropped too: the proxy
        // retransmits its own SYN-ACK, which is translated again.
        #expect(h.feed(syn(h)).0 == .drop)
        let (v, out) = h.feed(proxySynAck(h), fromProxy: true)
        #expect(v.action == .accept && h.spec(out).sequenceNumber == h.c.serverISN)
    }

    @Test("the proxy's upstream SYN retransmitted is answered again with the server's ISN")
    func proxySynRetransmitted() {
        let h = ResilientHarness()
        _ = h.feed(syn(h)); _ = h.feed(synAck(h)); _ = h.feed(proxySynAck(h), fromProxy: true)
        _ = h.feed(h.c.packet(fromClient: true, flags: .ack, seq: h.c.clientISN + 1, ack: h.c.serverISN + 1))
        #expect(h.feed(proxySyn(h), fromProxy: true).0 == .drop)
        #expect(h.feed(proxySyn(h), fromProxy: true).0 == .drop)
        #expect(h.injector.packets.count == 2)
        for p in h.injector.packets {
            #expect(h.spec(p.bytes).sequenceNumber == h.c.serverISN && h.spec(p.bytes).acknowledgmentNumber == h.proxyUpISN + 1)
            #expect(p.local)
        }
    }

    @Test("the server's SYN-ACK retransmitted after the upstream answer goes to the up socket, which ACKs it")
    func synAckRetransmittedLate() {
        let h = ResilientHarness()
        _ = h.feed(syn(h)); _ = h.feed(synAck(h)); _ = h.feed(proxySynAck(h), fromProxy: true)
        _ = h.feed(h.c.packet(fromClient: true, flags: .ack, seq: h.c.clientISN + 1, ack: h.c.serverISN + 1))
        _ = h.feed(proxySyn(h), fromProxy: true)
        // The proxy's ACK to the server was lost: the server retransmits its SYN-ACK.
        let (v, out) = h.feed(synAck(h))
        #expect(v.action == .repeatHook && !v.inScratch)
        let s = h.spec(out)
        #expect(s.flags == [.syn, .ack] && s.acknowledgmentNumber == h.proxyUpISN + 1 && h.valid(out))
        // The up socket's ACK goes to the server as the client's.
        let (v2, out2) = h.feed(h.proxyPacket(down: false, flags: .ack, seq: h.proxyUpISN + 1, ack: h.c.serverISN + 1),
                                fromProxy: true)
        #expect(v2.action == .accept && h.spec(out2).sequenceNumber == h.c.clientISN + 1)
    }

    @Test("the client's data arriving before the proxy's SYN-ACK is dropped (the client retransmits)")
    func earlyClientData() {
        let h = ResilientHarness()
        _ = h.feed(syn(h)); _ = h.feed(synAck(h))
        let data = h.c.packet(fromClient: true, flags: .ack, seq: h.c.clientISN + 1, ack: h.c.serverISN + 1, payload: 10)
        #expect(h.feed(data).0 == .drop)
    }

    @Test("options the client did not offer are not replayed to the proxy")
    func optionsIntersection() {
        let h = ResilientHarness()
        let plainSyn = h.c.packet(fromClient: true, flags: .syn, seq: h.c.clientISN,
                                  options: SynOptions(maximumSegmentSize: 536, windowScale: nil, sackPermitted: false, timestamps: nil))
        _ = h.feed(plainSyn)
        let sa = h.c.packet(fromClient: false, flags: [.syn, .ack], seq: h.c.serverISN, ack: h.c.clientISN + 1,
                            options: SynOptions(maximumSegmentSize: 1400, windowScale: nil, sackPermitted: false, timestamps: nil))
        let (_, out) = h.feed(sa)
        let o = h.options(out)
        #expect(o.maximumSegmentSize == 536 && o.windowScale == nil && !o.sackPermitted && o.timestamps == nil)
    }
}
