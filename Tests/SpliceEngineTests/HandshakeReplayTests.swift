import Testing
import SpliceWire
@testable import SpliceEngine

/// Retransmissions, losses and refusals during the handshake (SYNPROXY-like: the SYN-ACK goes
/// to the client untouched, the client's ACK becomes the SYN to the proxy, the engine answers
/// the proxy's SYN-ACK with the client's ACK): the client sees exactly what it would see
/// without us, and the proxy hears of a flow only once its client is proven.
@Suite("Handshake replay: retransmissions, losses, refusals")
struct HandshakeReplayTests {
    @Test("a proxy socket that answers without the timestamps both ends use (the router has them off): the flow goes on alone, the socket reset, the client's ACK to the server")
    func proxyWithoutTimestamps() {
        let h = ResilientHarness()
        h.synAndSynAck()
        h.clientAckBecomesSyn()
        let noTS = SynOptions(maximumSegmentSize: 65000, windowScale: 10, sackPermitted: true, timestamps: nil)
        let synAck = h.proxyPacket(down: true, flags: [.syn, .ack], seq: h.proxyDownISN, ack: h.c.clientISN + 1, options: noTS)
        let before = h.injector.packets.count
        #expect(h.feed(synAck, fromProxy: true).0 == .drop)
        let f = h.engine.flows(now: .seconds(0))[0]
        #expect(f.mode == .bypass && f.reason == .proxyWithoutTimestamps)
        #expect(h.engine.counters.resilient.proxyWithoutTimestamps == 1)
        let injected = Array(h.injector.packets[before...])
        #expect(injected.count == 2)
        guard injected.count == 2 else { return }
        // The half-open socket is reset (to it, through lo), as the client would.
        let rst = h.spec(injected[0].bytes)
        #expect(injected[0].local && rst.flags == .rst && rst.sequenceNumber == h.c.clientISN + 1)
        #expect(rst.source == h.c.client && rst.destination == h.c.server && h.valid(injected[0].bytes))
        // The client's handshake ACK, which became the replayed SYN, goes on to the server.
        let ack = h.spec(injected[1].bytes)
        #expect(!injected[1].local && ack.flags == .ack && ack.payload.isEmpty)
        #expect(ack.sequenceNumber == h.c.clientISN + 1 && ack.acknowledgmentNumber == h.c.serverISN + 1)
        #expect(ack.window == h.clientAckWindow && h.valid(injected[1].bytes))
        #expect(h.options(injected[1].bytes).timestamps == TCPTimestamps(value: h.clientAckTS.value, echo: 90000))
        // From then on the ends' packets pass untouched.
        let data = h.endPacket(fromClient: true, flags: [.ack, .psh], seq: h.c.clientISN + 1, ack: h.c.serverISN + 1,
                               window: 502, ts: TCPTimestamps(value: 5200, echo: 90000), payload: [1, 2, 3])
        let (v, out) = h.feed(data)
        #expect(v == .accept && out == data)
        #expect(h.engine.counters.verdicts.toProxy == 1)
    }

    @Test("ECN set up by both ends: the replayed SYN asks for it, and the up socket's ECN SYN is answered with ECE; otherwise neither",
          arguments: [(true, true, true), (true, false, true), (false, true, true), (true, true, false)])
    func ecnSetUpAsTheEndsDid(clientAsks: Bool, serverAccepts: Bool, upSocketAsks: Bool) {
        let h = ResilientHarness()
        let ends = clientAsks && serverAccepts
        _ = h.feed(h.endPacket(fromClient: true, flags: clientAsks ? [.syn, .ece, .cwr] : .syn, seq: h.c.clientISN,
                               window: h.clientSynWindow, synOptions: h.clientSynOptions))
        // A server that does not take ECN answers an ECN SYN without ECE.
        _ = h.feed(h.endPacket(fromClient: false, flags: serverAccepts && clientAsks ? [.syn, .ack, .ece] : [.syn, .ack],
                               seq: h.c.serverISN, ack: h.c.clientISN + 1, window: h.serverSynAckWindow,
                               synOptions: h.serverSynAckOptions))
        let (v, replayed) = h.feed(h.clientAck)
        #expect(v.action == .repeatHook && h.valid(replayed))
        #expect(h.spec(replayed).flags == (ends ? [.syn, .ece, .cwr] : .syn))
        h.proxySynAckAnswered()
        let upSyn = h.proxyPacket(down: false, flags: upSocketAsks ? [.syn, .ece, .cwr] : .syn, seq: h.proxyUpISN,
                                  ack: SeqNumber(0), options: h.proxyUpOptions)
        let before = h.injector.packets.count
        #expect(h.feed(upSyn, fromProxy: true).0 == .drop)
        #expect(h.injector.packets.count == before + 1)
        guard h.injector.packets.count == before + 1 else { return }
        let answer = h.injector.packets[before].bytes
        #expect(h.spec(answer).flags == (ends && upSocketAsks ? [.syn, .ack, .ece] : [.syn, .ack]) && h.valid(answer))
        #expect(h.engine.counters.resilient.ecnFlows == (ends ? 1 : 0))
    }

