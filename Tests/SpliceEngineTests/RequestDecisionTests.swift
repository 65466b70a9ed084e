import Testing
import SpliceWire
@testable import SpliceEngine
import SpliceRules

/// Request rules read by the engine itself (Splice/RequestDecision.swift): after the client's
/// handshake ACK the engine holds the ACK and the client's first segments and asks the rules;
/// splice/bypass send them on with the splice mark and the proxy never hears of the flow;
/// proxy (or a rule on the response) replays the handshake to the proxy with the bytes held.
/// Driven through the resilient harness of ResilientSpliceTests.swift (`ResilientHarness`,
/// `RecordingInjector`).
@Suite("Request rules read by the engine (RequestDecision)")
struct RequestDecisionTests {
    // MARK: Helpers

    /// A Host rule (id 5) that splices `a.example`; the default as given.
    static func hostRules(default action: RuleAction = .proxy, timeout: Int = 2000) -> RuleSet {
        RuleSet(rules: [SpliceRule(id: 5, match: RuleMatch(host: "a.example"), action: .splice)],
                defaultAction: action, firstBytesTimeoutMilliseconds: timeout)
    }

    static func request(host: String, path: String = "/index.html") -> [UInt8] {
        Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n".utf8)
    }

    /// This flow's snapshot, as `splicectl flows` shows it.
    func snapshot(_ h: ResilientHarness) -> FlowSnapshot? {
        h.engine.flows(now: .seconds(0)).first {
            $0.initiator == h.c.client && $0.initiatorPort == h.c.clientPort && $0.responderPort == h.c.serverPort
        }
    }

    func block(_ h: ResilientHarness) -> UnsafeMutablePointer<ConnectionBlock>? {
        h.entry.flatMap { h.engine.table.block($0) }
    }

    /// A client data segment `offset` bytes past its ISN + 1 (ACK the server's ISN + 1).
    func clientData(_ h: ResilientHarness, offset: UInt32 = 0, payload: [UInt8], flags: TCPFlags = [.ack, .psh],
                    tsval: UInt32 = 5101) -> [UInt8] {
        h.endPacket(fromClient: true, flags: flags, seq: h.c.clientISN + 1 + offset, ack: h.c.serverISN + 1,
                    window: 501, ts: TCPTimestamps(value: tsval, echo: 90000), payload: payload)
    }

    /// SYN and SYN-ACK untouched, then the client's handshake ACK at `seconds`: dropped, the
    /// flow awaits its request, nothing reaches the proxy nor is injected.
    func awaitRequest(_ h: ResilientHarness, at seconds: Double = 0,
                      sourceLocation: SourceLocation = #_sourceLocation) {
        h.synAndSynAck(at: seconds)
        #expect(block(h)?.pointee.resilient.readsRequest == true, sourceLocation: sourceLocation)
        let toProxy = h.engine.counters.verdicts.toProxy
        let (v, out) = h.feed(h.clientAck, at: seconds)
        #expect(v == .drop, "\(v)", sourceLocation: sourceLocation)
        #expect(out == h.clientAck, sourceLocation: sourceLocation)
        #expect(h.phase == .awaitingRequest, sourceLocation: sourceLocation)
        #expect(h.engine.counters.verdicts.toProxy == toProxy, sourceLocation: sourceLocation)
        #expect(h.engine.counters.resilient.handshakeReplays == 0, sourceLocation: sourceLocation)
        #expect(h.engine.counters.resilient.clientsValidated == 1, sourceLocation: sourceLocation)
        #expect(h.engine.counters.splices.requestsRead == 1, sourceLocation: sourceLocation)
        #expect(h.engine.counters.resilient.pendingHeld == 0, sourceLocation: sourceLocation)
        #expect(h.injector.packets.isEmpty && h.injector.splicing.isEmpty, sourceLocation: sourceLocation)
    }

