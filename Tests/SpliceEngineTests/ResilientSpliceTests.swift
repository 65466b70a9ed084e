import Testing
import SpliceWire
@testable import SpliceEngine

/// Records what the engine injects.
final class RecordingInjector: PacketInjector {
    var packets: [(bytes: [UInt8], local: Bool)] = []
    func inject(_ packet: UnsafeRawBufferPointer, toLocalSocket: Bool) {
        packets.append((Array(packet), toLocalSocket))
    }
}

/// Drives one resilient flow through the engine, the way the kernel would hand its packets over.
struct ResilientHarness {
    let engine: Engine
    let injector = RecordingInjector()
    var c = Conversation()
    let proxyDownISN = SeqNumber(0x8000_0000)
    let proxyUpISN = SeqNumber(0x1234_5678)
    let scratch: UnsafeMutableRawBufferPointer = .allocate(byteCount: Engine.scratchBytes, alignment: 16)

    init() {
        engine = Engine(table: FlowTable(capacity: 64, seed: 3))
        engine.policy = SplicePolicy(ports: [80], enabled: true)
        engine.injector = injector
        engine.proxyRegistered(id: 1)
    }

    /// Feeds a packet; returns the verdict and the bytes that leave (rewritten or not).
    func feed(_ bytes: [UInt8], fromProxy: Bool = false, at seconds: Double = 0, partial: Bool = false) -> (Verdict, [UInt8]) {
        var copy = bytes
        let info = PacketInfo(hook: fromProxy ? Engine.Hook.localOut : Engine.Hook.preRouting, checksumPartial: partial)
        let v = copy.withUnsafeMutableBytes { engine.process($0, scratch: scratch, info: info, now: .seconds(seconds)) }
        let out = copy.withUnsafeMutableBytes { v.finish(packet: $0, scratch: scratch).map { Array($0) } }
        return (v, out ?? copy)
    }

    func spec(_ bytes: [UInt8]) -> TCPPacketSpec {
        var copy = bytes
        return copy.withUnsafeMutableBytes { TCPPacketSpec(parsing: $0)! }
    }

    func valid(_ bytes: [UInt8]) -> Bool {
        var copy = bytes
        return copy.withUnsafeMutableBytes { TCPPacket($0)?.checksumIsValid ?? false }
    }

    func options(_ bytes: [UInt8]) -> TCPOptionSummary {
        var copy = bytes
        return copy.withUnsafeMutableBytes { TCPPacket($0)!.tcp.options.summary }
    }

    func proxyPacket(down: Bool, flags: TCPFlags, seq: SeqNumber, ack: SeqNumber, payload: Int = 0,
                     options: SynOptions? = nil, ts: TCPTimestamps? = nil) -> [UInt8] {
        var s = TCPPacketSpec(source: down ? c.server : c.client, destination: down ? c.client : c.server,
                              sourcePort: down ? c.serverPort : c.clientPort, destinationPort: down ? c.clientPort : c.serverPort,
                              sequenceNumber: seq, acknowledgmentNumber: ack, flags: flags, window: 1000,
                              payload: [UInt8](repeating: 0x62, count: payload))
        if let options { s.setSynOptions(options) }
        if let ts { s.options = [1, 1, 8, 10] + withUnsafeBytes(of: ts.value.bigEndian, Array.init) + withUnsafeBytes(of: ts.echo.bigEndian, Array.init) }
        return s.bytes()
    }

