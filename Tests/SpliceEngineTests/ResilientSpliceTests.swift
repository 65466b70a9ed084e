import Testing
import SpliceWire
@testable import SpliceEngine

/// Records what the engine injects.
final class RecordingInjector: PacketInjector {
    var packets: [(bytes: [UInt8], local: Bool)] = []
    /// Packets whose destination address was not the one the engine said (must stay 0).
    var misaddressed = 0
    func inject(_ packet: UnsafeRawBufferPointer, to destination: IPAddress, toLocalSocket: Bool) {
        packets.append((checked(packet, destination), toLocalSocket))
    }
    /// Packets sent with the splice mark (the window updates of a splice).
    var splicing: [[UInt8]] = []
    func injectSplicing(_ packet: UnsafeRawBufferPointer, to destination: IPAddress) {
        splicing.append(checked(packet, destination))
    }
    /// Packets sent with the proxy mark, through TPROXY (a source-NATed flow's, to the proxy).
    var toProxy: [[UInt8]] = []
    func injectToProxy(_ packet: UnsafeRawBufferPointer, to destination: IPAddress) {
        toProxy.append(checked(packet, destination))
    }
    /// The packet's bytes, counted in `misaddressed` when it is a TCP segment whose destination
    /// is not the one the engine said.
    private func checked(_ packet: UnsafeRawBufferPointer, _ destination: IPAddress) -> [UInt8] {
        var copy = Array(packet)
        let actual = copy.withUnsafeMutableBytes { TCPPacket($0)?.destination }
        if actual != destination { misaddressed += 1 }
        return Array(packet)
    }
}

/// Drives one resilient flow through the engine, the way the kernel would hand its packets over.
/// A copy of a harness shares its engine and injector: change `c` on the copy to drive another
/// flow (another port, other ISNs) through the same engine.
struct ResilientHarness {
    let engine: Engine
    let injector = RecordingInjector()
    var c = Conversation()
    let proxyDownISN = SeqNumber(0x8000_0000)
    let proxyUpISN = SeqNumber(0x1234_5678)
    let scratch: UnsafeMutableRawBufferPointer = .allocate(byteCount: Engine.scratchBytes, alignment: 16)

