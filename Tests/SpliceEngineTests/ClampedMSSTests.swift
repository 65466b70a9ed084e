import Testing
import SpliceWire
@testable import SpliceEngine

/// A rule of the router lowers the handshakes' MSS after the engine saw them (TCPMSS in
/// FORWARD); the rules log each handshake as it leaves (NFLOG in mangle POSTROUTING) and the
/// replays give the proxy's sockets the MSS the ends got (`Engine.loggedHandshake`,
/// Resilient/ClampedMSS.swift).
@Suite("The MSS the router's rules clamp, given to the proxy's sockets")
struct ClampedMSSTests {
    /// Logs `packet` as NFLOG hands it over (whole).
    func log(_ h: ResilientHarness, _ packet: [UInt8]) {
        let room = UnsafeMutableRawBufferPointer.allocate(byteCount: Engine.scratchBytes, alignment: 16)
        defer { room.deallocate() }
        room.initializeMemory(as: UInt8.self, repeating: 0)
        packet.withUnsafeBytes { h.engine.loggedHandshake($0, room: room) }
    }

    /// `packet` (a SYN or SYN-ACK with an MSS option) as the router's rule leaves it: the MSS
    /// lowered to `mss`, the checksum updated.
    func clamped(_ h: ResilientHarness, _ packet: [UInt8], to mss: UInt16) -> [UInt8] {
        var copy = packet
        copy.withUnsafeMutableBytes { raw in
            let p = TCPPacket(raw)!
            for o in p.tcp.options where o.kind == TCPOptionKind.maximumSegmentSize {
                p.tcp.updateMaximumSegmentSize(o, to: mss)
            }
        }
        #expect(h.valid(copy))
        return copy
    }

    /// The MSS of the SYN replayed to the proxy (the client's ACK turned into it), and of the
    /// SYN-ACK injected to the up socket (its SYN answered), after the whole handshake.
    func replayedMSS(_ h: ResilientHarness) -> (down: UInt16?, up: UInt16?) {
        let (v, syn) = h.feed(h.clientAck)
        #expect(v.action == .repeatHook && h.spec(syn).flags == .syn && h.valid(syn))
        h.proxySynAckAnswered()
        let before = h.injector.packets.count
        #expect(h.feed(h.proxySyn, fromProxy: true).0 == .drop)
        guard h.injector.packets.count == before + 1 else {
            Issue.record("the up socket's SYN was not answered")
            return (h.options(syn).maximumSegmentSize, nil)
        }
        let synAck = h.injector.packets.last!.bytes
        #expect(h.spec(synAck).flags == [.syn, .ack] && h.valid(synAck))
        return (h.options(syn).maximumSegmentSize, h.options(synAck).maximumSegmentSize)
    }

    @Test("the copies of a clamped SYN and SYN-ACK: the replayed SYN and the up socket's SYN-ACK carry the lowered MSS")
    func clampedHandshakeReachesTheProxy() {
        let h = ResilientHarness()
        h.synAndSynAck()
        log(h, clamped(h, h.clientSyn, to: 1300))
        log(h, clamped(h, h.serverSynAck, to: 1300))
        #expect(h.engine.counters.resilient.mssLowered == 2)
        let (down, up) = replayedMSS(h)
        #expect(down == 1300 && up == 1300)
        // What the ends saw is untouched: only the proxy's sockets are told.
        #expect(h.phase == .upstreamAnswered)
    }

    @Test("without copies, or with copies that lower nothing, the proxy's sockets get what the ends offered")
    func unclampedHandshake() {
        let h = ResilientHarness()
        h.synAndSynAck()
        log(h, h.clientSyn)
        log(h, h.serverSynAck)
        #expect(h.engine.counters.resilient.mssLowered == 0)
        let (down, up) = replayedMSS(h)
        #expect(down == 1460 && up == 1400)

        let h2 = ResilientHarness()
        h2.synAndSynAck()
        // A rule that only raises (no TCPMSS does) is not taken.
        log(h2, clamped(h2, h2.serverSynAck, to: 1452))
        #expect(replayedMSS(h2) == (1460, 1400))
    }

    @Test("copies of anything else change nothing: another ISN, a flow not resilient, a copy after the replay used the MSS, no packet")
    func strayCopiesIgnored() {
        let h = ResilientHarness()
        h.synAndSynAck()
        // Another handshake on the same tuple (an earlier connection's SYN still on its way).
        log(h, clamped(h, h.endPacket(fromClient: true, flags: .syn, seq: h.c.clientISN + 99,
                                      window: h.clientSynWindow, synOptions: h.clientSynOptions), to: 1000))
        // Not a SYN; bytes that are no packet.
        log(h, h.clientAck)
        log(h, [0x45, 0x00, 0x00])
        #expect(h.engine.counters.resilient.mssLowered == 0)
        // The client's SYN copy after its ACK was replayed: too late, the down socket has its MSS.
        _ = h.feed(h.clientAck)
        log(h, clamped(h, h.clientSyn, to: 1200))
        #expect(h.engine.counters.resilient.mssLowered == 0)
        // The server's is still in time for the up socket.
        log(h, clamped(h, h.serverSynAck, to: 1200))
        #expect(h.engine.counters.resilient.mssLowered == 1)
        h.proxySynAckAnswered()
        let before = h.injector.packets.count
        #expect(h.feed(h.proxySyn, fromProxy: true).0 == .drop)
        #expect(h.injector.packets.count == before + 1)
        if h.injector.packets.count == before + 1 {
            #expect(h.options(h.injector.packets.last!.bytes).maximumSegmentSize == 1200)
        }
    }

    @Test("a flow outside the policy (not resilient): its copies are read and ignored")
    func notResilient() {
        let h = ResilientHarness()
        h.engine.policy = .bypassOnly
        _ = h.feed(h.clientSyn)
        _ = h.feed(h.serverSynAck)
        log(h, clamped(h, h.clientSyn, to: 1300))
        #expect(h.engine.counters.resilient.mssLowered == 0)
    }
}