    /// Runs the whole handshake replay; returns nothing, checks each step.
    func handshake() {
        // 1. Client SYN goes to the server untouched.
        let syn = c.packet(fromClient: true, flags: .syn, seq: c.clientISN,
                           options: SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                                               timestamps: TCPTimestamps(value: 5000, echo: 0)))
        let (v1, out1) = feed(syn)
        #expect(v1 == .accept && out1 == syn)
        // 2. Server SYN-ACK becomes a SYN to the proxy with the client's ISN and options.
        let synAck = c.packet(fromClient: false, flags: [.syn, .ack], seq: c.serverISN, ack: c.clientISN + 1,
                              options: SynOptions(maximumSegmentSize: 1400, windowScale: 9, sackPermitted: true,
                                                  timestamps: TCPTimestamps(value: 90000, echo: 5000)))
        let (v2, out2) = feed(synAck)
        #expect(v2.action == .repeatHook && v2.mark == engine.marks.toProxy && v2.inScratch)
        let toProxy = spec(out2)
        #expect(toProxy.flags == .syn && toProxy.sequenceNumber == c.clientISN)
        #expect(toProxy.source == c.client && toProxy.sourcePort == c.clientPort && toProxy.destination == c.server)
        let o2 = options(out2)
        #expect(o2.maximumSegmentSize == 1460 && o2.windowScale == 7 && o2.sackPermitted)
        #expect(o2.timestamps == TCPTimestamps(value: 5000, echo: 0))
        #expect(valid(out2))
        // 3. The proxy's SYN-ACK becomes the server's SYN-ACK for the client.
        let pSynAck = proxyPacket(down: true, flags: [.syn, .ack], seq: proxyDownISN, ack: c.clientISN + 1,
                                  options: SynOptions(maximumSegmentSize: 65000, windowScale: 10, sackPermitted: true,
                                                      timestamps: TCPTimestamps(value: 777, echo: 5000)))
        let (v3, out3) = feed(pSynAck, fromProxy: true)
        #expect(v3.action == .accept && v3.inScratch)
        let toClient = spec(out3)
        #expect(toClient.flags == [.syn, .ack] && toClient.sequenceNumber == c.serverISN)
        #expect(toClient.acknowledgmentNumber == c.clientISN + 1 && toClient.source == c.server)
        let o3 = options(out3)
        #expect(o3.maximumSegmentSize == 1400 && o3.windowScale == 9 && o3.sackPermitted)
        #expect(o3.timestamps == TCPTimestamps(value: 90000, echo: 5000))
        #expect(valid(out3))
        // 4. The client's ACK goes to the proxy, its ACK number in the proxy's space.
        let ack = c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1)
        let (v4, out4) = feed(ack)
        #expect(v4.action == .repeatHook && !v4.inScratch)
        #expect(spec(out4).acknowledgmentNumber == proxyDownISN + 1 && valid(out4))
        // 5. The proxy's SYN toward the server is answered with the server's ISN, and dropped.
        let pSyn = proxyPacket(down: false, flags: .syn, seq: proxyUpISN, ack: SeqNumber(0),
                               options: SynOptions(maximumSegmentSize: 65000, windowScale: 10, sackPermitted: true,
                                                   timestamps: TCPTimestamps(value: 333, echo: 0)))
        let before = injector.packets.count
        let (v5, _) = feed(pSyn, fromProxy: true)
        #expect(v5 == .drop)
        #expect(injector.packets.count == before + 1)
        let injected = injector.packets.last!
        #expect(injected.local)
        let sa = spec(injected.bytes)
        #expect(sa.flags == [.syn, .ack] && sa.sequenceNumber == c.serverISN && sa.acknowledgmentNumber == proxyUpISN + 1)
        #expect(sa.source == c.server && sa.destination == c.client && valid(injected.bytes))
        // 6. The proxy's ACK goes on to the server as the client's.
        let pAck = proxyPacket(down: false, flags: .ack, seq: proxyUpISN + 1, ack: c.serverISN + 1)
        let (v6, out6) = feed(pAck, fromProxy: true)
        #expect(v6.action == .accept && v6.rewrittenLength != nil)
        #expect(spec(out6).sequenceNumber == c.clientISN + 1 && spec(out6).acknowledgmentNumber == c.serverISN + 1)
        #expect(valid(out6))
        #expect(engine.flows(now: .seconds(0))[0].phase == .established)
    }
}

@Suite("Resilient splicing (seed 000)")
struct ResilientSpliceTests {
    @Test("the handshake is replayed: SYN to the proxy, server's SYN-ACK to the client, server's ISN to the proxy")
    func handshakeReplay() {
        let h = ResilientHarness()
        h.handshake()
        let f = h.engine.flows(now: .seconds(0))[0]
        #expect(f.mode == .resilient && f.reason == .policy)
    }

    @Test("no proxy alive: a claimed flow stays in bypass, with the reason")
    func noProxy() {
        let h = ResilientHarness()
        h.engine.proxyGone(id: 1)
        _ = h.feed(h.c.syn)
        let f = h.engine.flows(now: .seconds(0))[0]
        #expect(f.mode == .bypass && f.reason == .noProxy)
    }

