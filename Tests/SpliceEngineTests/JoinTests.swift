import Testing
import SpliceWire
@testable import SpliceEngine

/// The balancer's join (seed 003 claim 10; Splice/Join.swift), on crafted packets: the two
/// connections watched, the windows shut while pending, the drain check, and every packet of
/// a far end translated onto the other connection (addresses, ports, sequence and
/// acknowledgement numbers, window scale, timestamps), with a checksum that stays valid.
@Suite("Balancer join (seed 003 claim 10)")
struct JoinTests {
    let client = IPAddress("10.0.1.2")!, vip = IPAddress("10.0.9.1")!
    let local = IPAddress("10.0.2.1")!, backend = IPAddress("10.0.2.2")!
    let cISN = SeqNumber(1000), p1ISN = SeqNumber(0xffff_ff00), p2ISN = SeqNumber(5000), bISN = SeqNumber(70000)
    let ws7 = SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true, timestamps: TCPTimestamps(value: 100, echo: 0))

    struct Sent { var verdict: Verdict; var bytes: [UInt8] }

    /// Feeds a packet; `proxy`: from one of the proxy's balancer sockets (OUTPUT, the mark).
    @discardableResult
    func feed(_ e: Engine, from src: IPAddress, _ sport: UInt16, to dst: IPAddress, _ dport: UInt16, flags: TCPFlags,
              seq: SeqNumber, ack: SeqNumber = SeqNumber(0), window: UInt16 = 1000, ts: TCPTimestamps? = nil,
              syn: SynOptions? = nil, payload: Int = 0, data: [UInt8]? = nil, proxy: Bool = false,
              ecn: UInt8 = ECN.notECT) -> Sent {
        var spec = TCPPacketSpec(source: src, destination: dst, sourcePort: sport, destinationPort: dport,
                                 sequenceNumber: seq, acknowledgmentNumber: ack, flags: flags,
                                 payload: data ?? [UInt8](repeating: 0x62, count: payload))
        spec.window = window
        if let syn { spec.setSynOptions(syn) } else if let ts { spec.setSynOptions(SynOptions(timestamps: ts)) }
        var bytes = spec.bytes()
        if ecn != ECN.notECT { bytes.withUnsafeMutableBytes { TCPPacket($0)?.updateECN(ecn) } }
        let info = proxy ? PacketInfo(hook: Engine.Hook.localOut, mark: SpliceMarks().balancer) : PacketInfo()
        let v = bytes.withUnsafeMutableBytes { e.process($0, info: info, now: .seconds(1)) }
        return Sent(verdict: v, bytes: bytes)
    }

    /// Both connections through their handshakes; the client sent a 100-byte request, the
    /// proxy wrote it on as 120 bytes (a header added), the backend acknowledged them.
    func setUp() -> (Engine, RecordingInjector, JoinRequest) {
        let e = Engine(table: FlowTable(capacity: 64, blockCapacity: 64))
        let inj = RecordingInjector()
        e.injector = inj
        e.services = [ServiceAddress(address: vip, port: 80)]
        feed(e, from: client, 40000, to: vip, 80, flags: .syn, seq: cISN, syn: ws7)
        feed(e, from: vip, 80, to: client, 40000, flags: [.syn, .ack], seq: p1ISN, ack: cISN + 1,
             syn: SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true, timestamps: TCPTimestamps(value: 9000, echo: 100)), proxy: true)
        feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 1, ack: p1ISN + 1, ts: TCPTimestamps(value: 101, echo: 9000))
        feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 1, ack: p1ISN + 1, ts: TCPTimestamps(value: 102, echo: 9000), payload: 100)
        feed(e, from: vip, 80, to: client, 40000, flags: .ack, seq: p1ISN + 1, ack: cISN + 101, ts: TCPTimestamps(value: 9001, echo: 102), proxy: true)
        feed(e, from: local, 61000, to: backend, 80, flags: .syn, seq: p2ISN,
             syn: SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true, timestamps: TCPTimestamps(value: 500, echo: 0)), proxy: true)
        feed(e, from: backend, 80, to: local, 61000, flags: [.syn, .ack], seq: bISN, ack: p2ISN + 1,
             syn: SynOptions(maximumSegmentSize: 1400, windowScale: 9, sackPermitted: true, timestamps: TCPTimestamps(value: 77000, echo: 500)))
        feed(e, from: local, 61000, to: backend, 80, flags: .ack, seq: p2ISN + 1, ack: bISN + 1, ts: TCPTimestamps(value: 501, echo: 77000), proxy: true)
        feed(e, from: local, 61000, to: backend, 80, flags: [.ack, .psh], seq: p2ISN + 1, ack: bISN + 1, ts: TCPTimestamps(value: 502, echo: 77000), payload: 120, proxy: true)
        var r = JoinRequest(client: client, clientPort: 40000, service: vip, servicePort: 80,
                            local: local, localPort: 61000, backend: backend, backendPort: 80)
        r.readFromClient = 100
        r.writtenToBackend = 120
        r.ruleID = 3
        return (e, inj, r)
    }

    /// Prepared, the backend's acknowledgement of the proxy's 120 bytes seen, joined.
    func joinDrained(_ e: Engine, _ r: JoinRequest) {
        #expect(e.prepareJoin(r) == .accepted)
        feed(e, from: backend, 80, to: local, 61000, flags: .ack, seq: bISN + 1, ack: p2ISN + 121, window: 100,
             ts: TCPTimestamps(value: 77001, echo: 502))
        #expect(e.join(r, now: .seconds(1)) == .accepted)
    }

    @Test func watchesThenShutsWindowsThenJoinsWhenDrained() {
        let (e, inj, r) = setUp()
        #expect(e.table.count == 2)
        // Not prepared: refused.
        if case .refused = e.join(r, now: .seconds(1)) {} else { Issue.record("join before prepare was not refused") }
        #expect(e.prepareJoin(r) == .accepted)
        // While pending, a proxy socket's window goes out as zero.
        let shut = feed(e, from: vip, 80, to: client, 40000, flags: .ack, seq: p1ISN + 1, ack: cISN + 101, window: 500,
                        ts: TCPTimestamps(value: 9002, echo: 102), proxy: true)
        #expect(shut.verdict.rewrittenLength != nil)
        var b = shut.bytes
        b.withUnsafeMutableBytes { #expect(TCPPacket($0)?.tcp.window == 0) }
        // And one toward the backend (its window too: shut).
        let shutUp = feed(e, from: local, 61000, to: backend, 80, flags: .ack, seq: p2ISN + 121, ack: bISN + 1, window: 800,
                          ts: TCPTimestamps(value: 503, echo: 77000), proxy: true)
        var up = shutUp.bytes
        up.withUnsafeMutableBytes { #expect(TCPPacket($0)?.tcp.window == 0) }
        // The backend has not acknowledged the 120 bytes yet: not drained.
        #expect(e.join(r, now: .seconds(1)) == .notDrained)
        feed(e, from: backend, 80, to: local, 61000, flags: .ack, seq: bISN + 1, ack: p2ISN + 121, window: 100,
             ts: TCPTimestamps(value: 77001, echo: 502))
        #expect(e.join(r, now: .seconds(1)) == .accepted)
        #expect(e.counters.balancer.joined == 1)
        // Two window updates: to the client (as from the service) and to the backend.
        #expect(inj.packets.count == 2)
        #expect(e.counters.balancer.windowUpdatesSkipped == 0)
        #expect(inj.misaddressed == 0)
        // Each carries its proxy socket's last TSval (P1 9002, P2 503), not the translated
        // clock 1,000 ticks ahead: a packet that socket sent before the join, whose verdict
        // leaves after the update, must not look older to the end (PAWS).
        for var sent in inj.packets.map(\.bytes) {
            sent.withUnsafeMutableBytes { buf in
                guard let p = TCPPacket(buf) else { Issue.record("unparsable window update"); return }
                let ts = p.tcp.options.summary.timestamps
                if p.destination == client {
                    #expect(ts?.value == 9002 && ts?.echo == 102)
                    #expect(p.tcp.window == 400)               // the backend's 100 << 9 >> 7
                } else {
                    #expect(ts?.value == 503 && ts?.echo == 77001)
                }
                #expect(p.checksumIsValid)
            }
        }
        let modes = e.flows(now: .seconds(1)).map(\.mode)
        #expect(modes == [.joined, .joined])
        #expect(e.flows(now: .seconds(1)).contains { $0.joinedTo == "10.0.2.2:80" && $0.joinRule == 3 })
    }

    @Test("an end that saw no zero window while pending gets no window update that tells it nothing new")
    func aWindowUpdateThatTellsNothingNewIsLeftOut() {
        let (e, inj, r) = setUp()
        // Nothing from the proxy's sockets while pending: neither end saw a zero window.
        joinDrained(e, r)
        // To the backend: the client's acknowledgement (as P2's, bISN + 1) and its window
        // (1000 at scale 7, P2's too): nothing new, left out. To the client: the backend's
        // window (100 << 9 >> 7 = 400) is smaller than P1's last (1000): sent, a bound the
        // client must know.
        #expect(e.counters.balancer.windowUpdatesSkipped == 1)
        #expect(inj.packets.count == 1)
        var sent = inj.packets.first?.bytes ?? []
        sent.withUnsafeMutableBytes { buf in
            guard let p = TCPPacket(buf) else { Issue.record("no window update"); return }
            #expect(p.destination == client && p.tcp.window == 400 && p.checksumIsValid)
        }
    }

    @Test("a pair the proxy relays to its end is let go: entries closed, blocks back, later packets accepted untouched")
    func relayedPairIsLetGo() {
        let (e, _, r) = setUp()
        // A join under way: not let go (the proxy cancels it first).
        #expect(e.prepareJoin(r) == .accepted)
        #expect(!e.letGoRelayed(r))
        e.cancelJoin(r)
        let blocks = e.table.blockCount
        #expect(e.letGoRelayed(r))
        #expect(e.counters.balancer.relayedLetGo == 1)
        #expect(e.table.blockCount == blocks - 2)
        #expect(e.flows(now: .seconds(1)).map(\.state) == [.close, .close])
        // A packet the queue still held: accepted as it is, from either end or the proxy.
        let late = feed(e, from: backend, 80, to: local, 61000, flags: [.ack, .psh], seq: bISN + 1, ack: p2ISN + 121,
                        ts: TCPTimestamps(value: 77002, echo: 502), payload: 300)
        #expect(late.verdict.action == .accept && late.verdict.rewrittenLength == nil)
        let mine = feed(e, from: vip, 80, to: client, 40000, flags: .ack, seq: p1ISN + 1, ack: cISN + 101, window: 500,
                        ts: TCPTimestamps(value: 9002, echo: 102), proxy: true)
        #expect(mine.verdict.action == .accept && mine.verdict.rewrittenLength == nil)
        // Gone: nothing more to let go, nothing to join.
        #expect(!e.letGoRelayed(r))
        if case .refused = e.prepareJoin(r) {} else { Issue.record("a let-go pair could still be prepared") }
        // The closed entries are forgotten after the closed state's timeout.
        e.tick(now: .seconds(30))
        #expect(e.table.count == 0)
    }

    @Test("bytes a far end sent past what the proxy read, not yet acknowledged by its socket: not drained")
    func unreadBytesAtASocketAreNotDrained() {
        let (e, _, r) = setUp()
        #expect(e.prepareJoin(r) == .accepted)
        feed(e, from: backend, 80, to: local, 61000, flags: .ack, seq: bISN + 1, ack: p2ISN + 121, window: 100,
             ts: TCPTimestamps(value: 77001, echo: 502))
        // 50 more bytes of the client reached the proxy's socket (its ACK delayed): the proxy
        // read 100.
        feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 101, ack: p1ISN + 1,
             ts: TCPTimestamps(value: 103, echo: 9001), payload: 50)
        #expect(e.join(r, now: .seconds(1)) == .notDrained)
        // The proxy read them too (and wrote them on, acknowledged): drained.
        var more = r
        more.readFromClient = 150
        more.writtenToBackend = 170
        feed(e, from: local, 61000, to: backend, 80, flags: [.ack, .psh], seq: p2ISN + 121, ack: bISN + 1,
             ts: TCPTimestamps(value: 503, echo: 77001), payload: 50, proxy: true)
        feed(e, from: backend, 80, to: local, 61000, flags: .ack, seq: bISN + 1, ack: p2ISN + 171, window: 100,
             ts: TCPTimestamps(value: 77002, echo: 503))
        #expect(e.join(more, now: .seconds(1)) == .accepted)
    }

    @Test func translatesBothWaysWithValidChecksums() {
        let (e, _, r) = setUp()
        joinDrained(e, r)

        // The backend's response: onto the client's connection, as from the service.
        let down = feed(e, from: backend, 80, to: local, 61000, flags: [.ack, .psh], seq: bISN + 1, ack: p2ISN + 121,
                        window: 100, ts: TCPTimestamps(value: 77010, echo: 502), payload: 500)
        #expect(down.verdict.rewrittenLength != nil)
        var d = down.bytes
        d.withUnsafeMutableBytes { buf in
            guard let p = TCPPacket(buf) else { Issue.record("unparsable"); return }
            #expect(p.source == vip && p.destination == client)
            #expect(p.tcp.sourcePort == 80 && p.tcp.destinationPort == 40000)
            #expect(p.tcp.sequenceNumber == p1ISN + 1)             // P1 wrote nothing
            #expect(p.tcp.acknowledgmentNumber == cISN + 101)      // the client's 100 bytes
            #expect(p.tcp.window == 400)                           // 100 << 9 >> 7
            #expect(p.checksumIsValid)
            // TSval in the client's view of the service's clock: P1's last (9001) + the bias,
            // moved on by the backend's 9 ticks.
            let ts = p.tcp.options.summary.timestamps
            #expect(ts?.value == 9001 &+ Engine.joinTimestampBias &+ 9)
            // TSecr: P2's own 502 back into the client's clock, which the bias leaves behind
            // the client's latest (an echo of the proxy's time, before the join).
            #expect(ts?.echo == 102 &- Engine.joinTimestampBias)
        }
        // The client's ACK: onto the backend connection, as from the proxy's port.
        let up = feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 501, window: 300,
                      ts: TCPTimestamps(value: 110, echo: 9001 &+ Engine.joinTimestampBias &+ 9))
        var u = up.bytes
        u.withUnsafeMutableBytes { buf in
            guard let p = TCPPacket(buf) else { Issue.record("unparsable"); return }
            #expect(p.source == local && p.destination == backend)
            #expect(p.tcp.sourcePort == 61000 && p.tcp.destinationPort == 80)
            #expect(p.tcp.sequenceNumber == p2ISN + 121)           // the proxy wrote 120 for 100
            #expect(p.tcp.acknowledgmentNumber == bISN + 501)
            #expect(p.tcp.window == 300)                           // both scale 7
            #expect(p.checksumIsValid)
            let ts = p.tcp.options.summary.timestamps
            #expect(ts?.value == 502 &+ Engine.joinTimestampBias &+ 8)   // P2's last + bias + the client's 8 ticks
            #expect(ts?.echo == 77010)                                    // the backend's own clock back
        }
        // A proxy socket's packet after the join is dropped.
        let late = feed(e, from: vip, 80, to: client, 40000, flags: .ack, seq: p1ISN + 1, ack: cISN + 101, proxy: true)
        #expect(late.verdict == .drop)
        // Its RST too (TCP_REPAIR failed), and the joined flows' state does not see it.
        let states = e.flows(now: .seconds(1)).map(\.state)
        let reset = feed(e, from: local, 61000, to: backend, 80, flags: [.rst, .ack], seq: p2ISN + 121, ack: bISN + 501, proxy: true)
        #expect(reset.verdict == .drop)
        #expect(e.flows(now: .seconds(1)).map(\.state) == states)
        #expect(e.flows(now: .seconds(1)).allSatisfy { $0.mode == .joined })
    }

    @Test("a joined client's ECN-capable packets reach the backend not ECN-capable; one marked CE is dropped")
    func clientECNTakenOffTowardTheBackend() {
        let (e, _, r) = setUp()
        joinDrained(e, r)
        let up = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 101, ack: p1ISN + 1,
                      ts: TCPTimestamps(value: 110, echo: 9001), payload: 200, ecn: ECN.ect0)
        #expect(up.verdict.rewrittenLength != nil)
        var u = up.bytes
        u.withUnsafeMutableBytes { buf in
            guard let p = TCPPacket(buf), case .v4(let ip) = p.ip else { Issue.record("unparsable"); return }
            #expect(p.destination == backend)
            #expect(p.ecn == ECN.notECT)
            #expect(ip.tos == 0)
            #expect(ip.checksumIsValid)
            #expect(p.checksumIsValid)
        }
        #expect(e.counters.balancer.ectCleared == 1)
        // Not ECN-capable already: untouched, not counted.
        feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 301, ack: p1ISN + 1,
             ts: TCPTimestamps(value: 111, echo: 9001))
        #expect(e.counters.balancer.ectCleared == 1)
        let ce = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 301, ack: p1ISN + 1,
                      ts: TCPTimestamps(value: 112, echo: 9001), payload: 100, ecn: ECN.ce)
        #expect(ce.verdict == .drop)
        #expect(e.counters.balancer.ceDropped == 1)
        // The backend's packets toward the client keep their field.
        let down = feed(e, from: backend, 80, to: local, 61000, flags: [.ack, .psh], seq: bISN + 1, ack: p2ISN + 321,
                        window: 100, ts: TCPTimestamps(value: 77010, echo: 502), payload: 50, ecn: ECN.ect1)
        var d = down.bytes
        d.withUnsafeMutableBytes { buf in
            guard let p = TCPPacket(buf) else { Issue.record("unparsable"); return }
            #expect(p.destination == client)
            #expect(p.ecn == ECN.ect1)
        }
        #expect(e.counters.balancer.ectCleared == 1)
    }

    @Test func aBackendTakenOutHasItsJoinedFlowsResetAtBothEnds() {
        let (e, inj, r) = setUp()
        joinDrained(e, r)
        // 500 bytes of the backend's answer went to the client; the client has not acknowledged them.
        feed(e, from: backend, 80, to: local, 61000, flags: [.ack, .psh], seq: bISN + 1, ack: p2ISN + 121,
             window: 100, ts: TCPTimestamps(value: 77010, echo: 502), payload: 500)
        inj.packets.removeAll()
        #expect(e.resetJoined(backend: IPAddress("10.0.2.9")!, port: 80) == 0)
        #expect(e.resetJoined(backend: backend, port: 81) == 0)
        #expect(e.resetJoined(backend: backend, port: 80) == 1)
        #expect(e.counters.balancer.resetForBackend == 1)
        var toClient: [SeqNumber] = [], toBackend: [SeqNumber] = []
        for var sent in inj.packets.map(\.bytes) {
            sent.withUnsafeMutableBytes { buf in
                guard let p = TCPPacket(buf) else { Issue.record("unparsable reset"); return }
                #expect(p.tcp.flags.contains(.rst))
                #expect(p.checksumIsValid)
                if p.destination == client {
                    #expect(p.source == vip && p.tcp.sourcePort == 80 && p.tcp.destinationPort == 40000)
                    toClient.append(p.tcp.sequenceNumber)
                } else {
                    #expect(p.destination == backend && p.source == local && p.tcp.sourcePort == 61000)
                    toBackend.append(p.tcp.sequenceNumber)
                }
            }
        }
        // The client: at what it expects after the 500 bytes, and at its last acknowledgement.
        #expect(toClient == [p1ISN + 501, p1ISN + 1])
        // The backend: at what it acknowledged last, which is all the proxy wrote.
        #expect(toBackend == [p2ISN + 121])
        #expect(e.flows(now: .seconds(1)).allSatisfy { $0.state == .close })
        // Done once: the entries are closed.
        #expect(e.resetJoined(backend: backend, port: 80) == 0)
        // The client had read 200 of the 500 bytes when the resets came (both missed its
        // receive point): its challenge ACK names that point, and is answered with a reset
        // there; the ACK goes no further.
        inj.packets.removeAll()
        let challenge = feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 201)
        #expect(challenge.verdict == .drop)
        #expect(inj.packets.count == 1)
        #expect(e.counters.balancer.resetAgain == 1)
        if var sent = inj.packets.first?.bytes {
            sent.withUnsafeMutableBytes { buf in
                guard let p = TCPPacket(buf) else { Issue.record("unparsable reset"); return }
                #expect(p.destination == client && p.source == vip && p.tcp.destinationPort == 40000)
                #expect(p.tcp.flags == .rst && p.tcp.sequenceNumber == p1ISN + 201)
                #expect(p.checksumIsValid)
            }
        }
    }

    @Test func unknownOrUnpreparedConnectionsAreRefused() {
        let (e, _, r) = setUp()
        var other = r
        other.localPort = 61001
        if case .refused(let why) = e.prepareJoin(other) { #expect(why.contains("backend connection")) } else {
            Issue.record("an unknown backend connection was not refused")
        }
        e.cancelJoin(r)
        #expect(e.counters.balancer.cancelled == 0)
        _ = e.prepareJoin(r)
        e.cancelJoin(r)
        #expect(e.counters.balancer.cancelled == 1)
    }
}
