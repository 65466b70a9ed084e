import Testing
import SpliceWire
@testable import SpliceEngine

/// A connection whose segments are signed (TCP-MD5, RFC 2385, as BGP sessions are; TCP-AO,
/// RFC 5925) cannot go through a proxy that lacks the key, and a segment rewritten in any way
/// fails its signature: a policy that claims one leaves it alone, every packet untouched.
/// MPTCP is not such a case: its client is proxied and falls back to TCP (Docs/resilient.md).
@Suite("Signed connections (TCP-MD5, TCP-AO) a policy claims are left alone")
struct SignedFlowTests {
    /// An MD5 option as Linux writes it (NOP NOP, kind 19, length 18, the digest).
    static let md5: [UInt8] = [1, 1, 19, 18] + [UInt8](repeating: 0xa5, count: 16)
    /// An AO option (kind 29, length 16: key ids and a 12-byte MAC).
    static let ao: [UInt8] = [29, 16, 7, 7] + [UInt8](repeating: 0x5a, count: 12)

    /// An end's SYN or SYN-ACK with its ordinary options, the signature in front of them.
    func signedSyn(_ h: ResilientHarness, fromClient: Bool, _ signature: [UInt8]) -> [UInt8] {
        h.endPacket(fromClient: fromClient, flags: fromClient ? .syn : [.syn, .ack],
                    seq: fromClient ? h.c.clientISN : h.c.serverISN,
                    ack: fromClient ? SeqNumber(0) : h.c.clientISN + 1, window: 64240,
                    synOptions: fromClient ? h.clientSynOptions : h.serverSynAckOptions) { $0.options = signature + $0.options }
    }

    /// An end's segment after the handshake, the signature in front of its timestamps.
    func signedSegment(_ h: ResilientHarness, fromClient: Bool, _ signature: [UInt8], flags: TCPFlags,
                       payload: [UInt8] = []) -> [UInt8] {
        h.endPacket(fromClient: fromClient, flags: flags, seq: fromClient ? h.c.clientISN + 1 : h.c.serverISN + 1,
                    ack: fromClient ? h.c.serverISN + 1 : h.c.clientISN + 1, window: 502,
                    ts: TCPTimestamps(value: 5000, echo: 90000), payload: payload) { $0.options = signature + $0.options }
    }

    @Test("a signed handshake and its data pass untouched; the flow is bypass, reason tcp-signature; nothing reaches the proxy",
          arguments: [SignedFlowTests.md5, SignedFlowTests.ao])
    func signedConnectionLeftAlone(signature: [UInt8]) {
        let h = ResilientHarness()
        let packets = [
            signedSyn(h, fromClient: true, signature),
            signedSyn(h, fromClient: false, signature),
            signedSegment(h, fromClient: true, signature, flags: .ack),
            signedSegment(h, fromClient: true, signature, flags: [.ack, .psh], payload: Array("OPEN".utf8)),
            signedSegment(h, fromClient: false, signature, flags: [.ack, .psh], payload: Array("KEEPALIVE".utf8)),
        ]
        for p in packets {
            let (v, out) = h.feed(p)
            #expect(v == .accept && out == p)
        }
        let f = h.engine.flows(now: .seconds(0))
        #expect(f.count == 1 && f[0].mode == .bypass && f[0].reason == .signed)
        #expect(h.engine.counters.flows.signed == 1)
        #expect(h.injector.packets.isEmpty && h.injector.toProxy.isEmpty)
        #expect(h.engine.counters.verdicts.toProxy == 0 && h.engine.counters.resilient.flows == 0)
    }

    @Test("a signed SYN no policy claims is not counted")
    func unclaimedSignedSyn() {
        var h = ResilientHarness()
        h.c.serverPort = 179
        let syn = signedSyn(h, fromClient: true, SignedFlowTests.md5)
        #expect(h.feed(syn).0 == .accept)
        let f = h.engine.flows(now: .seconds(0))
        #expect(f.count == 1 && f[0].mode == .bypass && f[0].reason == .noPolicy)
        #expect(h.engine.counters.flows.signed == 0)
    }

    @Test("an option the proxy does not speak but that signs nothing (MPTCP's MP_CAPABLE) keeps the flow resilient; the replayed SYN leaves it out")
    func multipathOfferIsProxied() {
        let h = ResilientHarness()
        let mpCapable: [UInt8] = [30, 4, 0x01, 0x81]   // version 1, checksum not required, HMAC-SHA256
        let syn = h.endPacket(fromClient: true, flags: .syn, seq: h.c.clientISN, window: h.clientSynWindow,
                              synOptions: h.clientSynOptions) { $0.options += mpCapable }
        let (v, out) = h.feed(syn)
        #expect(v == .accept && out == syn)
        #expect(h.feed(h.serverSynAck).0 == .accept)
        let (ackVerdict, replayed) = h.feed(h.clientAck)
        #expect(ackVerdict.action == .repeatHook && h.spec(replayed).flags == .syn && h.valid(replayed))
        var kinds: [UInt8] = []
        var copy = replayed
        copy.withUnsafeMutableBytes { for opt in TCPPacket($0)!.tcp.options { kinds.append(opt.kind) } }
        #expect(!kinds.contains(30) && kinds.contains(TCPOptionKind.maximumSegmentSize))
        let f = h.engine.flows(now: .seconds(0))
        #expect(f[0].mode == .resilient && f[0].reason == .policy && h.engine.counters.flows.signed == 0)
    }
}
