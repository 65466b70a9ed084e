import Testing
import SpliceWire
@testable import SpliceEngine

/// A join for one response (keep-alive re-routing; Splice/Join.swift `returnCheck`): the
/// backend's bytes past the response and its FIN at the response's end never reach the client,
/// the client's next request never reaches the backend, and the flow returns to the proxy's
/// sockets when the client acknowledges the response, once the proxy armed the return.
extension JoinTests {
    /// Joined with 1,000 response bytes still to come from the backend.
    func joinedForOneResponse() -> (Engine, JoinRequest) {
        let (e, _, r) = joinedForOneResponseInjecting()
        return (e, r)
    }

    func joinedForOneResponseInjecting() -> (Engine, RecordingInjector, JoinRequest) {
        var (e, inj, r) = setUp()
        r.returnAfter = 1000
        joinDrained(e, r)
        inj.packets.removeAll()
        return (e, inj, r)
    }

    func modes(_ e: Engine) -> [FlowMode] { e.flows(now: .seconds(1)).map(\.mode) }

    /// The backend's last 500 bytes of the response (the first 500 already went).
    func responseEnd(_ e: Engine, fin: Bool = false) -> Sent {
        feed(e, from: backend, 80, to: local, 61000, flags: fin ? [.ack, .psh, .fin] : [.ack, .psh], seq: bISN + 501,
             ack: p2ISN + 121, window: 100, ts: TCPTimestamps(value: 77011, echo: 502), payload: 500)
    }

    @Test func theBackendsBytesPastTheResponseAndItsFinStayFromTheClient() {
        let (e, _) = joinedForOneResponse()
        let first = feed(e, from: backend, 80, to: local, 61000, flags: [.ack, .psh], seq: bISN + 1, ack: p2ISN + 121,
                         window: 100, ts: TCPTimestamps(value: 77010, echo: 502), payload: 500)
        #expect(first.verdict.rewrittenLength != nil)
        // 600 bytes from 500 on: 100 of them past the response.
        let over = feed(e, from: backend, 80, to: local, 61000, flags: [.ack, .psh], seq: bISN + 501, ack: p2ISN + 121,
                        ts: TCPTimestamps(value: 77011, echo: 502), payload: 600)
        #expect(over.verdict == .drop)
        // The response's last bytes with the backend's FIN: translated, the FIN taken off.
        let last = responseEnd(e, fin: true)
        #expect(last.verdict.rewrittenLength != nil)
        var b = last.bytes
        b.withUnsafeMutableBytes { buf in
            guard let p = TCPPacket(buf) else { Issue.record("unparsable"); return }
            #expect(p.destination == client)
            #expect(!p.tcp.flags.contains(.fin))
            #expect(p.checksumIsValid)
        }
        // A FIN alone at the response's end: dropped (the proxy's socket takes it later).
        let fin = feed(e, from: backend, 80, to: local, 61000, flags: [.ack, .fin], seq: bISN + 1001, ack: p2ISN + 121,
                       ts: TCPTimestamps(value: 77012, echo: 502))
        #expect(fin.verdict == .drop)
        #expect(e.counters.balancer.heldBack == 1)
        #expect(e.counters.balancer.finsProcessed == 2)
        #expect(modes(e) == [.joined, .joined])
    }

