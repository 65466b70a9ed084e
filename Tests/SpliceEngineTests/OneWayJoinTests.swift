import Testing
import SpliceRules
import SpliceWire
@testable import SpliceEngine

/// One-way joins (Splice/OneWayJoin.swift), on the join suite's two connections: one direction
/// translated, the other left to the proxy's sockets, whose packets and the ends' get each
/// other's numbers so that each end sees one connection; and the join both ways once the
/// relayed direction is over.
extension JoinTests {
    /// `bytes` of a verdict's packet, parsed.
    func parsed(_ s: Sent, _ check: (TCPPacket) -> Void) {
        var b = s.bytes
        b.withUnsafeMutableBytes { buf in
            guard let p = TCPPacket(buf) else { Issue.record("unparsable packet"); return }
            check(p)
        }
    }

    func injected(_ inj: RecordingInjector, _ i: Int, _ check: (TCPPacket) -> Void) {
        guard i < inj.packets.count else { Issue.record("no injected packet #\(i)"); return }
        var b = inj.packets[i].bytes
        b.withUnsafeMutableBytes { buf in
            guard let p = TCPPacket(buf) else { Issue.record("unparsable injected packet"); return }
            #expect(p.checksumIsValid)
            check(p)
        }
    }

    func joinOneWay(_ e: Engine, _ r: JoinRequest, _ d: OneWay) {
        var r = r
        r.oneWay = d
        #expect(e.prepareJoin(r) == .accepted)
        feed(e, from: backend, 80, to: local, 61000, flags: .ack, seq: bISN + 1, ack: p2ISN + 121, window: 100,
             ts: TCPTimestamps(value: 77001, echo: 502))
        #expect(e.join(r, now: .seconds(1)) == .accepted)
        #expect(e.counters.balancer.oneWayJoined == 1)
    }