    /// Checks that `out` (a verdict's bytes) is the SYN replayed to the proxy in scratch: the
    /// client's ISN, its SYN's window and options.
    func checkSynToProxy(_ h: ResilientHarness, _ v: Verdict, _ out: [UInt8],
                         sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(v.action == .repeatHook && v.mark == h.engine.marks.toProxy && v.inScratch, "\(v)",
                sourceLocation: sourceLocation)
        let s = h.spec(out)
        #expect(s.flags == .syn && s.sequenceNumber == h.c.clientISN && s.acknowledgmentNumber == SeqNumber(0),
                sourceLocation: sourceLocation)
        #expect(s.source == h.c.client && s.sourcePort == h.c.clientPort, sourceLocation: sourceLocation)
        #expect(s.destination == h.c.server && s.destinationPort == h.c.serverPort, sourceLocation: sourceLocation)
        #expect(s.window == h.clientSynWindow && s.payload.isEmpty, sourceLocation: sourceLocation)
        let o = h.options(out)
        #expect(o.maximumSegmentSize == 1460 && o.windowScale == 7 && o.sackPermitted, sourceLocation: sourceLocation)
        #expect(o.timestamps == TCPTimestamps(value: 5000, echo: 0), sourceLocation: sourceLocation)
        #expect(h.valid(out), sourceLocation: sourceLocation)
        #expect(h.phase == .synToProxy, sourceLocation: sourceLocation)
    }

    /// Checks a held client segment as it was given to the proxy's socket after its SYN-ACK:
    /// translated (ACK the proxy's ISN + 1, its TSval echoed), the payload as the client sent it.
    func checkReleasedToProxy(_ h: ResilientHarness, _ p: (bytes: [UInt8], local: Bool), offset: UInt32,
                              payload: [UInt8], tsval: UInt32 = 5101,
                              sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(p.local && h.valid(p.bytes), sourceLocation: sourceLocation)
        let d = h.spec(p.bytes)
        #expect(d.flags == [.ack, .psh] && d.sequenceNumber == h.c.clientISN + 1 + offset, sourceLocation: sourceLocation)
        #expect(d.acknowledgmentNumber == h.proxyDownISN + 1, sourceLocation: sourceLocation)
        #expect(d.payload == payload && d.window == 501, sourceLocation: sourceLocation)
        #expect(d.source == h.c.client && d.destination == h.c.server, sourceLocation: sourceLocation)
        #expect(h.options(p.bytes).timestamps == TCPTimestamps(value: tsval, echo: 777), sourceLocation: sourceLocation)
    }

    /// The spliced verdict: the packet unchanged, repeated with the splice mark.
    func spliceVerdict(_ h: ResilientHarness) -> Verdict { Verdict(action: .repeatHook, mark: h.engine.marks.spliced) }

    // MARK: splice / bypass from the request

    @Test("a Host rule that splices: the ACK is dropped, the request goes on with the splice mark, the proxy never hears of the flow")
    func hostRuleSplices() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules()
        awaitRequest(h)
        #expect(snapshot(h)?.mode == .resilient && snapshot(h)?.phase == .awaitingRequest)
        let request = Self.request(host: "a.example")
        let data = clientData(h, payload: request)
        let (v, out) = h.feed(data)
        #expect(v == spliceVerdict(h), "\(v)")
        #expect(v.rewrittenLength == nil && out == data)
        let s = snapshot(h)
        #expect(s?.mode == .spliced && s?.reason == .ruleSplice)
        #expect(s?.decision == .splice && s?.ruleID == 5)
        #expect(s?.splice == .spliced && s?.spliceDrained == true)
        // Never engaged: no proxy shown, as for a flow spliced at its SYN.
        #expect(s?.proxyID == 0)
        let splices = h.engine.counters.splices
        #expect(splices.decidedAtRequest == 1 && splices.requestsRead == 1)
        #expect(splices.requestsToProxy == 0 && splices.requestsLate == 0 && splices.decidedAtConnection == 0)
        #expect(h.engine.counters.resilient.handshakeReplays == 0 && h.engine.counters.resilient.pendingHeld == 0)
        #expect(h.injector.packets.isEmpty && h.injector.splicing.isEmpty)

        // From now on either end's packets pass untouched; those without SYN/FIN/RST with the mark.
        let c = h.c
        let n = UInt32(request.count)
        let sAck = h.endPacket(fromClient: false, flags: .ack, seq: c.serverISN + 1, ack: c.clientISN + 1 + n,
                               window: 3000, ts: TCPTimestamps(value: 90100, echo: 5101))
        let (v2, out2) = h.feed(sAck)
        #expect(v2 == spliceVerdict(h) && out2 == sAck)
        let sData = h.endPacket(fromClient: false, flags: [.ack, .psh], seq: c.serverISN + 1, ack: c.clientISN + 1 + n,
                                window: 3000, ts: TCPTimestamps(value: 90101, echo: 5101),
                                payload: [UInt8](repeating: 0x42, count: 300))
        let (v3, out3) = h.feed(sData)
        #expect(v3 == spliceVerdict(h) && out3 == sData)
        let cAck = h.endPacket(fromClient: true, flags: .ack, seq: c.clientISN + 1 + n, ack: c.serverISN + 301,
                               window: 600, ts: TCPTimestamps(value: 5102, echo: 90101))
        let (v4, out4) = h.feed(cAck)
        #expect(v4 == spliceVerdict(h) && out4 == cAck)
        let cFin = h.endPacket(fromClient: true, flags: [.fin, .ack], seq: c.clientISN + 1 + n, ack: c.serverISN + 301,
                               window: 600, ts: TCPTimestamps(value: 5103, echo: 90101))
        let (v5, out5) = h.feed(cFin)
        #expect(v5 == .accept && out5 == cFin)
        #expect(h.engine.counters.splices.packetsAfterSplice == 4)
        #expect(h.engine.counters.resilient.handshakeReplays == 0)
        #expect(h.injector.packets.isEmpty && h.injector.splicing.isEmpty)
    }

    @Test("the request in the handshake ACK itself: decided at once, that ACK goes on with the splice mark")
    func requestInHandshakeAck() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules()
        h.synAndSynAck()
        let request = Self.request(host: "A.Example")
        let ack = h.endPacket(fromClient: true, flags: [.ack, .psh], seq: h.c.clientISN + 1, ack: h.c.serverISN + 1,
                              window: h.clientAckWindow, ts: h.clientAckTS, payload: request)
        let (v, out) = h.feed(ack)
        #expect(v == spliceVerdict(h), "\(v)")
        #expect(out == ack)
        let s = snapshot(h)
        #expect(s?.mode == .spliced && s?.decision == .splice && s?.ruleID == 5)
        #expect(h.engine.counters.splices.requestsRead == 1 && h.engine.counters.splices.decidedAtRequest == 1)
        #expect(h.engine.counters.resilient.clientsValidated == 1 && h.engine.counters.resilient.handshakeReplays == 0)
        #expect(h.injector.packets.isEmpty && h.injector.splicing.isEmpty)
    }

    @Test("a bypass rule on the path: spliced with the decision bypass and that rule")
    func pathRuleBypasses() {
        let h = ResilientHarness()
        h.engine.rules = RuleSet(rules: [SpliceRule(id: 1, match: RuleMatch(host: "a.example"), action: .splice),
                                         SpliceRule(id: 7, match: RuleMatch(pathPrefix: "/video/"), action: .bypass)])
        awaitRequest(h)
        let data = clientData(h, payload: Self.request(host: "b.example", path: "/video/clip.mp4"))
        let (v, out) = h.feed(data)
        #expect(v == spliceVerdict(h), "\(v)")
        #expect(out == data)
        let s = snapshot(h)
        #expect(s?.mode == .spliced && s?.reason == .ruleBypass)
        #expect(s?.decision == .bypass && s?.ruleID == 7 && s?.splice == .spliced)
        #expect(h.engine.counters.splices.decidedAtRequest == 1 && h.engine.counters.splices.requestsToProxy == 0)
        #expect(h.engine.counters.resilient.handshakeReplays == 0)
        #expect(h.injector.packets.isEmpty && h.injector.splicing.isEmpty)
    }

    // MARK: to the proxy

    @Test("no rule matches and the default is proxy: the request becomes the SYN to the proxy, held, and given to its socket after the handshake ACK")
    func defaultProxyReplays() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules()
        awaitRequest(h)
        let request = Self.request(host: "other.example")
        let (v, out) = h.feed(clientData(h, payload: request))
        checkSynToProxy(h, v, out)
        let splices = h.engine.counters.splices
        #expect(splices.requestsToProxy == 1 && splices.decidedAtRequest == 0 && splices.requestsLate == 0)
        #expect(h.engine.counters.resilient.handshakeReplays == 1 && h.engine.counters.resilient.pendingHeld == 1)
        #expect(block(h)?.pointee.resilient.pendingToProxy == 1)
        let s = snapshot(h)
        #expect(s?.mode == .resilient && s?.decision == ProxyDecision.none && s?.splice == SpliceStage.none)
        #expect(h.injector.packets.isEmpty && h.injector.splicing.isEmpty)

        // The proxy's SYN-ACK: the handshake ACK (the client's, as it came), then the request.
        let released = h.proxySynAckAnswered()
        #expect(released.count == 1)
        if let first = released.first { checkReleasedToProxy(h, first, offset: 0, payload: request) }
        #expect(block(h)?.pointee.resilient.pendingToProxy == 0)
        #expect(h.injector.splicing.isEmpty && h.injector.misaddressed == 0)
        h.upstream()
        #expect(snapshot(h)?.mode == .resilient)
    }

    @Test("a rule on the response (contentLengthAbove): the proxy's, whatever the default")
    func responseRuleGoesToProxy() {
        let h = ResilientHarness()
        h.engine.rules = RuleSet(rules: [SpliceRule(id: 3, match: RuleMatch(contentLengthAbove: 1_000_000), action: .splice)],
                                 defaultAction: .bypass)
        awaitRequest(h)
        let request = Self.request(host: "a.example")
        let (v, out) = h.feed(clientData(h, payload: request))
        checkSynToProxy(h, v, out)
        #expect(h.engine.counters.splices.requestsToProxy == 1 && h.engine.counters.splices.decidedAtRequest == 0)
        #expect(h.engine.counters.resilient.pendingHeld == 1)
        #expect(snapshot(h)?.mode == .resilient && snapshot(h)?.decision == ProxyDecision.none)
        #expect(h.injector.splicing.isEmpty)
        let released = h.proxySynAckAnswered()
        #expect(released.count == 1)
        if let first = released.first { checkReleasedToProxy(h, first, offset: 0, payload: request) }
    }

    @Test("requestReader proxy: the client's ACK becomes the SYN to the proxy as before")
    func proxyReadsRequest() {
        let h = ResilientHarness()
        var rules = Self.hostRules()
        rules.requestReader = .proxy
        h.engine.rules = rules
        h.synAndSynAck()
        #expect(block(h)?.pointee.resilient.readsRequest == false)
        h.clientAckBecomesSyn()
        #expect(h.engine.counters.splices.requestsRead == 0)
        // The request that would splice is held for the proxy, not decided by the engine.
        let request = Self.request(host: "a.example")
        #expect(h.feed(clientData(h, payload: request)).0 == .drop)
        #expect(h.phase == .synToProxy && snapshot(h)?.mode == .resilient)
        #expect(h.engine.counters.splices.decidedAtRequest == 0 && h.engine.counters.splices.requestsToProxy == 0)
        let released = h.proxySynAckAnswered()
        #expect(released.count == 1)
        if let first = released.first { checkReleasedToProxy(h, first, offset: 0, payload: request) }
    }

    @Test("rules that need no bytes, or none at all: the flow never awaits its request")
    func noRequestRulesNoWait() {
        let h = ResilientHarness()   // RuleSet.empty
        h.synAndSynAck()
        #expect(block(h)?.pointee.resilient.readsRequest == false)
        h.clientAckBecomesSyn()
        #expect(h.engine.counters.splices.requestsRead == 0)

        let p = ResilientHarness()
        p.engine.rules = RuleSet(rules: [SpliceRule(id: 2, match: RuleMatch(ports: [443]), action: .splice)])
        p.synAndSynAck()
        #expect(block(p)?.pointee.resilient.readsRequest == false)
        p.clientAckBecomesSyn()
        #expect(p.engine.counters.splices.requestsRead == 0)
    }

    // MARK: a head over several segments

    @Test("a head over two segments: the first is held, the second completes it, both go to the server with the splice mark and full checksums")
    func headOverTwoSegments() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules()
        awaitRequest(h)
        let request = Self.request(host: "a.example")
        let cut = 20   // "GET /index.html HTTP": not a whole request line
        let part1 = Array(request[..<cut]), part2 = Array(request[cut...])
        let seg1 = clientData(h, payload: part1, tsval: 5101)
        let seg2 = clientData(h, offset: UInt32(cut), payload: part2, tsval: 5102)
        // Their checksum fields hold only the pseudo-header sum: the copies sent need a full one.
        #expect(!h.valid(h.partial(seg1)) && !h.valid(h.partial(seg2)))
        let (v1, _) = h.feed(h.partial(seg1), partial: true)
        #expect(v1 == .drop)
        #expect(h.phase == .awaitingRequest && snapshot(h)?.mode == .resilient)
        #expect(h.engine.counters.resilient.pendingHeld == 1 && block(h)?.pointee.resilient.pendingToProxy == 1)
        #expect(h.injector.packets.isEmpty && h.injector.splicing.isEmpty)

        let (v2, _) = h.feed(h.partial(seg2), partial: true)
        #expect(v2 == .drop, "\(v2)")
        let s = snapshot(h)
        #expect(s?.mode == .spliced && s?.reason == .ruleSplice && s?.decision == .splice && s?.ruleID == 5)
        #expect(h.engine.counters.splices.decidedAtRequest == 1 && h.engine.counters.splices.requestsToProxy == 0)
        #expect(block(h)?.pointee.resilient.pendingToProxy == 0)
        #expect(h.injector.packets.isEmpty)
        #expect(h.injector.splicing.count == 2)
        // As the client sent them, with a complete checksum, in sequence order the whole head.
        let sent = h.injector.splicing.sorted { h.spec($0).sequenceNumber < h.spec($1).sequenceNumber }
        #expect(sent.allSatisfy { h.valid($0) })
        #expect(sent == [seg1, seg2])
        #expect(sent.flatMap { h.spec($0).payload } == request)
        #expect(h.injector.misaddressed == 0)
        #expect(h.engine.counters.resilient.handshakeReplays == 0)
        // Nothing is left held: nothing more is sent, nothing expires.
        h.engine.tick(now: .seconds(10))
        #expect(h.injector.splicing.count == 2 && h.injector.packets.isEmpty)
        #expect(h.engine.counters.resilient.pendingDropped == 0)
    }

    @Test("a head out of order: the second segment first (held), then the first completes it")
    func headOutOfOrder() {
        let h = ResilientHarness()
        h.engine.rules = RuleSet(rules: [SpliceRule(id: 7, match: RuleMatch(pathPrefix: "/video/"), action: .bypass)])
        awaitRequest(h)
        let request = Self.request(host: "b.example", path: "/video/clip.mp4")
        let cut = 30
        let seg1 = clientData(h, payload: Array(request[..<cut]), tsval: 5101)
        let seg2 = clientData(h, offset: UInt32(cut), payload: Array(request[cut...]), tsval: 5102)
        #expect(h.feed(seg2).0 == .drop)
        #expect(h.phase == .awaitingRequest && snapshot(h)?.mode == .resilient)
        #expect(h.engine.counters.resilient.pendingHeld == 1 && h.injector.splicing.isEmpty)
        #expect(h.feed(seg1).0 == .drop)
        let s = snapshot(h)
        #expect(s?.mode == .spliced && s?.reason == .ruleBypass && s?.decision == .bypass && s?.ruleID == 7)
        #expect(h.injector.splicing.count == 2 && h.injector.packets.isEmpty)
        let sent = h.injector.splicing.sorted { h.spec($0).sequenceNumber < h.spec($1).sequenceNumber }
        #expect(sent == [seg1, seg2])
        #expect(sent.flatMap { h.spec($0).payload } == request)
        #expect(sent.allSatisfy { h.valid($0) })
        #expect(block(h)?.pointee.resilient.pendingToProxy == 0)
        #expect(h.engine.counters.splices.decidedAtRequest == 1)
    }

    @Test("a head over three segments across the sequence wrap, out of order and one retransmitted: gathered, all sent on",
          arguments: [false, true])
    func headAcrossSequenceWrap(outOfOrder: Bool) {
        var h = ResilientHarness()
        h.c.clientISN = SeqNumber(0xffff_ffe0)   // the client's bytes wrap after the 31st
        h.engine.rules = Self.hostRules()
        awaitRequest(h)
        let request = Self.request(host: "a.example")
        let cuts = [0, 25, 40, request.count]
        let segs = (0..<3).map { i in
            clientData(h, offset: UInt32(cuts[i]), payload: Array(request[cuts[i]..<cuts[i + 1]]), tsval: 5101 + UInt32(i))
        }
        #expect(h.spec(segs[1]).sequenceNumber.rawValue == 0xffff_fffa && h.spec(segs[2]).sequenceNumber.rawValue == 0x0000_0009)
        let order = outOfOrder ? [2, 0, 0, 1] : [0, 1, 0, 2]   // segment 0 retransmitted in the middle
        for (k, i) in order.enumerated() {
            let (v, _) = h.feed(segs[i], at: 0.1 * Double(k + 1))
            #expect(v == .drop, "segment \(i): \(v)")
            if k < order.count - 1 {
                #expect(h.phase == .awaitingRequest && snapshot(h)?.mode == .resilient, "after segment \(i)")
            }
        }
        let s = snapshot(h)
        #expect(s?.mode == .spliced && s?.decision == .splice && s?.ruleID == 5)
        #expect(h.engine.counters.resilient.pendingHeld == 4 && h.injector.packets.isEmpty)
        #expect(h.injector.splicing.count == 4)
        // Every segment the client sent went on, as it sent it (the retransmission twice).
        for seg in segs { #expect(h.injector.splicing.contains(seg)) }
        #expect(h.injector.splicing.filter { $0 == segs[0] }.count == 2)
        #expect(block(h)?.pointee.resilient.pendingToProxy == 0)
    }

    @Test("a head over two segments that goes to the proxy: both held, given to its socket in order")
    func headOverTwoSegmentsToProxy() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules()
        awaitRequest(h)
        let request = Self.request(host: "other.example")
        let cut = 20
        let part1 = Array(request[..<cut]), part2 = Array(request[cut...])
        #expect(h.feed(clientData(h, payload: part1, tsval: 5101)).0 == .drop)
        let (v, out) = h.feed(clientData(h, offset: UInt32(cut), payload: part2, tsval: 5102))
        checkSynToProxy(h, v, out)
        #expect(h.engine.counters.resilient.pendingHeld == 2 && h.engine.counters.splices.requestsToProxy == 1)
        let released = h.proxySynAckAnswered()
        #expect(released.count == 2)
        let sorted = released.sorted { h.spec($0.bytes).sequenceNumber < h.spec($1.bytes).sequenceNumber }
        guard sorted.count == 2 else { return }
        checkReleasedToProxy(h, sorted[0], offset: 0, payload: part1, tsval: 5101)
        checkReleasedToProxy(h, sorted[1], offset: UInt32(cut), payload: part2, tsval: 5102)
        #expect(h.injector.splicing.isEmpty)
    }

    // MARK: the first-bytes timeout

    @Test("the request before or after the first-bytes timeout: the rule's action, or the default (rule 0, counted late)",
          arguments: [(0.2, false), (0.5, true)])
    func requestTimeout(at seconds: Double, late: Bool) {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules(default: .bypass, timeout: 300)
        awaitRequest(h, at: 0)
        // A request the Host rule would splice.
        let data = clientData(h, payload: Self.request(host: "a.example"))
        let (v, out) = h.feed(data, at: seconds)
        #expect(v == spliceVerdict(h), "\(v)")
        #expect(out == data)
        let s = snapshot(h)
        #expect(s?.mode == .spliced)
        if late {
            #expect(s?.decision == .bypass && s?.reason == .ruleBypass && s?.ruleID == 0)
            #expect(h.engine.counters.splices.requestsLate == 1)
        } else {
            #expect(s?.decision == .splice && s?.reason == .ruleSplice && s?.ruleID == 5)
            #expect(h.engine.counters.splices.requestsLate == 0)
        }
        #expect(h.engine.counters.splices.decidedAtRequest == 1 && h.engine.counters.splices.requestsToProxy == 0)
        #expect(h.injector.packets.isEmpty && h.injector.splicing.isEmpty)
    }

    @Test("a head cut short by the timeout: the default action; the held part goes on with the splice mark")
    func partialHeadThenTimeout() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules(default: .splice, timeout: 300)
        awaitRequest(h, at: 0)
        let request = Self.request(host: "b.example")
        let cut = 20
        let seg1 = clientData(h, payload: Array(request[..<cut]), tsval: 5101)
        let seg2 = clientData(h, offset: UInt32(cut), payload: Array(request[cut...]), tsval: 5102)
        #expect(h.feed(seg1, at: 0.1).0 == .drop)
        #expect(h.engine.counters.resilient.pendingHeld == 1)
        let (v, out) = h.feed(seg2, at: 0.5)
        #expect(v == spliceVerdict(h), "\(v)")
        #expect(out == seg2)
        #expect(h.injector.splicing == [seg1])
        let s = snapshot(h)
        #expect(s?.mode == .spliced && s?.decision == .splice && s?.ruleID == 0)
        #expect(h.engine.counters.splices.requestsLate == 1 && h.engine.counters.splices.decidedAtRequest == 1)
        #expect(block(h)?.pointee.resilient.pendingToProxy == 0)
    }

    @Test("a pure ACK after the timeout with the default proxy: the ACK becomes the SYN to the proxy")
    func lateAckDefaultProxy() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules(default: .proxy, timeout: 300)
        awaitRequest(h, at: 0)
        let (v, out) = h.feed(h.clientAck, at: 0.5)
        checkSynToProxy(h, v, out)
        #expect(h.engine.counters.splices.requestsLate == 1 && h.engine.counters.splices.requestsToProxy == 1)
        #expect(h.engine.counters.resilient.pendingHeld == 0)
        #expect(h.proxySynAckAnswered(at: 0.5).isEmpty)
    }

    // MARK: the server's SYN-ACK retried while the request is awaited

    @Test("the server's SYN-ACK retried before the timeout: the handshake goes to the proxy, with what was held")
    func serverRetryBeforeTimeout() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules(default: .splice)
        awaitRequest(h, at: 0)
        let request = Self.request(host: "a.example")
        let cut = 20
        let part1 = Array(request[..<cut])
        #expect(h.feed(clientData(h, payload: part1), at: 0.2).0 == .drop)
        let (v, out) = h.feed(h.serverSynAck, at: 1)
        checkSynToProxy(h, v, out)
        #expect(h.engine.counters.splices.requestsToProxy == 1 && h.engine.counters.splices.requestsLate == 0)
        #expect(h.engine.counters.splices.decidedAtRequest == 0)
        #expect(snapshot(h)?.mode == .resilient)
        // The rest of the head now waits for the proxy's socket, undecided by the engine.
        #expect(h.feed(clientData(h, offset: UInt32(cut), payload: Array(request[cut...]), tsval: 5102), at: 1).0 == .drop)
        #expect(snapshot(h)?.mode == .resilient && h.injector.splicing.isEmpty)
        let released = h.proxySynAckAnswered(at: 1)
        #expect(released.count == 2)
        let sorted = released.sorted { h.spec($0.bytes).sequenceNumber < h.spec($1.bytes).sequenceNumber }
        guard sorted.count == 2 else { return }
        checkReleasedToProxy(h, sorted[0], offset: 0, payload: part1, tsval: 5101)
        checkReleasedToProxy(h, sorted[1], offset: UInt32(cut), payload: Array(request[cut...]), tsval: 5102)
    }

    @Test("the server's SYN-ACK retried after the timeout, the default splice: accepted, the flow spliced with the default")
    func serverRetryAfterTimeoutSplices() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules(default: .splice, timeout: 300)
        awaitRequest(h, at: 0)
        let (v, out) = h.feed(h.serverSynAck, at: 1)
        #expect(v == .accept, "\(v)")
        #expect(out == h.serverSynAck)
        let s = snapshot(h)
        #expect(s?.mode == .spliced && s?.reason == .ruleSplice && s?.decision == .splice && s?.ruleID == 0)
        #expect(h.engine.counters.splices.requestsLate == 1 && h.engine.counters.splices.requestsToProxy == 0)
        #expect(h.engine.counters.resilient.handshakeReplays == 0)
        // The client acknowledges the SYN-ACK again: that ACK completes the server's handshake.
        let (v2, out2) = h.feed(h.clientAck, at: 1)
        #expect(v2 == spliceVerdict(h) && out2 == h.clientAck)
        #expect(h.injector.packets.isEmpty && h.injector.splicing.isEmpty)
    }

    @Test("the server's SYN-ACK retried after the timeout, the default proxy: the handshake goes to the proxy")
    func serverRetryAfterTimeoutDefaultProxy() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules(default: .proxy, timeout: 300)
        awaitRequest(h, at: 0)
        let (v, out) = h.feed(h.serverSynAck, at: 1)
        checkSynToProxy(h, v, out)
        #expect(h.engine.counters.splices.requestsToProxy == 1 && h.engine.counters.splices.requestsLate == 1)
        #expect(snapshot(h)?.mode == .resilient)
    }

    // MARK: port reuse

    @Test("a spliced flow whose FINs both went by (its last ACK unseen) is in TIME_WAIT; a new SYN on its tuple opens a new flow that meets the rules afresh")
    func portReuseAfterSplicedClose() {
        var h = ResilientHarness()
        h.engine.rules = Self.hostRules()
        awaitRequest(h)
        let request = Self.request(host: "a.example")
        _ = h.feed(clientData(h, payload: request))
        #expect(snapshot(h)?.mode == .spliced)
        // Both FINs reach the engine, the last ACK skips the queue: the flow is over for the
        // table (TIME_WAIT, not LAST_ACK forever).
        let clientFin = h.endPacket(fromClient: true, flags: [.fin, .ack], seq: h.c.clientISN + 1 + UInt32(request.count),
                                    ack: h.c.serverISN + 1, window: 501, ts: TCPTimestamps(value: 5200, echo: 90000))
        let serverFin = h.endPacket(fromClient: false, flags: [.fin, .ack], seq: h.c.serverISN + 1,
                                    ack: h.c.clientISN + 2 + UInt32(request.count), window: 400,
                                    ts: TCPTimestamps(value: 90100, echo: 5200))
        #expect(h.feed(clientFin).0 == .accept && h.feed(serverFin).0 == .accept)
        #expect(h.state == .timeWait)
        // The client reuses the port: a new connection, new ISN; it awaits its request again.
        h.c.clientISN = SeqNumber(777_000)
        let (v, _) = h.feed(h.clientSyn, at: 1)
        #expect(v == .accept)
        #expect(h.engine.counters.flows.reopened == 1)
        #expect(snapshot(h)?.mode == .resilient && h.phase == .clientSyn && h.state == .synSent)
        #expect(block(h)?.pointee.resilient.readsRequest == true)
        let (v2, _) = h.feed(h.serverSynAck, at: 1)
        #expect(v2 == .accept && h.phase == .serverSynAck)
        let (v3, _) = h.feed(h.clientAck, at: 1)
        #expect(v3 == .drop && h.phase == .awaitingRequest)
        // A request no rule splices goes to the proxy this time.
        let (v4, out4) = h.feed(clientData(h, payload: Self.request(host: "b.example")), at: 1)
        checkSynToProxy(h, v4, out4)
    }

    // MARK: pure ACKs

    @Test("a pure ACK while the request is awaited is dropped and changes nothing; the request decides later")
    func pureAckWhileAwaiting() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules()
        awaitRequest(h)
        let update = h.endPacket(fromClient: true, flags: .ack, seq: h.c.clientISN + 1, ack: h.c.serverISN + 1,
                                 window: 900, ts: TCPTimestamps(value: 5101, echo: 90000))
        for (i, ack) in [update, h.clientAck].enumerated() {
            let (v, out) = h.feed(ack, at: 0.1 * Double(i + 1))
            #expect(v == .drop, "\(v)")
            #expect(out == ack)
        }
        #expect(h.phase == .awaitingRequest && snapshot(h)?.mode == .resilient)
        #expect(h.engine.counters.verdicts.toProxy == 0 && h.engine.counters.resilient.handshakeReplays == 0)
        #expect(h.engine.counters.resilient.pendingHeld == 0 && block(h)?.pointee.resilient.pendingToProxy == 0)
        #expect(h.engine.counters.splices.requestsToProxy == 0 && h.engine.counters.splices.requestsLate == 0)
        #expect(h.engine.counters.splices.requestsRead == 1)
        #expect(h.injector.packets.isEmpty && h.injector.splicing.isEmpty)
        // The request still decides.
        let data = clientData(h, payload: Self.request(host: "a.example"))
        let (v, out) = h.feed(data, at: 0.3)
        #expect(v == spliceVerdict(h) && out == data)
        #expect(snapshot(h)?.ruleID == 5 && h.engine.counters.splices.decidedAtRequest == 1)
    }
}