    @Test func theClientsNextRequestNeverReachesTheBackendAndTheFlowReturnsOnceArmed() {
        let (e, inj, r) = joinedForOneResponseInjecting()
        responseEnd(e)
        // The client acknowledges the whole response before the proxy armed the return: the
        // acknowledgement goes to the backend, the flow stays joined.
        let ack = feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 1001,
                       ts: TCPTimestamps(value: 120, echo: 10_000))
        #expect(ack.verdict.rewrittenLength != nil)
        #expect(modes(e) == [.joined, .joined])
        // Its next request comes before the return: held (not sent on).
        let early = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 101, ack: p1ISN + 1001,
                         ts: TCPTimestamps(value: 121, echo: 10_000), payload: 80)
        #expect(early.verdict == .drop)
        #expect(e.counters.balancer.heldBack == 1)
        #expect(inj.packets.isEmpty)
        // Armed: the response is acknowledged already, so the flow returns at once, and the
        // held request goes to the proxy's socket as the client sent it.
        #expect(e.armReturn(r) == .returned)
        #expect(modes(e) == [.balanced, .balanced])
        #expect(e.counters.balancer.returned == 1)
        #expect(e.counters.balancer.heldReleased == 1)
        #expect(inj.packets.count == 1)
        for var sent in inj.packets.map(\.bytes) {
            sent.withUnsafeMutableBytes { buf in
                guard let p = TCPPacket(buf) else { Issue.record("unparsable"); return }
                #expect(p.source == client && p.destination == vip && p.tcp.destinationPort == 80)
                #expect(p.tcp.sequenceNumber == cISN + 101 && p.tcp.payloadLength == 80)
                #expect(p.checksumIsValid)
            }
        }
        // A request the client sends again goes there too.
        let again = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 101, ack: p1ISN + 1001,
                         ts: TCPTimestamps(value: 130, echo: 10_000), payload: 80)
        #expect(again.verdict == .accept)
        // And the next request can be joined again (to this backend or another).
        #expect(e.prepareJoin(r) == .accepted)
        // Both connections remember the return (their far ends heard translated windows): the
        // next join sends both window updates, whatever the proxy's sockets last advertised.
        let c = e.table.lookup(source: client, sourcePort: 40000, destination: vip, destinationPort: 80)?.0
        let k = e.table.lookup(source: local, sourcePort: 61000, destination: backend, destinationPort: 80)?.0
        #expect(c.flatMap { e.table.block($0)?.pointee.join.mustHearWindow } == true)
        #expect(k.flatMap { e.table.block($0)?.pointee.join.mustHearWindow } == true)
    }

    /// The windows carried to the backend reach no further than the proxy's socket takes
    /// after the return (`returnWindow` past the response's end): the client's 128,000 bytes
    /// (1000 << 7) are bounded, the window update at the join too; without a bound they pass.
    @Test func theWindowsGivenToTheBackendEndWhereTheReturningSocketStops() {
        func window(_ sent: Sent) -> UInt16? {
            var b = sent.bytes
            return b.withUnsafeMutableBytes { buf in
                guard let p = TCPPacket(buf) else { return nil }
                #expect(p.destination == backend && p.checksumIsValid)
                return p.tcp.window
            }
        }
        var (e, inj, r) = setUp()
        r.returnAfter = 1000
        r.returnWindow = 2560
        joinDrained(e, r)
        // The update at the join: the client's last acknowledgement (p1ISN + 1), bounded at
        // p1ISN + 1001 + 2560 (scale 7 on both sides: 3560 >> 7).
        let toBackend = inj.packets.filter { sent in
            var b = sent.bytes
            return b.withUnsafeMutableBytes { TCPPacket($0)?.destination == backend }
        }
        #expect(toBackend.count == 1)
        #expect(toBackend.first.flatMap { window(Sent(verdict: .accept, bytes: $0.bytes)) } == 3560 >> 7)
        responseEnd(e)
        let part = feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 501,
                        ts: TCPTimestamps(value: 120, echo: 10_000))
        #expect(window(part) == 3060 >> 7)
        let whole = feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 1001,
                         ts: TCPTimestamps(value: 121, echo: 10_000))
        #expect(window(whole) == 2560 >> 7)
        // A smaller window than the bound passes as it is.
        let small = feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 1001, window: 3,
                         ts: TCPTimestamps(value: 122, echo: 10_000))
        #expect(window(small) == 3)

        // Without returnWindow: the client's window goes to the backend whole.
        let (e2, r2) = joinedForOneResponse()
        _ = r2
        responseEnd(e2)
        let free = feed(e2, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 501,
                        ts: TCPTimestamps(value: 120, echo: 10_000))
        #expect(window(free) == 1000)
    }

    @Test func armedTheClientsLastAcknowledgementReturnsTheFlow() {
        let (e, r) = joinedForOneResponse()
        #expect(e.armReturn(r) == .armed)
        responseEnd(e)
        // An acknowledgement short of the response's end: translated, still joined.
        let part = feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 501,
                        ts: TCPTimestamps(value: 120, echo: 10_000))
        #expect(part.verdict.rewrittenLength != nil)
        #expect(modes(e) == [.joined, .joined])
        // The last one: translated to the backend (which must see it), and the flow returns.
        let last = feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 1001,
                        ts: TCPTimestamps(value: 121, echo: 10_000))
        var b = last.bytes
        b.withUnsafeMutableBytes { buf in
            guard let p = TCPPacket(buf) else { Issue.record("unparsable"); return }
            #expect(p.destination == backend && p.tcp.acknowledgmentNumber == bISN + 1001)
            #expect(p.checksumIsValid)
        }
        #expect(modes(e) == [.balanced, .balanced])
        // The backend's answers to the proxy's socket from now on are its own again.
        let backendAck = feed(e, from: backend, 80, to: local, 61000, flags: .ack, seq: bISN + 1001, ack: p2ISN + 121,
                              ts: TCPTimestamps(value: 77020, echo: 502))
        #expect(backendAck.verdict == .accept)
    }

    @Test func aRequestCarryingTheLastAcknowledgementGoesToTheProxyAsItIs() {
        let (e, r) = joinedForOneResponse()
        #expect(e.armReturn(r) == .armed)
        responseEnd(e)
        let request = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 101, ack: p1ISN + 1001,
                           ts: TCPTimestamps(value: 121, echo: 10_000), payload: 80)
        #expect(request.verdict == .accept)
        #expect(modes(e) == [.balanced, .balanced])
    }

    /// The balancer's proxy dies with a response joined (armed or not): its sockets are gone,
    /// so the flow stays joined for its life and the client's next request reaches the backend.
    @Test func aDeadProxysReturnsAreGivenUpAndTheFlowStaysJoined() {
        for arm in [false, true] {
            let (e, r) = joinedForOneResponse()
            e.balancerProxies = [7]
            responseEnd(e)
            if arm { #expect(e.armReturn(r) == .armed) }
            // Another proxy's death changes nothing; the balancer's gives the return up.
            _ = e.proxyGone(id: 8)
            #expect(e.counters.balancer.returnsGivenUp == 0)
            _ = e.proxyGone(id: 7)
            #expect(e.counters.balancer.returnsGivenUp == 1)
            let ack = feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 1001,
                           ts: TCPTimestamps(value: 120, echo: 10_000))
            #expect(ack.verdict.rewrittenLength != nil)
            #expect(modes(e) == [.joined, .joined])
            let next = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 101, ack: p1ISN + 1001,
                            ts: TCPTimestamps(value: 121, echo: 10_000), payload: 80)
            #expect(next.verdict.rewrittenLength != nil)
            var b = next.bytes
            b.withUnsafeMutableBytes { buf in
                guard let p = TCPPacket(buf) else { Issue.record("unparsable"); return }
                #expect(p.destination == backend && p.tcp.destinationPort == 80 && p.checksumIsValid)
            }
            #expect(e.armReturn(r) == .refused("the connection is not joined for one response"))
        }
    }

    @Test func aReleasedReturnLeavesTheFlowJoinedForLife() {
        let (e, r) = joinedForOneResponse()
        #expect(e.releaseReturn(r) == .joinedForLife)
        responseEnd(e)
        // The client's next request now goes to the backend, as for any joined flow.
        let next = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 101, ack: p1ISN + 1001,
                        ts: TCPTimestamps(value: 121, echo: 10_000), payload: 80)
        #expect(next.verdict.rewrittenLength != nil)
        #expect(e.armReturn(r) != .armed)
        #expect(modes(e) == [.joined, .joined])
    }
}