    @Test("one-way to the client: the response translated, the client's bytes to the proxy, each side's acknowledgements carried")
    func oneWayToClient() {
        let (e, inj, r) = setUp()
        joinOneWay(e, r, .toClient)
        #expect(e.flows(now: .seconds(1)).allSatisfy { $0.joinOneWay == .toClient })
        let updates = inj.packets.count

        // The backend's response: onto the client's connection, acknowledging what P1
        // acknowledged (the client's 100 bytes) with P1's window, its clock merged with P1's.
        let down = feed(e, from: backend, 80, to: local, 61000, flags: [.ack, .psh], seq: bISN + 1, ack: p2ISN + 121,
                        window: 100, ts: TCPTimestamps(value: 77010, echo: 502), payload: 500)
        parsed(down) { p in
            #expect(p.source == vip && p.destination == client && p.tcp.destinationPort == 40000)
            #expect(p.tcp.sequenceNumber == p1ISN + 1)
            #expect(p.tcp.acknowledgmentNumber == cISN + 101)
            #expect(p.tcp.window == 1000)                      // P1's own, not the backend's
            // No bias: P1's last (9001) moved on by the backend's 9 ticks; toward the client the
            // clocks are merged instead.
            #expect(p.tcp.options.summary.timestamps?.value == UInt32(9010))
            #expect(p.checksumIsValid)
        }
        // The client sends 50 bytes (relayed) acknowledging 500 of the response: to P1,
        // acknowledging what P1 sent (nothing since the join); the acknowledgement goes to the
        // backend in an ACK of its own.
        let body = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 101, ack: p1ISN + 501,
                        window: 300, ts: TCPTimestamps(value: 120, echo: 9010), payload: 50)
        parsed(body) { p in
            #expect(p.destination == vip && p.tcp.destinationPort == 80)
            #expect(p.tcp.sequenceNumber == cISN + 101)
            #expect(p.tcp.acknowledgmentNumber == p1ISN + 1)
            #expect(p.checksumIsValid)
        }
        #expect(inj.packets.count == updates + 1)
        injected(inj, updates) { p in
            #expect(p.source == local && p.destination == backend && p.tcp.sourcePort == 61000)
            #expect(p.tcp.flags == .ack && p.tcp.payloadLength == 0)
            #expect(p.tcp.sequenceNumber == p2ISN + 121)
            #expect(p.tcp.acknowledgmentNumber == bISN + 501)
            #expect(p.tcp.window == 300)                       // both connections scale 7
            // The client's 120 in P2's clock (502 at the client's 102).
            #expect(p.tcp.options.summary.timestamps?.value == 520)
        }
        #expect(!inj.packets[updates].local)
        // P2 writes the 50 bytes on as 60 (relayed): it acknowledges what the client
        // acknowledged of the response, with the client's window; its older TSval raised.
        let relayed = feed(e, from: local, 61000, to: backend, 80, flags: [.ack, .psh], seq: p2ISN + 121, ack: bISN + 1,
                           window: 2000, ts: TCPTimestamps(value: 510, echo: 77010), payload: 60, proxy: true)
        parsed(relayed) { p in
            #expect(p.destination == backend)
            #expect(p.tcp.sequenceNumber == p2ISN + 121)
            #expect(p.tcp.acknowledgmentNumber == bISN + 501)
            #expect(p.tcp.window == 300)
            #expect(p.tcp.options.summary.timestamps?.value == 520)
            #expect(p.checksumIsValid)
        }
        // P1 acknowledges the client's 50 bytes: at the sequence number the client expects
        // after the response, its TSval not older than the response's.
        let p1ack = feed(e, from: vip, 80, to: client, 40000, flags: .ack, seq: p1ISN + 1, ack: cISN + 151,
                         ts: TCPTimestamps(value: 9005, echo: 120), proxy: true)
        parsed(p1ack) { p in
            #expect(p.destination == client)
            #expect(p.tcp.sequenceNumber == p1ISN + 501)
            #expect(p.tcp.acknowledgmentNumber == cISN + 151)
            #expect(p.tcp.options.summary.timestamps?.value == 9010)
            #expect(p.checksumIsValid)
        }
        // P1 writes nothing into the joined direction.
        #expect(feed(e, from: vip, 80, to: client, 40000, flags: [.ack, .psh], seq: p1ISN + 1, ack: cISN + 151,
                     payload: 10, proxy: true).verdict == .drop)
        // The backend acknowledges P2's 60 bytes (a pure ACK): to P2, where P2 receives.
        let backAck = feed(e, from: backend, 80, to: local, 61000, flags: .ack, seq: bISN + 501, ack: p2ISN + 181,
                           window: 100, ts: TCPTimestamps(value: 77020, echo: 520))
        parsed(backAck) { p in
            #expect(p.destination == local && p.tcp.destinationPort == 61000)
            #expect(p.tcp.sequenceNumber == bISN + 1)
            #expect(p.tcp.acknowledgmentNumber == p2ISN + 181)
        }
        // The client's pure ACK: onto the backend's connection at P2's sequence number.
        let cAck = feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 151, ack: p1ISN + 501,
                        window: 300, ts: TCPTimestamps(value: 125, echo: 9010))
        parsed(cAck) { p in
            #expect(p.destination == backend)
            #expect(p.tcp.sequenceNumber == p2ISN + 181)
            #expect(p.tcp.acknowledgmentNumber == bISN + 501)
        }
        // The relayed direction is over at the proxy: 150 read from the client, 180 written
        // to the backend, the response's 500 neither read nor written by it. Joined both ways.
        var done = r
        done.readFromClient = 150
        done.writtenToBackend = 180
        #expect(e.join(done, now: .seconds(2)) == .accepted)
        #expect(e.counters.balancer.oneWayCompleted == 1)
        #expect(e.flows(now: .seconds(2)).allSatisfy { $0.joinOneWay == nil && $0.mode == .joined })
        let later = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 151, ack: p1ISN + 501,
                         window: 300, ts: TCPTimestamps(value: 130, echo: 9010), payload: 5)
        parsed(later) { p in
            #expect(p.destination == backend)
            #expect(p.tcp.sequenceNumber == p2ISN + 181)        // the client's next byte after the 180
            #expect(p.tcp.acknowledgmentNumber == bISN + 501)
        }
        #expect(feed(e, from: vip, 80, to: client, 40000, flags: .ack, seq: p1ISN + 1, ack: cISN + 156, proxy: true).verdict == .drop)
    }

    @Test("one-way to the server: the upload translated, the backend's answer to the proxy, a reset reaching both sides")
    func oneWayToServer() {
        let (e, inj, r) = setUp()
        joinOneWay(e, r, .toServer)
        #expect(e.flows(now: .seconds(1)).allSatisfy { $0.joinOneWay == .toServer })
        let updates = inj.packets.count
        // The client's upload: onto the backend, acknowledging what P2 acknowledged.
        let up = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 101, ack: p1ISN + 1,
                      window: 300, ts: TCPTimestamps(value: 110, echo: 9001), payload: 200)
        parsed(up) { p in
            #expect(p.destination == backend && p.tcp.sequenceNumber == p2ISN + 121)
            #expect(p.tcp.acknowledgmentNumber == bISN + 1)
        }
        // The backend answers 30 bytes (relayed) and acknowledges the upload: the bytes to P2
        // (acknowledging what P2 sent), the acknowledgement to the client in an ACK of its own.
        let answer = feed(e, from: backend, 80, to: local, 61000, flags: [.ack, .psh], seq: bISN + 1, ack: p2ISN + 321,
                          window: 100, ts: TCPTimestamps(value: 77010, echo: 510), payload: 30)
        parsed(answer) { p in
            #expect(p.destination == local && p.tcp.acknowledgmentNumber == p2ISN + 121)
        }
        injected(inj, updates) { p in
            #expect(p.source == vip && p.destination == client)
            #expect(p.tcp.sequenceNumber == p1ISN + 1)
            #expect(p.tcp.acknowledgmentNumber == cISN + 301)
        }
        // The backend resets: to P2 as it is, to the client at the number it expects.
        let reset = feed(e, from: backend, 80, to: local, 61000, flags: .rst, seq: bISN + 31, ack: SeqNumber(0))
        #expect(reset.verdict == .accept)
        injected(inj, updates + 1) { p in
            #expect(p.destination == client && p.tcp.flags.contains(.rst))
            #expect(p.tcp.sequenceNumber == p1ISN + 1)
        }
    }

    @Test("a one-way join is for the connection's life; its completion waits for the relayed direction to drain")
    func oneWayRefusalsAndDrain() {
        let (e, _, r) = setUp()
        var withReturn = r
        withReturn.oneWay = .toClient
        withReturn.returnAfter = 1000
        #expect(e.prepareJoin(withReturn) == .accepted)
        if case .refused = e.join(withReturn, now: .seconds(1)) {} else { Issue.record("one-way with returnAfter was not refused") }
        joinOneWay(e, r, .toClient)
        // P2 wrote 60 more bytes the backend has not acknowledged: not drained.
        feed(e, from: local, 61000, to: backend, 80, flags: [.ack, .psh], seq: p2ISN + 121, ack: bISN + 1,
             payload: 60, proxy: true)
        var done = r
        done.readFromClient = 150
        done.writtenToBackend = 180
        #expect(e.join(done, now: .seconds(2)) == .notDrained)
        feed(e, from: backend, 80, to: local, 61000, flags: .ack, seq: bISN + 1, ack: p2ISN + 181)
        #expect(e.join(done, now: .seconds(2)) == .accepted)
    }
}