    @Test("a server that refuses (RST to the SYN) resets the client as without us; nothing reaches the proxy")
    func refused() {
        let h = ResilientHarness()
        _ = h.feed(h.clientSyn)
        let rst = h.c.packet(fromClient: false, flags: [.rst, .ack], seq: SeqNumber(0), ack: h.c.clientISN + 1)
        let (v, out) = h.feed(rst)
        #expect(v == .accept && out == rst)
        #expect(h.injector.packets.isEmpty && h.engine.counters.verdicts.toProxy == 0)
        #expect(h.engine.flows(now: .seconds(0))[0].state == .close)
    }

    @Test("a Fast Open SYN reaches the server without its option and its data; the handshake goes on as for any client",
          arguments: [false, true])
    func fastOpenSyn(partial: Bool) {
        let h = ResilientHarness()
        var s = TCPPacketSpec(source: h.c.client, destination: h.c.server, sourcePort: h.c.clientPort,
                              destinationPort: h.c.serverPort, sequenceNumber: h.c.clientISN, flags: .syn,
                              window: h.clientSynWindow, payload: Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
        s.setSynOptions(h.clientSynOptions)
        s.options += [34, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1]
        let syn = partial ? h.partial(s.bytes()) : s.bytes()
        let (v, out) = h.feed(syn, partial: partial)
        #expect(v.action == .accept && v.rewrittenLength == out.count && out.count < syn.count)
        let o = h.spec(out)
        #expect(o.flags == .syn && o.sequenceNumber == h.c.clientISN && o.payload.isEmpty && o.window == h.clientSynWindow)
        #expect(h.valid(out))
        #expect(h.options(out) == h.options(h.clientSyn))
        var kinds: [UInt8] = []
        var copy = out
        copy.withUnsafeMutableBytes { for opt in TCPPacket($0)!.tcp.options { kinds.append(opt.kind) } }
        #expect(!kinds.contains(34))
        #expect(h.engine.counters.resilient.fastOpenRemoved == 1)
        #expect(h.phase == .clientSyn)
        // The server acknowledges the SYN alone; the client's ACK (its data comes after) is replayed.
        #expect(h.feed(h.serverSynAck).0 == .accept)
        h.clientAckBecomesSyn()
    }

    @Test("a retransmitted client SYN before the server answered goes on to the server")
    func clientSynRetransmitted() {
        let h = ResilientHarness()
        _ = h.feed(h.clientSyn)
        let (v, out) = h.feed(h.clientSyn)
        #expect(v == .accept && out == h.clientSyn)
        #expect(h.phase == .clientSyn)
    }

    @Test("a retransmitted client SYN with a later TSval: the SYN replayed to the proxy carries that one")
    func clientSynRetransmittedLaterTimestamp() {
        let h = ResilientHarness()
        _ = h.feed(h.clientSyn)
        let later = h.endPacket(fromClient: true, flags: .syn, seq: h.c.clientISN, window: h.clientSynWindow,
                                synOptions: SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                                                       timestamps: TCPTimestamps(value: 6000, echo: 0)))
        #expect(h.feed(later).0 == .accept)
        #expect(h.feed(h.serverSynAck).0 == .accept)
        h.clientAckBecomesSyn(synTSval: 6000)
    }