    // What each side offers in its SYN; each value differs from the others, so that a field
    // taken from the wrong packet shows.
    let clientSynOptions = SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                                      timestamps: TCPTimestamps(value: 5000, echo: 0))
    let serverSynAckOptions = SynOptions(maximumSegmentSize: 1400, windowScale: 9, sackPermitted: true,
                                         timestamps: TCPTimestamps(value: 90000, echo: 5000))
    let proxyDownOptions = SynOptions(maximumSegmentSize: 65000, windowScale: 10, sackPermitted: true,
                                      timestamps: TCPTimestamps(value: 777, echo: 5000))
    let proxyUpOptions = SynOptions(maximumSegmentSize: 65000, windowScale: 10, sackPermitted: true,
                                    timestamps: TCPTimestamps(value: 333, echo: 0))
    let clientSynWindow: UInt16 = 64240
    let serverSynAckWindow: UInt16 = 28960
    /// The client's handshake ACK: its window and clock go into the ACK given to the proxy.
    let clientAckWindow: UInt16 = 502
    let clientAckTS = TCPTimestamps(value: 5100, echo: 90000)

    init(capacity: Int = 64) {
        engine = Engine(table: FlowTable(capacity: capacity, seed: 3))
        engine.policy = SplicePolicy(ports: [80], enabled: true)
        engine.injector = injector
        engine.proxyRegistered(id: 1)
    }

    /// Feeds a packet; returns the verdict and the bytes that leave (rewritten or not). An end's
    /// packet comes from PREROUTING unless `hook` says otherwise (FORWARD: behind source NAT).
    func feed(_ bytes: [UInt8], fromProxy: Bool = false, at seconds: Double = 0, partial: Bool = false,
              hook: UInt8? = nil) -> (Verdict, [UInt8]) {
        var copy = bytes
        let info = PacketInfo(hook: hook ?? (fromProxy ? Engine.Hook.localOut : Engine.Hook.preRouting), checksumPartial: partial)
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

    /// The same packet with only the pseudo-header sum in its checksum field (as a local
    /// sender's packet with checksum offload arrives: `NFQA_SKB_CSUMNOTREADY`).
    func partial(_ bytes: [UInt8]) -> [UInt8] {
        var copy = bytes
        copy.withUnsafeMutableBytes { TCPPacket($0)!.fillPartialChecksum() }
        return copy
    }

    /// A packet of an end (`fromClient`, else the server), with SYN options or timestamps.
    /// `edit` changes the segment last (options the builder does not write, the urgent pointer).
    func endPacket(fromClient: Bool, flags: TCPFlags, seq: SeqNumber, ack: SeqNumber = SeqNumber(0),
                   window: UInt16 = 65535, synOptions: SynOptions? = nil, ts: TCPTimestamps? = nil,
                   payload: [UInt8] = [], edit: (inout TCPPacketSpec) -> Void = { _ in }) -> [UInt8] {
        var s = TCPPacketSpec(source: fromClient ? c.client : c.server, destination: fromClient ? c.server : c.client,
                              sourcePort: fromClient ? c.clientPort : c.serverPort,
                              destinationPort: fromClient ? c.serverPort : c.clientPort,
                              sequenceNumber: seq, acknowledgmentNumber: ack, flags: flags, window: window,
                              payload: payload)
        if let synOptions { s.setSynOptions(synOptions) }
        if let ts { s.options = tsOption(ts) }
        edit(&s)
        return s.bytes()
    }

    func proxyPacket(down: Bool, flags: TCPFlags, seq: SeqNumber, ack: SeqNumber, payload: Int = 0,
                     options: SynOptions? = nil, ts: TCPTimestamps? = nil) -> [UInt8] {
        var s = TCPPacketSpec(source: down ? c.server : c.client, destination: down ? c.client : c.server,
                              sourcePort: down ? c.serverPort : c.clientPort, destinationPort: down ? c.clientPort : c.serverPort,
                              sequenceNumber: seq, acknowledgmentNumber: ack, flags: flags, window: 1000,
                              payload: [UInt8](repeating: 0x62, count: payload))
        if let options { s.setSynOptions(options) }
        if let ts { s.options = tsOption(ts) }
        return s.bytes()
    }

    /// Feeds an end's packet and returns the one packet the engine injected because of it
    /// (nil, with an issue recorded, when it injected none or several).
    func feedInjectingOne(_ bytes: [UInt8]) -> TCPPacketSpec? {
        let before = injector.packets.count
        _ = feed(bytes)
        #expect(injector.packets.count == before + 1, "expected one injected packet")
        guard injector.packets.count == before + 1 else { return nil }
        return spec(injector.packets.last!.bytes)
    }

    var clientSyn: [UInt8] {
        endPacket(fromClient: true, flags: .syn, seq: c.clientISN, window: clientSynWindow, synOptions: clientSynOptions)
    }
    var serverSynAck: [UInt8] {
        endPacket(fromClient: false, flags: [.syn, .ack], seq: c.serverISN, ack: c.clientISN + 1,
                  window: serverSynAckWindow, synOptions: serverSynAckOptions)
    }
    /// The client's handshake ACK (ACK = the server's ISN + 1).
    var clientAck: [UInt8] {
        endPacket(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1,
                  window: clientAckWindow, ts: clientAckTS)
    }
    /// The down socket's SYN-ACK (its ISN `proxyDownISN`), answering the SYN the engine replayed.
    var proxySynAck: [UInt8] {
        proxyPacket(down: true, flags: [.syn, .ack], seq: proxyDownISN, ack: c.clientISN + 1, options: proxyDownOptions)
    }
    /// The up socket's SYN toward the server (its ISN `proxyUpISN`).
    var proxySyn: [UInt8] {
        proxyPacket(down: false, flags: .syn, seq: proxyUpISN, ack: SeqNumber(0), options: proxyUpOptions)
    }

    /// This flow's entry in the table, if it has one.
    var entry: UInt32? {
        engine.table.lookup(source: c.client, sourcePort: c.clientPort, destination: c.server,
                            destinationPort: c.serverPort)?.entry
    }
    /// This flow's resilient phase (`.none` when it is not in the table).
    var phase: ResilientState.Phase {
        guard let e = entry, let b = engine.table.block(e) else { return .none }
        return b.pointee.resilient.phase
    }
    var state: FlowState? { entry.map { engine.table[$0].state } }

    // MARK: The handshake, step by step (Docs/resilient.md, SYNPROXY-like)

    /// 1-2. The client's SYN goes to the server untouched, and the server's SYN-ACK to the client
    /// untouched: nothing reaches the proxy, nothing is injected.
    func synAndSynAck(at seconds: Double = 0) {
        let toProxyBefore = engine.counters.verdicts.toProxy, injectedBefore = injector.packets.count
        let syn = clientSyn
        let (v1, out1) = feed(syn, at: seconds)
        #expect(v1 == .accept && out1 == syn)
        #expect(phase == .clientSyn && state == .synSent)
        let synAck = serverSynAck
        let (v2, out2) = feed(synAck, at: seconds)
        #expect(v2 == .accept && out2 == synAck)
        #expect(phase == .serverSynAck && state == .synReceived)
        #expect(engine.counters.verdicts.toProxy == toProxyBefore)
        #expect(injector.packets.count == injectedBefore)
    }

    /// 3. The client's ACK (`ack`, by default `clientAck`) proves the client: it is replaced by
    /// a SYN to the proxy with the client's ISN, its SYN's window and TSval (`synTSval`), and the
    /// options both ends negotiated. Returns the SYN.
    @discardableResult
    func clientAckBecomesSyn(_ ack: [UInt8]? = nil, at seconds: Double = 0, partial: Bool = false,
                             synTSval: UInt32 = 5000) -> [UInt8] {
        let validatedBefore = engine.counters.resilient.clientsValidated, injectedBefore = injector.packets.count
        let (v, out) = feed(ack ?? clientAck, at: seconds, partial: partial)
        #expect(v.action == .repeatHook && v.mark == engine.marks.toProxy && v.inScratch)
        let s = spec(out)
        #expect(s.flags == .syn && s.sequenceNumber == c.clientISN && s.acknowledgmentNumber == SeqNumber(0))
        #expect(s.source == c.client && s.sourcePort == c.clientPort)
        #expect(s.destination == c.server && s.destinationPort == c.serverPort)
        #expect(s.window == clientSynWindow && s.payload.isEmpty)
        let o = options(out)
        #expect(o.maximumSegmentSize == 1460 && o.windowScale == 7 && o.sackPermitted)
        #expect(o.timestamps == TCPTimestamps(value: synTSval, echo: 0))
        #expect(valid(out))
        #expect(phase == .synToProxy)
        #expect(engine.counters.resilient.clientsValidated == validatedBefore + 1)
        #expect(injector.packets.count == injectedBefore)
        return out
    }

    /// 5. The proxy's SYN-ACK (`packet`, by default `proxySynAck`) is dropped and answered with
    /// the client's ACK, injected through TPROXY (the proxy mark: the listener's request socket,
    /// or the listener itself after a SYN cookie): sequence the client's ISN + 1, ACK the
    /// proxy's ISN + 1, the window of the client's ACK, its TSval (`clientTSval`) and the
    /// proxy's echoed (`proxyTSval`). Returns what was injected after that ACK (held packets).
    @discardableResult
    func proxySynAckAnswered(_ packet: [UInt8]? = nil, at seconds: Double = 0, proxyTSval: UInt32 = 777,
                             clientTSval: UInt32 = 5100, window: UInt16? = nil) -> [(bytes: [UInt8], local: Bool)] {
        let before = injector.packets.count, handedBefore = injector.toProxy.count
        let (v, _) = feed(packet ?? proxySynAck, fromProxy: true, at: seconds)
        #expect(v == .drop)
        let injected = Array(injector.packets[before...])
        guard injector.toProxy.count == handedBefore + 1, let ackBytes = injector.toProxy.last else {
            Issue.record("not one ACK injected through TPROXY for the proxy's SYN-ACK")
            return injected
        }
        let ack = (bytes: ackBytes, local: true)
        let a = spec(ack.bytes)
        #expect(a.flags == .ack && a.sequenceNumber == c.clientISN + 1 && a.acknowledgmentNumber == proxyDownISN + 1)
        #expect(a.source == c.client && a.sourcePort == c.clientPort)
        #expect(a.destination == c.server && a.destinationPort == c.serverPort)
        #expect(a.window == (window ?? clientAckWindow) && a.payload.isEmpty)
        #expect(options(ack.bytes).timestamps == TCPTimestamps(value: clientTSval, echo: proxyTSval))
        #expect(valid(ack.bytes))
        #expect(phase == .downEstablished)
        return injected
    }

    /// 6. The up socket's SYN is answered with the server's ISN (injected, dropped); its ACK goes
    /// on to the server as the client's, which completes the server's handshake.
    func upstream(at seconds: Double = 0) {
        let before = injector.packets.count
        let (v5, _) = feed(proxySyn, fromProxy: true, at: seconds)
        #expect(v5 == .drop)
        #expect(injector.packets.count == before + 1)
        guard injector.packets.count == before + 1 else { return }
        let injected = injector.packets.last!
        #expect(injected.local)
        let sa = spec(injected.bytes)
        #expect(sa.flags == [.syn, .ack] && sa.sequenceNumber == c.serverISN && sa.acknowledgmentNumber == proxyUpISN + 1)
        #expect(sa.source == c.server && sa.destination == c.client && valid(injected.bytes))
        #expect(phase == .upstreamAnswered)
        let pAck = proxyPacket(down: false, flags: .ack, seq: proxyUpISN + 1, ack: c.serverISN + 1)
        let (v6, out6) = feed(pAck, fromProxy: true, at: seconds)
        #expect(v6.action == .accept && v6.rewrittenLength != nil)
        #expect(spec(out6).sequenceNumber == c.clientISN + 1 && spec(out6).acknowledgmentNumber == c.serverISN + 1)
        #expect(valid(out6))
        #expect(phase == .established)
    }

    /// The whole handshake, every step checked.
    func handshake() {
        synAndSynAck()
        clientAckBecomesSyn()
        #expect(proxySynAckAnswered().isEmpty)
        upstream()
        #expect(injector.misaddressed == 0, "a built packet was injected to another address than its own")
    }
}

func tsOption(_ ts: TCPTimestamps) -> [UInt8] { [1, 1, 8, 10] + be32(ts.value) + be32(ts.echo) }