    @Test("the proxy's data toward the client gets the server's sequence numbers; its ACK is clamped to the server's")
    func downstreamDataAndClamp() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        // The client sends 1000 bytes; the proxy acknowledges them at once...
        _ = h.feed(c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1, payload: 1000))
        // ...with a data segment of its own toward the client.
        let pData = h.proxyPacket(down: true, flags: .ack, seq: h.proxyDownISN + 1, ack: c.clientISN + 1001, payload: 500)
        let (v, out) = h.feed(pData, fromProxy: true)
        #expect(v.action == .accept)
        let s = h.spec(out)
        #expect(s.sequenceNumber == c.serverISN + 1)
        // The server has not acknowledged those bytes: the client must not hear of them.
        #expect(s.acknowledgmentNumber == c.clientISN + 1)
        #expect(h.valid(out))
        #expect(h.engine.counters.acksClamped >= 1)
        // The server acknowledges 600 of them (to the proxy's up socket): the client is told 600 now.
        let injectedBefore = h.injector.packets.count
        let sAck = c.packet(fromClient: false, flags: .ack, seq: c.serverISN + 1, ack: c.clientISN + 601)
        let (v2, out2) = h.feed(sAck)
        #expect(v2.action == .repeatHook)
        #expect(h.spec(out2).acknowledgmentNumber == h.proxyUpISN + 601)
        #expect(h.injector.packets.count == injectedBefore + 1)
        let release = h.spec(h.injector.packets.last!.bytes)
        #expect(!h.injector.packets.last!.local)
        #expect(release.acknowledgmentNumber == c.clientISN + 601 && release.sequenceNumber == c.serverISN + 501)
        #expect(release.source == c.server && release.destination == c.client)
        #expect(h.valid(h.injector.packets.last!.bytes))
    }

    @Test("a pure ACK of the proxy that tells the end nothing new is not sent")
    func redundantAckSuppressed() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        _ = h.feed(c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1, payload: 100))
        let pAck = h.proxyPacket(down: true, flags: .ack, seq: h.proxyDownISN + 1, ack: c.clientISN + 101)
        // The first carries a new window: it goes (with its ACK clamped to what the server acknowledged).
        let (v1, out1) = h.feed(pAck, fromProxy: true)
        #expect(v1.action == .accept && h.spec(out1).acknowledgmentNumber == c.clientISN + 1)
        // The same again says nothing new.
        let (v2, _) = h.feed(pAck, fromProxy: true)
        #expect(v2 == .drop)
        #expect(h.engine.counters.acksSuppressed == 1)
    }

    @Test("the proxy dies: its flows are bypassed at once, and its packets never reach an end")
    func proxyDeath() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        #expect(h.engine.proxyGone(id: 1) == 1)
        let f = h.engine.flows(now: .seconds(0))[0]
        #expect(f.mode == .bypass && f.reason == .proxyDied)
        // The ends' packets now go untouched...
        let data = c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1, payload: 10)
        let (v, out) = h.feed(data)
        #expect(v == .accept && out == data)
        // ...and the dead proxy's leftovers are dropped.
        let rst = h.proxyPacket(down: true, flags: [.rst, .ack], seq: h.proxyDownISN + 1, ack: c.clientISN + 1)
        #expect(h.feed(rst, fromProxy: true).0 == .drop)
    }

    @Test("an unannounced FIN of the proxy is held, then released if the proxy is still alive")
    func heldFin() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        let fin = h.proxyPacket(down: true, flags: [.fin, .ack], seq: h.proxyDownISN + 1, ack: c.clientISN + 1)
        #expect(h.feed(fin, fromProxy: true, at: 1).0 == .drop)
        #expect(h.engine.counters.finRstHeld == 1)
        let before = h.injector.packets.count
        h.engine.tick(now: .seconds(1.1))
        #expect(h.injector.packets.count == before)
        h.engine.tick(now: .seconds(2))
        #expect(h.injector.packets.count == before + 1)
        let released = h.spec(h.injector.packets.last!.bytes)
        #expect(released.flags.contains(.fin) && released.sequenceNumber == c.serverISN + 1)
    }

    @Test("a held FIN of a proxy that then dies is discarded")
    func heldFinDiscarded() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        let rst = h.proxyPacket(down: false, flags: [.rst, .ack], seq: h.proxyUpISN + 1, ack: c.serverISN + 1)
        #expect(h.feed(rst, fromProxy: true, at: 1).0 == .drop)
        let before = h.injector.packets.count
        h.engine.proxyGone(id: 1)
        h.engine.tick(now: .seconds(5))
        #expect(h.injector.packets.count == before)
        #expect(h.engine.counters.finRstDiscarded == 1)
    }

    @Test("an announced RST passes at once; an announced half-close does not let a RST through")
    func announcedCloses() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        h.engine.proxyCloses(client: c.client, clientPort: c.clientPort, server: c.server, serverPort: c.serverPort,
                             towardClient: true, abortive: false, now: .seconds(0))
        let rst = h.proxyPacket(down: true, flags: [.rst, .ack], seq: h.proxyDownISN + 1, ack: c.clientISN + 1)
        #expect(h.feed(rst, fromProxy: true).0 == .drop)
        h.engine.proxyCloses(client: c.client, clientPort: c.clientPort, server: c.server, serverPort: c.serverPort,
                             towardClient: true, abortive: true, now: .seconds(0))
        // The held one is released at once, and the next passes.
        #expect(h.injector.packets.contains { h.spec($0.bytes).flags.contains(.rst) })
        #expect(h.feed(rst, fromProxy: true).0.action == .accept)
    }

    @Test("a FIN that relays the other end's FIN passes at once")
    func relayedFin() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        _ = h.feed(c.packet(fromClient: false, flags: [.fin, .ack], seq: c.serverISN + 1, ack: c.clientISN + 1))
        let fin = h.proxyPacket(down: true, flags: [.fin, .ack], seq: h.proxyDownISN + 1, ack: c.clientISN + 1)
        let (v, out) = h.feed(fin, fromProxy: true)
        #expect(v.action == .accept)
        #expect(h.spec(out).sequenceNumber == c.serverISN + 1)
    }

    @Test("packets of the proxy's sockets for unknown flows are dropped (fail-closed)")
    func unknownProxyPacketDropped() {
        let h = ResilientHarness()
        let stray = h.proxyPacket(down: true, flags: .ack, seq: SeqNumber(1), ack: SeqNumber(1), payload: 10)
        #expect(h.feed(stray, fromProxy: true).0 == .drop)
        #expect(h.engine.counters.proxyPacketsDropped == 1)
    }

    @Test("SACK edges and TSecr toward the proxy are translated into its space")
    func sackAndTimestampsTowardProxy() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        // Client ACK with TS and a SACK block in the server's space.
        var s = TCPPacketSpec(source: c.client, destination: c.server, sourcePort: c.clientPort, destinationPort: c.serverPort,
                              sequenceNumber: c.clientISN + 1, acknowledgmentNumber: c.serverISN + 1, flags: .ack)
        let left = (c.serverISN + 1001).rawValue, right = (c.serverISN + 2001).rawValue
        s.options = [1, 1, 8, 10] + be32(6000) + be32(90000) + [1, 1, 5, 10] + be32(left) + be32(right)
        let (v, out) = h.feed(s.bytes())
        #expect(v.action == .repeatHook && h.valid(out))
        var copy = out
        copy.withUnsafeMutableBytes { raw in
            let p = TCPPacket(raw)!
            let o = p.tcp.options
            let sack = o.first(kind: TCPOptionKind.sack)!
            let block = o.sackBlock(sack, 0)
            #expect(block.left == h.proxyDownISN + 1001 && block.right == h.proxyDownISN + 2001)
            #expect(o.summary.timestamps == TCPTimestamps(value: 6000, echo: 777))
        }
    }

    @Test("a packet whose checksum field holds only the pseudo-header sum leaves with a complete one")
    func partialChecksum() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        var data = c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1, payload: 999)
        data.withUnsafeMutableBytes { TCPPacket($0)!.fillPartialChecksum() }
        #expect(!h.valid(data))
        let (v, out) = h.feed(data, partial: true)
        #expect(v.action == .repeatHook && v.fillChecksum)
        #expect(h.valid(out))
        // From the proxy: a small one gets a full sum; a GSO one is left to the kernel.
        var pData = h.proxyPacket(down: true, flags: .ack, seq: h.proxyDownISN + 1, ack: c.clientISN + 1000, payload: 100)
        pData.withUnsafeMutableBytes { TCPPacket($0)!.fillPartialChecksum() }
        let (v2, out2) = h.feed(pData, fromProxy: true, partial: true)
        #expect(v2.fillChecksum && h.valid(out2))
    }

    @Test("window scales: the proxy's windows are rescaled to what the end negotiated")
    func windowRescale() {
        #expect(Engine.rescale(100, from: 10, to: 9) == 200)
        #expect(Engine.rescale(100, from: 7, to: 9) == 25)
        #expect(Engine.rescale(60000, from: 14, to: 0) == 0xffff)
        #expect(Engine.rescale(1, from: 3, to: 3) == 1)
    }
}

func be32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