extension JoinTests {
    @Test func aJoinedPairClosedByBothEndsWaitsAndStillTranslates() {
        let (e, _, r) = setUp()
        joinDrained(e, r)
        // The backend answers 10 bytes and closes; the client acknowledges and closes too.
        feed(e, from: backend, 80, to: local, 61000, flags: [.ack, .psh, .fin], seq: bISN + 1, ack: p2ISN + 121,
             ts: TCPTimestamps(value: 77010, echo: 502), payload: 10)
        feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .fin], seq: cISN + 101, ack: p1ISN + 12,
             ts: TCPTimestamps(value: 120, echo: 10_000))
        feed(e, from: backend, 80, to: local, 61000, flags: .ack, seq: bISN + 12, ack: p2ISN + 122,
             ts: TCPTimestamps(value: 77011, echo: 1000))
        let flows = e.flows(now: .seconds(1))
        #expect(flows.allSatisfy { $0.state == .timeWait && $0.join == .waiting && $0.mode == .joined })
        // A late retransmission of the backend's FIN is still carried to the client.
        let late = feed(e, from: backend, 80, to: local, 61000, flags: [.ack, .fin], seq: bISN + 11, ack: p2ISN + 122,
                        ts: TCPTimestamps(value: 77012, echo: 1000))
        var b = late.bytes
        b.withUnsafeMutableBytes { buf in
            guard let p = TCPPacket(buf) else { Issue.record("unparsable"); return }
            #expect(p.destination == client && p.tcp.sequenceNumber == p1ISN + 11)
        }
    }
}