    @Test("a client SYN retransmitted after the server answered (the SYN-ACK lost) goes on; the replayed SYN carries its TSval")
    func clientSynRetransmittedAfterSynAck() {
        let h = ResilientHarness()
        h.synAndSynAck()
        let later = h.endPacket(fromClient: true, flags: .syn, seq: h.c.clientISN, window: h.clientSynWindow,
                                synOptions: SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                                                       timestamps: TCPTimestamps(value: 6000, echo: 0)))
        let (v, out) = h.feed(later, at: 1)
        #expect(v == .accept && out == later)
        #expect(h.phase == .serverSynAck)
        // The server's SYN-ACK again (answering it), untouched, then the client's ACK.
        let (v2, out2) = h.feed(h.serverSynAck, at: 1)
        #expect(v2 == .accept && out2 == h.serverSynAck)
        h.clientAckBecomesSyn(at: 1, synTSval: 6000)
    }

    @Test("the server's SYN-ACK retransmitted before the client's ACK goes to the client untouched again")
    func synAckRetransmittedEarly() {
        let h = ResilientHarness()
        h.synAndSynAck()
        let (v, out) = h.feed(h.serverSynAck, at: 1)
        #expect(v == .accept && out == h.serverSynAck)
        #expect(h.phase == .serverSynAck)
        #expect(h.engine.counters.verdicts.toProxy == 0 && h.injector.packets.isEmpty)
    }

    @Test("a replay the proxy leaves unanswered: within the patience nothing changes; past it, the next end packet finds the flow in bypass (proxy-no-answer)")
    func replayUnanswered() {
        let h = ResilientHarness()
        h.synAndSynAck()
        h.clientAckBecomesSyn(at: 0)
        // The server's data before the patience: dropped (the proxy's socket is not up).
        let data = h.endPacket(fromClient: false, flags: .ack, seq: h.c.serverISN + 1, ack: h.c.clientISN + 1,
                               ts: TCPTimestamps(value: 90100, echo: 5100), payload: [1, 2, 3])
        #expect(h.feed(data, at: 2.9).0 == .drop)
        #expect(h.phase == .synToProxy)
        // Its retransmission after: the flow goes on alone, the packet as it came.
        let (v, out) = h.feed(data, at: 3.1)
        #expect(v == .accept && out == data)
        let f = h.engine.flows(now: .seconds(3.1))[0]
        #expect(f.mode == .bypass && f.reason == .proxyNoAnswer)
        #expect(h.engine.counters.resilient.replaysAbandoned == 1)
        // The proxy's late SYN-ACK finds no flow to speak for: dropped, and never reaches the client.
        let late = h.proxyPacket(down: true, flags: [.syn, .ack], seq: h.proxyDownISN, ack: h.c.clientISN + 1)
        #expect(h.feed(late, fromProxy: true, at: 3.2).0 == .drop)
    }

    @Test("a stale socket answering the replayed SYN with an ACK (a dead proxy's, holding the tuple) is reset; the real SYN-ACK after it is answered")
    func staleSocketAnswersReplay() {
        let h = ResilientHarness()
        h.synAndSynAck()
        h.clientAckBecomesSyn()
        let challenge = h.proxyPacket(down: true, flags: .ack, seq: SeqNumber(123_456), ack: SeqNumber(654_321))
        #expect(h.feed(challenge, fromProxy: true).0 == .drop)
        #expect(h.injector.packets.count == 1 && h.engine.counters.resilient.staleSocketsReset == 1)
        if let rst = h.injector.packets.first {
            let s = h.spec(rst.bytes)
            #expect(rst.local && s.flags == .rst && s.sequenceNumber == SeqNumber(654_321))
        }
        #expect(h.phase == .synToProxy)
        h.proxySynAckAnswered()
    }

    @Test("a client ACK that does not acknowledge the server's SYN-ACK is dropped; the right one still proves the client")
    func wrongAckDropped() {
        let h = ResilientHarness()
        h.synAndSynAck()
        for wrong in [h.c.serverISN, h.c.serverISN + 2, h.c.serverISN + 0x1000_0000] {
            let bad = h.endPacket(fromClient: true, flags: .ack, seq: h.c.clientISN + 1, ack: wrong,
                                  window: h.clientAckWindow, ts: h.clientAckTS)
            #expect(h.feed(bad).0 == .drop)
        }
        #expect(h.phase == .serverSynAck && h.state == .synReceived)
        #expect(h.engine.counters.verdicts.toProxy == 0 && h.engine.counters.resilient.clientsValidated == 0)
        #expect(h.engine.counters.resilient.pendingHeld == 0 && h.injector.packets.isEmpty)
        h.clientAckBecomesSyn()
        #expect(h.state == .established)
    }

    @Test("a client ACK answering a SYN-ACK the engine never saw: the flow goes on alone (bypass, handshake-unseen); nothing reaches the proxy")
    func clientAckBeforeSeenSynAck() {
        let h = ResilientHarness()
        _ = h.feed(h.clientSyn)
        let data = h.endPacket(fromClient: true, flags: .ack, seq: h.c.clientISN + 1, ack: h.c.serverISN + 1,
                               window: h.clientAckWindow, ts: h.clientAckTS, payload: [1, 2, 3])
        let (v, out) = h.feed(data)
        #expect(v == .accept && out == data)
        let f = h.engine.flows(now: .seconds(0))[0]
        #expect(f.mode == .bypass && f.reason == .handshakeUnseen && f.state == .established)
        #expect(h.engine.counters.verdicts.toProxy == 0 && h.engine.counters.resilient.pendingHeld == 0)
        #expect(h.injector.packets.isEmpty)
        // The server's SYN-ACK seen late changes nothing: untouched, still bypass.
        let (v2, out2) = h.feed(h.serverSynAck)
        #expect(v2 == .accept && out2 == h.serverSynAck)
        #expect(h.engine.flows(now: .seconds(0))[0].mode == .bypass && h.engine.counters.verdicts.toProxy == 0)
    }

    @Test("the client's handshake ACK carrying data (its pure ACK lost) proves it: SYN to the proxy, the data held and given after the handshake ACK")
    func ackWithDataHeld() {
        let h = ResilientHarness()
        h.synAndSynAck()
        let payload = [UInt8](repeating: 0x51, count: 30)
        let data = h.endPacket(fromClient: true, flags: [.ack, .psh], seq: h.c.clientISN + 1, ack: h.c.serverISN + 1,
                               window: 700, ts: TCPTimestamps(value: 5200, echo: 90000), payload: payload)
        h.clientAckBecomesSyn(data)
        #expect(h.engine.counters.resilient.pendingHeld == 1)
        // The handshake ACK built for the proxy takes that packet's window and TSval.
        let released = h.proxySynAckAnswered(clientTSval: 5200, window: 700)
        #expect(released.count == 1)
        guard let p = released.first else { return }
        let s = h.spec(p.bytes)
        #expect(p.local && h.valid(p.bytes))
        #expect(s.flags == [.ack, .psh] && s.sequenceNumber == h.c.clientISN + 1)
        #expect(s.acknowledgmentNumber == h.proxyDownISN + 1 && s.payload == payload && s.window == 700)
        #expect(h.options(p.bytes).timestamps == TCPTimestamps(value: 5200, echo: 777))
    }

    @Test("a FIN in the client's handshake ACK is held and given to the proxy's socket after the handshake ACK")
    func ackWithFinHeld() {
        let h = ResilientHarness()
        h.synAndSynAck()
        let fin = h.endPacket(fromClient: true, flags: [.fin, .ack], seq: h.c.clientISN + 1, ack: h.c.serverISN + 1,
                              window: h.clientAckWindow, ts: h.clientAckTS)
        h.clientAckBecomesSyn(fin)
        #expect(h.engine.counters.resilient.pendingHeld == 1)
        let released = h.proxySynAckAnswered()
        #expect(released.count == 1)
        guard let p = released.first else { return }
        let s = h.spec(p.bytes)
        #expect(p.local && h.valid(p.bytes))
        #expect(s.flags == [.fin, .ack] && s.sequenceNumber == h.c.clientISN + 1 && s.acknowledgmentNumber == h.proxyDownISN + 1)
    }

    @Test("a proxy SYN-ACK before the engine sent the proxy a SYN is dropped, unanswered")
    func proxySynAckBeforeSynDropped() {
        let h = ResilientHarness()
        h.synAndSynAck()
        #expect(h.feed(h.proxySynAck, fromProxy: true).0 == .drop)
        #expect(h.injector.packets.isEmpty && h.engine.counters.resilient.proxyPacketsDropped == 1)
        #expect(h.phase == .serverSynAck)
    }

    @Test("the proxy's SYN-ACK retransmitted (the engine's ACK lost) is answered with the ACK again; the translation keeps the first")
    func proxySynAckRetransmitted() {
        let h = ResilientHarness()
        h.synAndSynAck()
        h.clientAckBecomesSyn()
        #expect(h.proxySynAckAnswered().isEmpty)
        // The retransmission carries a later TSval: the ACK echoes it.
        let again = h.proxyPacket(down: true, flags: [.syn, .ack], seq: h.proxyDownISN, ack: h.c.clientISN + 1,
                                  options: SynOptions(maximumSegmentSize: 65000, windowScale: 10, sackPermitted: true,
                                                      timestamps: TCPTimestamps(value: 1777, echo: 5000)))
        #expect(h.proxySynAckAnswered(again, at: 1, proxyTSval: 1777).isEmpty)
        #expect(h.injector.toProxy.count == 2)
        // The client's next packet still goes to the proxy with the offsets of the first SYN-ACK.
        let data = h.endPacket(fromClient: true, flags: .ack, seq: h.c.clientISN + 1, ack: h.c.serverISN + 1,
                               window: h.clientAckWindow, ts: TCPTimestamps(value: 5300, echo: 90000), payload: [1, 2, 3])
        let (v, out) = h.feed(data, at: 1)
        #expect(v.action == .repeatHook && !v.inScratch)
        #expect(h.spec(out).acknowledgmentNumber == h.proxyDownISN + 1 && h.valid(out))
        #expect(h.options(out).timestamps == TCPTimestamps(value: 5300, echo: 777))
    }

    @Test("the server's SYN-ACK retransmitted before the proxy answered sends the SYN to the proxy again; once the proxy's socket is up, it is dropped; a late client SYN is dropped")
    func synAckRetransmittedMiddle() {
        let h = ResilientHarness()
        h.synAndSynAck()
        h.clientAckBecomesSyn()
        // The SYN is with the proxy (or lost on the way), its socket not up yet: the server's
        // retry carries it again, the same SYN.
        let (v, out) = h.feed(h.serverSynAck, at: 1)
        #expect(v.action == .repeatHook && v.inScratch && v.mark == h.engine.marks.toProxy)
        #expect(h.spec(out).flags == .syn && h.spec(out).sequenceNumber == h.c.clientISN && h.valid(out))
        #expect(h.feed(h.clientSyn, at: 1).0 == .drop)
        #expect(h.phase == .synToProxy)
        // The proxy's socket facing the client is up, the one facing the server not yet.
        #expect(h.proxySynAckAnswered(at: 1).isEmpty)
        #expect(h.feed(h.serverSynAck, at: 2).0 == .drop)
        #expect(h.feed(h.clientSyn, at: 2).0 == .drop)
        #expect(h.phase == .downEstablished)
        #expect(h.injector.toProxy.count == 1)
    }

    @Test("the proxy's upstream SYN retransmitted is answered again with the server's ISN")
    func proxySynRetransmitted() {
        let h = ResilientHarness()
        h.synAndSynAck()
        h.clientAckBecomesSyn()
        h.proxySynAckAnswered()
        let before = h.injector.packets.count
        #expect(h.feed(h.proxySyn, fromProxy: true).0 == .drop)
        #expect(h.feed(h.proxySyn, fromProxy: true).0 == .drop)
        #expect(h.injector.packets.count == before + 2)
        for p in h.injector.packets[before...] {
            let s = h.spec(p.bytes)
            #expect(s.flags == [.syn, .ack] && s.sequenceNumber == h.c.serverISN && s.acknowledgmentNumber == h.proxyUpISN + 1)
            #expect(p.local && h.valid(p.bytes))
        }
        #expect(h.phase == .upstreamAnswered)
    }

    @Test("the server's SYN-ACK retransmitted after the upstream answer goes to the up socket, which ACKs it")
    func synAckRetransmittedLate() {
        let h = ResilientHarness()
        h.synAndSynAck()
        h.clientAckBecomesSyn()
        h.proxySynAckAnswered()
        _ = h.feed(h.proxySyn, fromProxy: true)
        // The proxy's ACK to the server was lost: the server retransmits its SYN-ACK.
        let (v, out) = h.feed(h.serverSynAck, at: 1)
        #expect(v.action == .repeatHook && !v.inScratch)
        let s = h.spec(out)
        #expect(s.flags == [.syn, .ack] && s.sequenceNumber == h.c.serverISN)
        #expect(s.acknowledgmentNumber == h.proxyUpISN + 1 && h.valid(out))
        // The up socket's ACK goes to the server as the client's.
        let (v2, out2) = h.feed(h.proxyPacket(down: false, flags: .ack, seq: h.proxyUpISN + 1, ack: h.c.serverISN + 1),
                                fromProxy: true, at: 1)
        #expect(v2.action == .accept && h.spec(out2).sequenceNumber == h.c.clientISN + 1)
        #expect(h.phase == .established)
    }

    @Test("options the client did not offer are not replayed to the proxy, and the handshake ACK has no timestamps then")
    func optionsClientDidNotOffer() {
        let h = ResilientHarness()
        let plainSyn = h.endPacket(fromClient: true, flags: .syn, seq: h.c.clientISN, window: 8192,
                                   synOptions: SynOptions(maximumSegmentSize: 536, windowScale: nil, sackPermitted: false,
                                                          timestamps: nil))
        #expect(h.feed(plainSyn).0 == .accept)
        let sa = h.endPacket(fromClient: false, flags: [.syn, .ack], seq: h.c.serverISN, ack: h.c.clientISN + 1,
                             synOptions: SynOptions(maximumSegmentSize: 1400, windowScale: 9, sackPermitted: true,
                                                    timestamps: nil))
        let (v1, out1) = h.feed(sa)
        #expect(v1 == .accept && out1 == sa)
        let ack = h.endPacket(fromClient: true, flags: .ack, seq: h.c.clientISN + 1, ack: h.c.serverISN + 1, window: 4000)
        let (v2, out2) = h.feed(ack)
        #expect(v2.action == .repeatHook && v2.inScratch)
        let s = h.spec(out2)
        #expect(s.flags == .syn && s.sequenceNumber == h.c.clientISN && s.window == 8192 && h.valid(out2))
        let o = h.options(out2)
        #expect(o.maximumSegmentSize == 536 && o.windowScale == nil && !o.sackPermitted && o.timestamps == nil)
        // The proxy offers everything; the ACK the engine answers with carries no option.
        _ = h.feed(h.proxySynAck, fromProxy: true)
        #expect(h.injector.toProxy.count == 1)
        guard let injected = h.injector.toProxy.first else { return }
        let a = h.spec(injected)
        #expect(a.flags == .ack && a.acknowledgmentNumber == h.proxyDownISN + 1 && a.sequenceNumber == h.c.clientISN + 1)
        #expect(a.options.isEmpty && a.window == 4000 && h.valid(injected))
    }

    @Test("options the server did not answer with are not replayed to the proxy (both ends must have negotiated them)")
    func optionsServerDidNotAnswer() {
        let h = ResilientHarness()
        #expect(h.feed(h.clientSyn).0 == .accept)
        let sa = h.endPacket(fromClient: false, flags: [.syn, .ack], seq: h.c.serverISN, ack: h.c.clientISN + 1,
                             synOptions: SynOptions(maximumSegmentSize: 1400, windowScale: nil, sackPermitted: false,
                                                    timestamps: nil))
        #expect(h.feed(sa).0 == .accept)
        let ack = h.endPacket(fromClient: true, flags: .ack, seq: h.c.clientISN + 1, ack: h.c.serverISN + 1, window: 4000)
        let (v, out) = h.feed(ack)
        #expect(v.action == .repeatHook && v.inScratch)
        let o = h.options(out)
        #expect(o.maximumSegmentSize == 1460 && o.windowScale == nil && !o.sackPermitted && o.timestamps == nil)
        _ = h.feed(h.proxySynAck, fromProxy: true)
        #expect(h.injector.toProxy.count == 1)
        guard let injected = h.injector.toProxy.first else { return }
        #expect(h.spec(injected).options.isEmpty && h.valid(injected))
    }
}