@Suite("Resilient splicing (seed 000)")
struct ResilientSpliceTests {
    @Test("the handshake: SYN and SYN-ACK untouched, the client's ACK becomes the SYN to the proxy, the engine ACKs the proxy's SYN-ACK, the server's ISN to the up socket")
    func handshakeReplay() {
        let h = ResilientHarness()
        h.handshake()
        let f = h.engine.flows(now: .seconds(0))[0]
        #expect(f.mode == .resilient && f.reason == .policy && f.state == .established)
        #expect(h.engine.counters.resilient.clientsValidated == 1 && h.engine.counters.resilient.pendingHeld == 0)
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
        #expect(h.engine.counters.resilient.acksClamped >= 1)
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

    @Test("a clamped ACK of the proxy loses its SACK blocks (the end would read the bytes only the proxy holds as lost); once the clamp has caught up they pass")
    func clampedAckLosesItsSACK() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        // The client sends 3000 bytes; the down socket gets 1-1000 and 2001-3000 (1001-2000 lost
        // on the way) and says so: ACK 1001, SACK 2001-3001. The server has none of them yet.
        func downAck(_ ack: UInt32, sack: (UInt32, UInt32)) -> [UInt8] {
            var s = TCPPacketSpec(source: c.server, destination: c.client, sourcePort: c.serverPort,
                                  destinationPort: c.clientPort, sequenceNumber: h.proxyDownISN + 1,
                                  acknowledgmentNumber: c.clientISN + ack, flags: .ack, window: 1000, payload: [])
            s.options = tsOption(TCPTimestamps(value: 900, echo: 5200)) + [1, 1, 5, 10]
                + be32((c.clientISN + sack.0).rawValue) + be32((c.clientISN + sack.1).rawValue)
            return s.bytes()
        }
        _ = h.feed(c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1, payload: 3000))
        let before = h.engine.counters.resilient.sackTakenOffClamped
        // Clamped to what the server acknowledged (nothing), the SACK blocks taken off (the
        // option's room NOPs); without that the client saw SACK 2001-3001 above ACK 1 and sent
        // 1-2000 again. It passes for its window (the socket's first).
        let (v1, out1) = h.feed(downAck(1001, sack: (2001, 3001)), fromProxy: true)
        #expect(v1.action == .accept)
        #expect(h.spec(out1).acknowledgmentNumber == c.clientISN + 1)
        #expect(h.options(out1).sackBlocks == 0 && h.options(out1).timestamps != nil && h.valid(out1))
        #expect(h.engine.counters.resilient.sackTakenOffClamped == before + 1)
        // The next, the same: with its SACK gone it tells the client
        // nothing, so it is suppressed (no duplicate ACK).
        let suppressed = h.engine.counters.resilient.acksSuppressed
        #expect(h.feed(downAck(1001, sack: (2001, 3001)), fromProxy: true).0 == .drop)
        #expect(h.engine.counters.resilient.acksSuppressed == suppressed + 1)
        // The server acknowledges 1000 (the up socket relayed them): the client is told ACK 1001.
        let released = h.feedInjectingOne(c.packet(fromClient: false, flags: .ack, seq: c.serverISN + 1, ack: c.clientISN + 1001))
        #expect(released?.acknowledgmentNumber == c.clientISN + 1001)
        // The down socket's next repeated ACK with the same SACK is no longer clamped: it
        // passes with its SACK blocks, and the client learns of the real hole, 1001-2000.
        let (v2, out2) = h.feed(downAck(1001, sack: (2001, 3101)), fromProxy: true)
        #expect(v2.action == .accept)
        #expect(h.spec(out2).acknowledgmentNumber == c.clientISN + 1001)
        #expect(h.options(out2).sackBlocks == 1 && h.valid(out2))
        #expect(h.engine.counters.resilient.sackTakenOffClamped == before + 2)
    }

    @Test("a flow the router source-NATs (its server's packets from the FORWARD queue): every end's packet for the proxy goes by injection with the proxy mark, complete, the original dropped; the proxy's own packets are translated as ever")
    func sourceNATedFlowReachesTheProxyByInjection() {
        let h = ResilientHarness()
        let c = h.c
        _ = h.feed(h.clientSyn)
        let (v2, out2) = h.feed(h.serverSynAck, hook: Engine.Hook.forward)
        #expect(v2 == .accept && out2 == h.serverSynAck)
        #expect(h.engine.counters.resilient.sourceNATFlows == 1)
        // The client's ACK: the SYN replayed to the proxy is injected, the ACK dropped.
        let (v3, _) = h.feed(h.clientAck, partial: true)
        #expect(v3 == .drop)
        #expect(h.injector.toProxy.count == 1)
        let syn = h.spec(h.injector.toProxy[0])
        #expect(syn.flags == .syn && syn.sequenceNumber == c.clientISN && syn.destination == c.server
                && syn.destinationPort == c.serverPort && syn.source == c.client)
        #expect(h.valid(h.injector.toProxy[0]))
        #expect(h.proxySynAckAnswered().isEmpty)   // its ACK through TPROXY too: toProxy[1]
        h.upstream()
        // The client's data (its checksum partial, as a local sender's): injected, complete.
        let data = c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1, payload: 100)
        let (v4, _) = h.feed(h.partial(data), partial: true)
        #expect(v4 == .drop && h.injector.toProxy.count == 3)
        let d = h.spec(h.injector.toProxy[2])
        #expect(d.sequenceNumber == c.clientISN + 1 && d.acknowledgmentNumber == h.proxyDownISN + 1 && d.payload.count == 100)
        #expect(h.valid(h.injector.toProxy[2]))
        // The server's data, from the FORWARD queue: injected into the up socket's space.
        let sData = c.packet(fromClient: false, flags: .ack, seq: c.serverISN + 1, ack: c.clientISN + 1, payload: 200)
        let (v5, _) = h.feed(sData, hook: Engine.Hook.forward)
        #expect(v5 == .drop && h.injector.toProxy.count == 4)
        let u = h.spec(h.injector.toProxy[3])
        #expect(u.sequenceNumber == c.serverISN + 1 && u.acknowledgmentNumber == h.proxyUpISN + 1 && u.destination == c.client)
        #expect(h.valid(h.injector.toProxy[3]))
        #expect(h.engine.counters.resilient.injectedToProxy == 3 && h.engine.counters.verdicts.toProxy == 0)
        #expect(h.injector.misaddressed == 0)
        // The down socket's data toward the client: translated and accepted as for any flow.
        let pData = h.proxyPacket(down: true, flags: .ack, seq: h.proxyDownISN + 1, ack: c.clientISN + 101, payload: 200)
        let (v6, out6) = h.feed(pData, fromProxy: true)
        #expect(v6.action == .accept && h.spec(out6).sequenceNumber == c.serverISN + 1)
    }

    @Test("a flow whose server's packets come from PREROUTING is not taken for source-NATed: its packets go to the proxy as verdicts")
    func flowNotSourceNATed() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        let (v, _) = h.feed(c.packet(fromClient: false, flags: .ack, seq: c.serverISN + 1, ack: c.clientISN + 1, payload: 200))
        #expect(v.action == .repeatHook && v.mark == h.engine.marks.toProxy)
        // (The one injection through TPROXY: the handshake's last ACK, as for every flow.)
        #expect(h.injector.toProxy.count == 1 && h.engine.counters.resilient.sourceNATFlows == 0)
    }

    @Test("behind source NAT a hop's too-big error about the up socket's segment is injected to that socket (untracked, local mark), its number taken back; the original dropped")
    func tooBigBehindSourceNAT() throws {
        let h = ResilientHarness()
        let c = h.c
        _ = h.feed(h.clientSyn)
        _ = h.feed(h.serverSynAck, hook: Engine.Hook.forward)
        _ = h.feed(h.clientAck)
        h.proxySynAckAnswered()
        h.upstream()
        let quoted = c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1001, ack: c.serverISN + 1, payload: 1400)
        let error = try #require(ICMPTooBig.build(hop: IPAddress("10.0.9.1")!, mtu: 1400, quoting: quoted))
        let before = h.injector.packets.count
        let (v, _) = h.feed(error, hook: Engine.Hook.forward)
        #expect(v == .drop)
        #expect(h.injector.packets.count == before + 1)
        guard h.injector.packets.count == before + 1 else { return }
        #expect(h.injector.packets.last!.local)
        var sent = h.injector.packets.last!.bytes
        let seq = try sent.withUnsafeMutableBytes { try #require(ICMPTooBig($0)).innerSequenceNumber }
        #expect(seq == h.proxyUpISN + 1001)
        #expect(h.engine.counters.resilient.tooBigToProxy == 1)
    }

    @Test("a hop's too-big error about a proxy socket's segment goes to that socket: its number taken back into the socket's space, marked for local delivery")
    func tooBigGivenToTheProxySocket() throws {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        let hop = IPAddress("10.0.9.1")!
        // A segment of the up socket as it left the router (in the client's space), and one of
        // the down socket (in the server's).
        let up = c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1001, ack: c.serverISN + 1, payload: 1400)
        let down = c.packet(fromClient: false, flags: .ack, seq: c.serverISN + 501, ack: c.clientISN + 1, payload: 1400)
        for (quoted, socketSeq) in [(up, h.proxyUpISN + 1001), (down, h.proxyDownISN + 501)] {
            let error = try #require(ICMPTooBig.build(hop: hop, mtu: 1400, quoting: quoted))
            let (v, out) = h.feed(error)
            #expect(v.action == .accept && v.mark == h.engine.marks.local && v.rewrittenLength == error.count)
            var copy = out
            let seq = try copy.withUnsafeMutableBytes { try #require(ICMPTooBig($0)).innerSequenceNumber }
            #expect(seq == socketSeq)
            // Nothing else changed, and the checksum followed: the number set back gives the hop's bytes.
            var back = out
            back.withUnsafeMutableBytes { b in
                ICMPTooBig(b)!.innerSequenceNumber = quoted.withUnsafeBytes {
                    SeqNumber(UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: 24, as: UInt32.self)))
                }
            }
            #expect(back == error)
        }
        #expect(h.engine.counters.resilient.tooBigToProxy == 2)
        // About a flow the engine does not know: on its way, untouched.
        var other = c
        other.clientPort = 4444
        let stranger = try #require(ICMPTooBig.build(hop: hop, mtu: 1400, quoting: other.packet(fromClient: true, flags: .ack, seq: SeqNumber(7), payload: 100)))
        let (v, out) = h.feed(stranger)
        #expect(v == .accept && out == stranger)
        #expect(h.engine.counters.resilient.tooBigToProxy == 2)
    }

    @Test("the client's ACK of the server's answer and FIN is released to the server at once, not when the up socket's own (delayed) ACK comes")
    func releaseDoesNotWaitForProxyAck() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        // The server's answer with its FIN, to the up socket, which delays its ACK (pingpong
        // mode after a FIN): the engine sees nothing from it yet.
        let answer = c.packet(fromClient: false, flags: [.fin, .psh, .ack], seq: c.serverISN + 1, ack: c.clientISN + 1, payload: 1024)
        #expect(h.feed(answer).0.action == .repeatHook)
        // The proxy relays it to the client (down socket, translated into the server's numbers).
        let relayed = h.proxyPacket(down: true, flags: [.fin, .psh, .ack], seq: h.proxyDownISN + 1, ack: c.clientISN + 1, payload: 1024)
        let (v, out) = h.feed(relayed, fromProxy: true)
        #expect(v.action == .accept && h.spec(out).sequenceNumber == c.serverISN + 1)
        // The client acknowledges the answer and the FIN: the server hears of it now.
        let before = h.injector.packets.count
        let cAck = c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1026)
        #expect(h.feed(cAck).0.action == .repeatHook)
        #expect(h.injector.packets.count == before + 1)
        guard h.injector.packets.count == before + 1 else { return }
        let release = h.spec(h.injector.packets.last!.bytes)
        #expect(release.flags == .ack && release.acknowledgmentNumber == c.serverISN + 1026)
        #expect(release.source == c.client && release.destination == c.server && !h.injector.packets.last!.local)
        // The up socket's ACK when it comes tells the server nothing new: not sent.
        let late = h.proxyPacket(down: false, flags: .ack, seq: h.proxyUpISN + 1, ack: c.serverISN + 1026)
        #expect(h.feed(late, fromProxy: true).0 == .drop)
        // An acknowledgement past what the server sent is never passed on as such.
        let tooFar = c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 5000)
        _ = h.feed(tooFar)
        #expect(h.injector.packets.count == before + 1)
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
        #expect(h.engine.counters.resilient.acksSuppressed == 1)
    }

    @Test("an end's urgent data reaches the proxy's socket in line: URG and the pointer off, the bytes and the rest of the translation as ever",
          arguments: [false, true])
    func urgentDataInLine(fromServer: Bool) {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        let urgent = h.endPacket(fromClient: !fromServer, flags: [.ack, .psh, .urg],
                                 seq: fromServer ? c.serverISN + 1 : c.clientISN + 1,
                                 ack: fromServer ? c.clientISN + 1 : c.serverISN + 1, window: 500,
                                 payload: Array("IAC DM".utf8)) { $0.urgentPointer = 6 }
        let (v, out) = h.feed(urgent)
        #expect(v.action == .repeatHook && h.valid(out))
        let o = h.spec(out)
        #expect(o.flags == [.ack, .psh] && o.urgentPointer == 0 && o.payload == Array("IAC DM".utf8))
        #expect(o.sequenceNumber == h.spec(urgent).sequenceNumber)
        // The acknowledgement goes into the receiving socket's space, as for any segment.
        #expect(o.acknowledgmentNumber == (fromServer ? h.proxyUpISN + 1 : h.proxyDownISN + 1))
        #expect(h.engine.counters.resilient.urgentToProxy == 1)
    }

    @Test("the proxy's packets, and the ACKs the engine releases, carry the DSCP of the end they speak for; ECN bits their own")
    func endsDSCPOnTheProxysPackets() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        func marked(_ bytes: [UInt8], dscp: UInt8, ecn: UInt8 = ECN.notECT) -> [UInt8] {
            var copy = bytes
            copy.withUnsafeMutableBytes { TCPPacket($0)!.updateTrafficClass(dscp << 2 | ecn) }
            return copy
        }
        func trafficClass(_ bytes: [UInt8]) -> UInt8 {
            var copy = bytes
            return copy.withUnsafeMutableBytes { TCPPacket($0)!.trafficClass }
        }
        // The client marks AF41 (34), the server CS4 (32).
        _ = h.feed(marked(c.packet(fromClient: true, flags: [.ack, .psh], seq: c.clientISN + 1, ack: c.serverISN + 1, payload: 100), dscp: 34))
        _ = h.feed(marked(c.packet(fromClient: false, flags: [.ack, .psh], seq: c.serverISN + 1, ack: c.clientISN + 1, payload: 200), dscp: 32))
        // The up socket relays the client's 100 bytes: in the client's name, AF41; its own ECT(0) kept.
        let (v, up) = h.feed(marked(h.proxyPacket(down: false, flags: [.ack, .psh], seq: h.proxyUpISN + 1, ack: c.serverISN + 1, payload: 100),
                                    dscp: 0, ecn: ECN.ect0), fromProxy: true)
        #expect(v.action == .accept && h.valid(up))
        #expect(trafficClass(up) == 34 << 2 | ECN.ect0)
        var copy = up
        copy.withUnsafeMutableBytes { buf in
            if case .v4(let ip) = TCPPacket(buf)!.ip { #expect(ip.checksumIsValid) }
        }
        // The down socket relays the server's bytes: CS4.
        let (_, down) = h.feed(h.proxyPacket(down: true, flags: [.ack, .psh], seq: h.proxyDownISN + 1, ack: c.clientISN + 101, payload: 200),
                               fromProxy: true)
        #expect(trafficClass(down) == 32 << 2)
        // The client acknowledges them: the ACK released to the server speaks for the client, AF41.
        let released = h.injector.packets.count
        _ = h.feed(marked(c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 101, ack: c.serverISN + 201), dscp: 34))
        #expect(h.injector.packets.count == released + 1)
        if h.injector.packets.count == released + 1 {
            let ack = h.injector.packets.last!.bytes
            #expect(trafficClass(ack) == 34 << 2 && h.valid(ack))
            #expect(h.spec(ack).destination == c.server)
        }
        // The client unmarks: the proxy's next packet in its name is unmarked too.
        _ = h.feed(c.packet(fromClient: true, flags: [.ack, .psh], seq: c.clientISN + 101, ack: c.serverISN + 201, payload: 10))
        let (_, up2) = h.feed(marked(h.proxyPacket(down: false, flags: [.ack, .psh], seq: h.proxyUpISN + 101, ack: c.serverISN + 201, payload: 10),
                                     dscp: 8), fromProxy: true)
        #expect(trafficClass(up2) == 0)
        // An unannounced FIN of the down socket, held then released: in the server's name, CS4.
        let fin = h.proxyPacket(down: true, flags: [.fin, .ack], seq: h.proxyDownISN + 201, ack: c.clientISN + 111)
        #expect(h.feed(fin, fromProxy: true, at: 1).0 == .drop)
        let held = h.injector.packets.count
        h.engine.tick(now: .seconds(2))
        #expect(h.injector.packets.count == held + 1)
        if h.injector.packets.count == held + 1 {
            let out = h.injector.packets.last!.bytes
            #expect(h.spec(out).flags.contains(.fin) && trafficClass(out) == 32 << 2 && h.valid(out))
        }
        #expect(h.engine.counters.resilient.dscpCopied == 4)
    }

    @Test("a congestion mark the proxy's socket echoes (ECE) reaches the sender on the ACKs the engine releases, until the echo stops")
    func congestionEchoOnReleasedAcks() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        // The server sends 200 bytes (a router before ours marked them CE); the down socket
        // relays them to the client.
        _ = h.feed(c.packet(fromClient: false, flags: [.ack, .psh], seq: c.serverISN + 1, ack: c.clientISN + 1, payload: 200))
        #expect(h.feed(h.proxyPacket(down: true, flags: [.ack, .psh], seq: h.proxyDownISN + 1, ack: c.clientISN + 1, payload: 200),
                       fromProxy: true).0.action == .accept)
        // The up socket acknowledges them with ECE: clamped (the client has nothing yet), it
        // tells the server nothing new and is dropped.
        #expect(h.feed(h.proxyPacket(down: false, flags: [.ack, .ece], seq: h.proxyUpISN + 1, ack: c.serverISN + 201),
                       fromProxy: true).0 == .drop)
        // The client acknowledges: the ACK released to the server echoes the mark.
        let first = h.feedInjectingOne(c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 201))
        #expect(first?.flags == [.ack, .ece] && first?.acknowledgmentNumber == c.serverISN + 201)
        // The server's CWR came; the up socket's next ACK has no ECE: neither has the next release.
        _ = h.feed(c.packet(fromClient: false, flags: [.ack, .psh, .cwr], seq: c.serverISN + 201, ack: c.clientISN + 1, payload: 100))
        _ = h.feed(h.proxyPacket(down: true, flags: [.ack, .psh], seq: h.proxyDownISN + 201, ack: c.clientISN + 1, payload: 100),
                   fromProxy: true)
        #expect(h.feed(h.proxyPacket(down: false, flags: .ack, seq: h.proxyUpISN + 1, ack: c.serverISN + 301),
                       fromProxy: true).0 == .drop)
        let second = h.feedInjectingOne(c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 301))
        #expect(second?.flags == .ack && second?.acknowledgmentNumber == c.serverISN + 301)
        #expect(h.engine.counters.resilient.acksInjected == 2 && h.engine.counters.resilient.acksEchoingCE == 1)
    }

    @Test("an end's keepalive probe (SND.UNA - 1) gets the proxy's answer, though it repeats the last ACK")
    func keepaliveProbeAnswered() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        _ = h.feed(c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1, payload: 100))
        let pAck = h.proxyPacket(down: true, flags: .ack, seq: h.proxyDownISN + 1, ack: c.clientISN + 101)
        #expect(h.feed(pAck, fromProxy: true).0.action == .accept)
        #expect(h.feed(pAck, fromProxy: true).0 == .drop)
        // The server acknowledges the 100 bytes: the client is told (injected), and now knows
        // everything up to clientISN + 101.
        _ = h.feed(c.packet(fromClient: false, flags: .ack, seq: c.serverISN + 1, ack: c.clientISN + 101))
        // Idle; the client's keepalive probes at SND.UNA - 1. The down socket answers with the
        // ACK it sent before: it passes, once.
        let probe = c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 100, ack: c.serverISN + 1)
        #expect(h.feed(probe).0.action == .repeatHook)
        let (v, out) = h.feed(pAck, fromProxy: true)
        #expect(v.action == .accept && h.spec(out).acknowledgmentNumber == c.clientISN + 101)
        #expect(h.feed(pAck, fromProxy: true).0 == .drop)
        // Data at SND.NXT owes no answer of its own: a repeated ACK after it still goes nowhere.
        _ = h.feed(c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 101, ack: c.serverISN + 1, payload: 10))
        #expect(h.feed(pAck, fromProxy: true).0 == .drop)
    }

    @Test("a client at a zero window: the server is told zero (not the proxy's open window), its retransmissions of held bytes are answered, and the window reopens with the client's")
    func zeroWindowOfTheEndIsPassedOn() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        // The server's 1000 bytes reach the up socket; the down socket relays them.
        _ = h.feed(c.packet(fromClient: false, flags: .ack, seq: c.serverISN + 1, ack: c.clientISN + 1, payload: 1000))
        _ = h.feed(h.proxyPacket(down: true, flags: .ack, seq: h.proxyDownISN + 1, ack: c.clientISN + 1, payload: 1000), fromProxy: true)
        // The client stops reading: it acknowledges 500 bytes with a zero window. The server is
        // told of the 500 at once (injected), with a zero window.
        let told = h.feedInjectingOne(h.endPacket(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 501, window: 0))
        #expect(told?.acknowledgmentNumber == c.serverISN + 501 && told?.window == 0)
        // The up socket's own ACK (window 1000, all 1000 bytes) goes with the clamp and a zero window.
        let upAck = h.proxyPacket(down: false, flags: .ack, seq: h.proxyUpISN + 1, ack: c.serverISN + 1001)
        let (v1, out1) = h.feed(upAck, fromProxy: true)
        #expect(v1 == .drop || (h.spec(out1).window == 0 && h.spec(out1).acknowledgmentNumber == c.serverISN + 501))
        // The server retransmits the bytes the proxy holds: the up socket's repeated ACK is its answer, and passes.
        _ = h.feed(c.packet(fromClient: false, flags: .ack, seq: c.serverISN + 501, ack: c.clientISN + 1, payload: 500))
        let (v2, out2) = h.feed(upAck, fromProxy: true)
        #expect(v2.action == .accept && h.spec(out2).window == 0 && h.spec(out2).acknowledgmentNumber == c.serverISN + 501)
        // The client reads again (a window update, same ACK): the server is told the up
        // socket's window.
        let reopened = h.feedInjectingOne(h.endPacket(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 501, window: 300))
        #expect(reopened?.acknowledgmentNumber == c.serverISN + 501 && (reopened?.window ?? 0) != 0)
    }

    @Test("the other way: a server at a zero window, the client is told zero, and the window reopens with the server's")
    func zeroWindowOfTheServerIsPassedOn() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        // The client's 1000 bytes reach the down socket; the up socket relays them.
        _ = h.feed(c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1, payload: 1000))
        _ = h.feed(h.proxyPacket(down: false, flags: .ack, seq: h.proxyUpISN + 1, ack: c.serverISN + 1, payload: 1000), fromProxy: true)
        // The server stops reading: 500 acknowledged, zero window. The client is told at once, with zero.
        let told = h.feedInjectingOne(h.endPacket(fromClient: false, flags: .ack, seq: c.serverISN + 1, ack: c.clientISN + 501, window: 0))
        #expect(told?.acknowledgmentNumber == c.clientISN + 501 && told?.window == 0 && told?.destination == c.client)
        // The client retransmits what the proxy holds: the down socket's repeated ACK passes, zero window.
        let downAck = h.proxyPacket(down: true, flags: .ack, seq: h.proxyDownISN + 1, ack: c.clientISN + 1001)
        _ = h.feed(downAck, fromProxy: true)
        _ = h.feed(c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 501, ack: c.serverISN + 1, payload: 500))
        let (v, out) = h.feed(downAck, fromProxy: true)
        #expect(v.action == .accept && h.spec(out).window == 0 && h.spec(out).acknowledgmentNumber == c.clientISN + 501)
        // The server reads again: the client is told the down socket's window.
        let reopened = h.feedInjectingOne(h.endPacket(fromClient: false, flags: .ack, seq: c.serverISN + 1, ack: c.clientISN + 501, window: 300))
        #expect(reopened?.acknowledgmentNumber == c.clientISN + 501 && (reopened?.window ?? 0) != 0)
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

    @Test("after a failover an end's packet never carries a TSval older than the one the proxy showed its receiver (PAWS)")
    func failoverKeepsClocksMonotonic() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        // The up socket's data toward the server: TSval 400 in its clock, 400 + (5000 - 333) in the client's.
        let up = h.proxyPacket(down: false, flags: .ack, seq: h.proxyUpISN + 1, ack: c.serverISN + 1, payload: 10,
                               ts: TCPTimestamps(value: 400, echo: 90000))
        #expect(h.options(h.feed(up, fromProxy: true).1).timestamps?.value == 5067)
        // The down socket's data toward the client: 800 + (90000 - 777) in the server's clock.
        let down = h.proxyPacket(down: true, flags: .ack, seq: h.proxyDownISN + 1, ack: c.clientISN + 1, payload: 10,
                                 ts: TCPTimestamps(value: 800, echo: 5100))
        #expect(h.options(h.feed(down, fromProxy: true).1).timestamps?.value == 90023)
        #expect(h.engine.proxyGone(id: 1) == 1)

        // A client packet that waited in the queue (TSval 5050 < 5067): raised, checksum valid, the rest as it came.
        let late = h.endPacket(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1,
                               ts: TCPTimestamps(value: 5050, echo: 90010), payload: [1, 2, 3])
        let (v1, out1) = h.feed(late)
        #expect(v1.action == .accept && v1.rewrittenLength != nil)
        #expect(h.options(out1).timestamps == TCPTimestamps(value: 5067, echo: 90010))
        #expect(h.valid(out1) && h.spec(out1).payload == [1, 2, 3] && h.spec(out1).sequenceNumber == c.clientISN + 1)
        // One from the server likewise, toward the client (90010 < 90023), also with only the pseudo-header sum.
        let lateS = h.endPacket(fromClient: false, flags: .ack, seq: c.serverISN + 1, ack: c.clientISN + 1,
                                ts: TCPTimestamps(value: 90010, echo: 5050), payload: [9])
        let (v2, out2) = h.feed(h.partial(lateS), partial: true)
        #expect(v2.pendingChecksum != nil && h.options(out2).timestamps?.value == 90023 && h.valid(out2))
        // Packets sent after the failover are newer: untouched.
        let fresh = h.endPacket(fromClient: true, flags: .ack, seq: c.clientISN + 4, ack: c.serverISN + 2,
                                ts: TCPTimestamps(value: 5200, echo: 90030))
        #expect(h.feed(fresh) == (.accept, fresh))
        #expect(h.engine.counters.resilient.timestampsRaised == 2)
    }

    @Test("an unannounced FIN of the proxy is held, then released if the proxy is still alive")
    func heldFin() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        let fin = h.proxyPacket(down: true, flags: [.fin, .ack], seq: h.proxyDownISN + 1, ack: c.clientISN + 1)
        #expect(h.feed(fin, fromProxy: true, at: 1).0 == .drop)
        #expect(h.engine.counters.resilient.finRstHeld == 1)
        let before = h.injector.packets.count
        h.engine.tick(now: .seconds(1.1))
        #expect(h.injector.packets.count == before)
        h.engine.tick(now: .seconds(2))
        #expect(h.injector.packets.count == before + 1)
        let released = h.spec(h.injector.packets.last!.bytes)
        #expect(released.flags.contains(.fin) && released.sequenceNumber == c.serverISN + 1)
        #expect(h.injector.misaddressed == 0)
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
        #expect(h.engine.counters.resilient.finRstDiscarded == 1)
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

    @Test("packets of the proxy's sockets for unknown flows are dropped (fail-closed), and the stale socket is reset at the number it expects")
    func unknownProxyPacketDropped() {
        let h = ResilientHarness()
        let stray = h.proxyPacket(down: true, flags: .ack, seq: SeqNumber(1), ack: SeqNumber(4711), payload: 10)
        #expect(h.feed(stray, fromProxy: true).0 == .drop)
        #expect(h.engine.counters.resilient.proxyPacketsDropped == 1 && h.engine.counters.resilient.staleSocketsReset == 1)
        #expect(h.injector.packets.count == 1)
        guard let rst = h.injector.packets.first else { return }
        let s = h.spec(rst.bytes)
        // From the socket's peer (the client's tuple) to the socket (the server's), to a local socket.
        #expect(rst.local && h.valid(rst.bytes) && s.flags == .rst && s.sequenceNumber == SeqNumber(4711))
        #expect(s.source == h.c.client && s.sourcePort == h.c.clientPort)
        #expect(s.destination == h.c.server && s.destinationPort == h.c.serverPort)
        // Its own reset (a dead proxy's RST to nobody) and a SYN get no answer.
        for flags: TCPFlags in [[.rst, .ack], .syn] {
            let other = h.proxyPacket(down: false, flags: flags, seq: SeqNumber(9), ack: SeqNumber(77))
            #expect(h.feed(other, fromProxy: true).0 == .drop)
        }
        #expect(h.injector.packets.count == 1 && h.engine.counters.resilient.proxyPacketsDropped == 3)
    }

    @Test("after its proxy died, a flow's stale proxy sockets are reset when they retransmit (they would catch the tuple's next replay)")
    func deadProxySocketsReset() {
        let h = ResilientHarness()
        h.handshake()
        #expect(h.engine.proxyGone(id: 1) == 1)
        let before = h.injector.packets.count
        // The dead proxy's down socket retransmits its FIN into the drop.
        let fin = h.proxyPacket(down: true, flags: [.fin, .ack], seq: h.proxyDownISN + 1, ack: h.c.clientISN + 1)
        #expect(h.feed(fin, fromProxy: true, at: 1).0 == .drop)
        #expect(h.injector.packets.count == before + 1 && h.engine.counters.resilient.staleSocketsReset == 1)
        let s = h.spec(h.injector.packets[before].bytes)
        #expect(s.flags == .rst && s.sequenceNumber == h.c.clientISN + 1 && s.destinationPort == h.c.serverPort)
    }

    @Test("a resilient flow idle past the established timeout: its ends go on in bypass, the proxy's sockets are reset as stale")
    func idleResilientFlowExpires() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        let established = h.engine.table.timeouts.established
        // A default keepalive's first probe (7,200 s idle) finds the flow still there.
        #expect(established.deciseconds > Timestamp.Duration.seconds(7200).deciseconds)
        h.engine.tick(now: .seconds(7201))
        #expect(h.engine.flows(now: .seconds(7201)).contains { $0.mode == .resilient })
        h.engine.tick(now: .seconds(7600))
        #expect(h.engine.flows(now: .seconds(7600)).isEmpty)
        // The client speaks again: picked up mid-stream, in bypass, its packet untouched.
        let data = c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 1, ack: c.serverISN + 1, payload: 10)
        #expect(h.feed(data, at: 7601).0 == .accept)
        let f = h.engine.flows(now: .seconds(7601))
        #expect(f.count == 1 && f[0].mode == .bypass && f[0].pickedUp)
        // The proxy's down socket speaks: stale, dropped, and reset.
        let before = h.injector.packets.count
        let late = h.proxyPacket(down: true, flags: .ack, seq: h.proxyDownISN + 1, ack: c.clientISN + 1, payload: 5)
        #expect(h.feed(late, fromProxy: true, at: 7602).0 == .drop)
        #expect(h.injector.packets.count == before + 1 && h.engine.counters.resilient.staleSocketsReset == 1)
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
        #expect(v.action == .repeatHook && v.pendingChecksum != nil)
        #expect(h.valid(out))
        // From the proxy: a small one gets a full sum; a GSO one is left to the kernel.
        var pData = h.proxyPacket(down: true, flags: .ack, seq: h.proxyDownISN + 1, ack: c.clientISN + 1000, payload: 100)
        pData.withUnsafeMutableBytes { TCPPacket($0)!.fillPartialChecksum() }
        let (v2, out2) = h.feed(pData, fromProxy: true, partial: true)
        #expect(v2.pendingChecksum != nil && h.valid(out2))
    }

    // MARK: SYNPROXY-like handshake: the proxy hears of a flow only once the client is proven

    @Test("the server's SYN-ACK goes to the client untouched, and nothing reaches the proxy until the client's ACK")
    func synAckUntouchedNothingToProxyBeforeClientAck() {
        let h = ResilientHarness()
        h.synAndSynAck()
        // The server retransmits its SYN-ACK, the client its SYN (it lost the SYN-ACK): both
        // still go on untouched, and the proxy still hears nothing.
        let (v1, out1) = h.feed(h.serverSynAck, at: 1)
        #expect(v1 == .accept && out1 == h.serverSynAck)
        let (v2, out2) = h.feed(h.clientSyn, at: 1)
        #expect(v2 == .accept && out2 == h.clientSyn)
        #expect(h.phase == .serverSynAck)
        #expect(h.engine.counters.verdicts.toProxy == 0 && h.engine.counters.resilient.handshakeReplays == 0)
        #expect(h.engine.counters.resilient.clientsValidated == 0 && h.injector.packets.isEmpty)
        // The client's ACK: the first packet ever handed to the proxy, and it is the SYN.
        h.clientAckBecomesSyn(at: 1)
        #expect(h.engine.counters.verdicts.toProxy == 1 && h.engine.counters.resilient.clientsValidated == 1)
    }

    @Test("a spoofed SYN (no client ACK ever) never produces a packet to the proxy")
    func spoofedSynNeverReachesProxy() {
        var h = ResilientHarness()
        var verdicts: [Verdict] = []
        for i in 0..<16 {
            h.c.client = IPAddress("198.51.100.\(i + 1)")!
            h.c.clientPort = UInt16(41000 + i)
            h.c.clientISN = SeqNumber(UInt32(7_000_000 &* (i + 1)))
            verdicts.append(h.feed(h.clientSyn).0)
            verdicts.append(h.feed(h.serverSynAck).0)
            // The server retransmits its SYN-ACK into the void...
            verdicts.append(h.feed(h.serverSynAck, at: 1).0)
            verdicts.append(h.feed(h.serverSynAck, at: 3).0)
            // ...and a blind ACK, which cannot know the server's ISN, is dropped.
            let blind = h.endPacket(fromClient: true, flags: .ack, seq: h.c.clientISN + 1, ack: h.c.serverISN + 12345,
                                    window: 502, ts: TCPTimestamps(value: 5100, echo: 90000))
            let (vb, _) = h.feed(blind, at: 3)
            #expect(vb == .drop)
            verdicts.append(vb)
            #expect(h.phase == .serverSynAck && h.state == .synReceived)
        }
        h.engine.tick(now: .seconds(5))
        #expect(verdicts.allSatisfy { $0.action != .repeatHook && $0.mark == nil && $0.rewrittenLength == nil })
        #expect(h.engine.counters.verdicts.toProxy == 0 && h.engine.counters.resilient.handshakeReplays == 0)
        #expect(h.engine.counters.resilient.clientsValidated == 0 && h.engine.counters.resilient.pendingHeld == 0)
        #expect(h.injector.packets.isEmpty)
        #expect(h.engine.table.count == 16)
    }

    @Test("client data sent right after its ACK is held, and given to the proxy's socket translated, after the injected handshake ACK")
    func dataAfterAckHeldThenDeliveredTranslated() {
        let h = ResilientHarness()
        h.synAndSynAck()
        h.clientAckBecomesSyn()
        let c = h.c
        let request = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        let n = UInt32(request.count)
        let data = h.endPacket(fromClient: true, flags: [.ack, .psh], seq: c.clientISN + 1, ack: c.serverISN + 1,
                               window: 501, ts: TCPTimestamps(value: 5101, echo: 90000), payload: request)
        // Its checksum field holds only the pseudo-header sum: the copy given later needs a full one.
        let (v1, _) = h.feed(h.partial(data), partial: true)
        #expect(v1 == .drop)
        let fin = h.endPacket(fromClient: true, flags: [.fin, .ack], seq: c.clientISN + 1 + n, ack: c.serverISN + 1,
                              window: 501, ts: TCPTimestamps(value: 5102, echo: 90000))
        #expect(h.feed(fin).0 == .drop)
        // A pure ACK (the handshake's, retransmitted) is not held: it sends the SYN to the proxy
        // again in its place (the first may have been lost).
        let (vAck, outAck) = h.feed(h.clientAck)
        #expect(vAck.action == .repeatHook && vAck.inScratch && h.spec(outAck).flags == .syn)
        #expect(h.engine.counters.resilient.pendingHeld == 2 && h.engine.counters.verdicts.toProxy == 2)
        #expect(h.injector.packets.isEmpty)
        #expect(h.phase == .synToProxy)

        // The proxy's SYN-ACK: first the handshake ACK, then the held packets in the proxy's space.
        let released = h.proxySynAckAnswered()
        #expect(released.count == 2)
        guard released.count == 2 else { return }
        let d = h.spec(released[0].bytes)
        #expect(released[0].local && h.valid(released[0].bytes))
        #expect(d.flags == [.ack, .psh] && d.sequenceNumber == c.clientISN + 1)
        #expect(d.acknowledgmentNumber == h.proxyDownISN + 1)
        #expect(d.payload == request && d.window == 501)
        #expect(d.source == c.client && d.destination == c.server && d.sourcePort == c.clientPort)
        #expect(h.options(released[0].bytes).timestamps == TCPTimestamps(value: 5101, echo: 777))
        let f = h.spec(released[1].bytes)
        #expect(released[1].local && h.valid(released[1].bytes))
        #expect(f.flags == [.fin, .ack] && f.sequenceNumber == c.clientISN + 1 + n)
        #expect(f.acknowledgmentNumber == h.proxyDownISN + 1 && f.payload.isEmpty)
        #expect(h.options(released[1].bytes).timestamps == TCPTimestamps(value: 5102, echo: 777))

        // Given once: the proxy's SYN-ACK retransmitted gets the ACK again, not the data; and
        // nothing is left to expire.
        #expect(h.proxySynAckAnswered(at: 0.5).isEmpty)
        let count = h.injector.packets.count
        h.engine.tick(now: .seconds(10))
        #expect(h.injector.packets.count == count)
        #expect(h.engine.counters.resilient.pendingDropped == 0)
    }

    @Test("the client's pending packets go to the server unchanged, with a complete checksum, if the proxy dies")
    func pendingForwardedWhenProxyDies() {
        let h = ResilientHarness()
        h.synAndSynAck()
        let c = h.c
        // The handshake ACK carries the first data (held), a second segment follows (held).
        let first = h.endPacket(fromClient: true, flags: [.ack, .psh], seq: c.clientISN + 1, ack: c.serverISN + 1,
                                window: h.clientAckWindow, ts: h.clientAckTS, payload: [UInt8](repeating: 0x41, count: 100))
        let second = h.endPacket(fromClient: true, flags: [.ack, .psh], seq: c.clientISN + 101, ack: c.serverISN + 1,
                                 window: h.clientAckWindow, ts: TCPTimestamps(value: 5101, echo: 90000),
                                 payload: [UInt8](repeating: 0x42, count: 50))
        #expect(h.partial(first) != first && !h.valid(h.partial(first)))
        h.clientAckBecomesSyn(h.partial(first), partial: true)
        #expect(h.feed(h.partial(second), partial: true).0 == .drop)
        #expect(h.engine.counters.resilient.pendingHeld == 2 && h.injector.packets.isEmpty)

        #expect(h.engine.proxyGone(id: 1) == 1)
        // To the wire (not the proxy's socket), byte for byte as the client sent them, but
        // with a complete checksum: the server completes its handshake with the first.
        #expect(h.injector.packets.count == 2)
        for (p, original) in zip(h.injector.packets, [first, second]) {
            #expect(!p.local)
            #expect(p.bytes == original)
            #expect(h.valid(p.bytes))
        }
        let f = h.engine.flows(now: .seconds(0))[0]
        #expect(f.mode == .bypass && f.reason == .proxyDied)
        // Nothing of them is left: no second copy later, none to the proxy's late SYN-ACK.
        h.engine.tick(now: .seconds(10))
        #expect(h.feed(h.proxySynAck, fromProxy: true, at: 10).0 == .drop)
        #expect(h.injector.packets.count == 2)
        #expect(h.engine.counters.resilient.pendingDropped == 0)
        // The client's next packet goes on untouched.
        let third = h.endPacket(fromClient: true, flags: .ack, seq: c.clientISN + 151, ack: c.serverISN + 1,
                                window: h.clientAckWindow, payload: [0x43])
        let (v, out) = h.feed(third, at: 10)
        #expect(v == .accept && out == third)
    }

    /// A flow holds a packet for the proxy, is reset and removed (the client reopens the same
    /// port), and the next flow takes its entry at `reuseAt`; the old packet must go nowhere.
    func checkPendingNotGivenToLaterFlow(reuseAt: Double, proxyDies: Bool) {
        let h = ResilientHarness()
        h.synAndSynAck()
        let c = h.c
        let oldPayload = [UInt8](repeating: 0x6f, count: 10)
        let old = h.endPacket(fromClient: true, flags: [.ack, .psh], seq: c.clientISN + 1, ack: c.serverISN + 1,
                              window: h.clientAckWindow, ts: h.clientAckTS, payload: oldPayload)
        h.clientAckBecomesSyn(old)
        #expect(h.engine.counters.resilient.pendingHeld == 1)
        let oldEntry = h.entry
        // The client gives up on it (RST) and reconnects from the same port.
        let rst = h.endPacket(fromClient: true, flags: .rst, seq: c.clientISN + 11)
        #expect(h.feed(rst, at: reuseAt).0 == .accept)
        var n = h
        n.c.clientISN = SeqNumber(0x0abc_0000)
        n.c.serverISN = SeqNumber(0x4000_0000)
        n.synAndSynAck(at: reuseAt)
        #expect(h.engine.counters.flows.reopened == 1)
        #expect(n.entry != nil && n.entry == oldEntry)   // the point: the entry was reused
        #expect(h.engine.table.count == 1)
        let newPayload = [UInt8](repeating: 0x6e, count: 20)
        let new = n.endPacket(fromClient: true, flags: [.ack, .psh], seq: n.c.clientISN + 1, ack: n.c.serverISN + 1,
                              window: n.clientAckWindow, ts: n.clientAckTS, payload: newPayload)
        n.clientAckBecomesSyn(new, at: reuseAt)
        #expect(h.engine.counters.resilient.pendingHeld == 2)
        let before = h.injector.packets.count
        if proxyDies {
            #expect(h.engine.proxyGone(id: 1) == 1)
            let out = Array(h.injector.packets[before...])
            #expect(out.count == 1)
            #expect(out.allSatisfy { $0.bytes == new && !$0.local })
        } else {
            let released = n.proxySynAckAnswered(at: reuseAt)
            #expect(released.count == 1)
            #expect(released.allSatisfy { h.spec($0.bytes).payload == newPayload && $0.local })
            #expect(released.allSatisfy { h.spec($0.bytes).sequenceNumber == n.c.clientISN + 1 })
        }
        h.engine.tick(now: .seconds(reuseAt + 10))
        #expect(!h.injector.packets.contains { h.spec($0.bytes).payload == oldPayload })
    }

    @Test("a pending packet is never given to a later flow that reused its entry", arguments: [false, true])
    func pendingNotGivenToLaterFlow(proxyDies: Bool) {
        checkPendingNotGivenToLaterFlow(reuseAt: 1, proxyDies: proxyDies)
    }

    @Test("a pending packet is never given to a later flow that reused its entry within the same decisecond",
          arguments: [false, true])
    func pendingNotGivenToLaterFlowSameDecisecond(proxyDies: Bool) {
        checkPendingNotGivenToLaterFlow(reuseAt: 0, proxyDies: proxyDies)
    }

    @Test("a held FIN of a flow that is gone is not released into the later flow that took its entry")
    func heldFinNotReleasedToLaterFlow() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        let oldEntry = h.entry
        let fin = h.proxyPacket(down: true, flags: [.fin, .ack], seq: h.proxyDownISN + 1, ack: c.clientISN + 1)
        #expect(h.feed(fin, fromProxy: true, at: 1).0 == .drop)
        #expect(h.engine.counters.resilient.finRstHeld == 1)
        // The client resets, then reconnects from the same port before the hold is over.
        _ = h.feed(h.endPacket(fromClient: true, flags: .rst, seq: c.clientISN + 1), at: 1)
        var n = h
        n.c.clientISN = SeqNumber(0x0abc_0000)
        _ = n.feed(n.clientSyn, at: 1.1)
        #expect(n.entry == oldEntry && n.phase == .clientSyn)
        let before = h.injector.packets.count
        h.engine.tick(now: .seconds(2))
        #expect(h.injector.packets.count == before)
        #expect(h.engine.counters.resilient.finRstReleased == 0 && h.engine.counters.resilient.finRstDiscarded == 1)
    }

    @Test("a proxy RST for a flow in TIME_WAIT is dropped, never held nor sent")
    func proxyRstInTimeWaitDropped() {
        let h = ResilientHarness()
        h.handshake()
        let c = h.c
        // Both ends close, each acknowledging the other's FIN.
        let cFin = c.packet(fromClient: true, flags: [.fin, .ack], seq: c.clientISN + 1, ack: c.serverISN + 1)
        #expect(h.feed(cFin).0.action == .repeatHook)
        let sFin = c.packet(fromClient: false, flags: [.fin, .ack], seq: c.serverISN + 1, ack: c.clientISN + 2)
        #expect(h.feed(sFin).0.action == .repeatHook)
        let cAck = c.packet(fromClient: true, flags: .ack, seq: c.clientISN + 2, ack: c.serverISN + 2)
        _ = h.feed(cAck)
        #expect(h.state == .timeWait)
        let before = h.injector.packets.count
        // The proxy's listener answers a late segment with a RST: not for the ends.
        let rst = h.proxyPacket(down: true, flags: [.rst, .ack], seq: h.proxyDownISN + 2, ack: c.clientISN + 2)
        #expect(h.feed(rst, fromProxy: true, at: 1).0 == .drop)
        let upRst = h.proxyPacket(down: false, flags: .rst, seq: h.proxyUpISN + 2, ack: SeqNumber(0))
        #expect(h.feed(upRst, fromProxy: true, at: 1).0 == .drop)
        #expect(h.engine.counters.resilient.finRstDiscarded == 2 && h.engine.counters.resilient.finRstHeld == 0)
        h.engine.tick(now: .seconds(5))
        #expect(h.injector.packets.count == before)
        #expect(h.engine.counters.resilient.finRstReleased == 0)
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
func be16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
