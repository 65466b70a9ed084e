import Testing
import SpliceControlProtocol
import SpliceDaemonCore
import SpliceEngine
import SpliceWire

/// Counts what the engine injects (the supervisor's tests look at the engine, not the packets).
private final class SupervisorSpliceInjector: PacketInjector {
    var plain = 0
    var splicing = 0
    func inject(_ packet: UnsafeRawBufferPointer, to destination: IPAddress, toLocalSocket: Bool) { plain += 1 }
    func injectSplicing(_ packet: UnsafeRawBufferPointer, to destination: IPAddress) { splicing += 1 }
    func injectToProxy(_ packet: UnsafeRawBufferPointer, to destination: IPAddress) { plain += 1 }
}

@Suite("Supervisor: decide, step-out and the rule commands")
struct SupervisorSpliceTests {
    let client = IPAddress("10.0.1.2")!
    let server = IPAddress("10.0.2.2")!
    let clientPort: UInt16 = 40000
    let serverPort: UInt16 = 80
    let clientISN = SeqNumber(1000)
    let serverISN = SeqNumber(5000)
    let proxyDownISN = SeqNumber(70000)
    let proxyUpISN = SeqNumber(90000)
    let proxyA = ProxyRegistration(name: "a", pid: 10, listenPort: 8081)

    func makeSupervisor(rules: RuleSet = .empty) -> Supervisor<Int> {
        let engine = Engine(table: FlowTable(capacity: 16), now: .seconds(0))
        engine.policy = SplicePolicy(ports: [80], enabled: true)
        engine.injector = SupervisorSpliceInjector()
        return Supervisor(engine: engine, heartbeatLimit: .init(deciseconds: 30), rules: rules)
    }

    func send(_ s: Supervisor<Int>, _ r: ControlRequest, from c: Int) -> (ControlResponse, Supervisor<Int>.Event?) {
        s.handle(r, from: c, now: .seconds(0), status: { fatalError("not asked") }, flows: { [] })
    }

    func packet(fromClient: Bool, flags: TCPFlags, seq: SeqNumber, ack: SeqNumber = SeqNumber(0), payload: Int = 0) -> [UInt8] {
        TCPPacketSpec(source: fromClient ? client : server, destination: fromClient ? server : client,
                      sourcePort: fromClient ? clientPort : serverPort, destinationPort: fromClient ? serverPort : clientPort,
                      sequenceNumber: seq, acknowledgmentNumber: ack, flags: flags, window: 1000,
                      payload: [UInt8](repeating: 0x61, count: payload)).bytes()
    }

    /// Feeds a packet to the supervisor's engine: from an end, or (`fromProxy`) from one of the
    /// proxy's sockets (OUTPUT).
    @discardableResult
    func feed(_ s: Supervisor<Int>, _ bytes: [UInt8], fromProxy: Bool = false) -> Verdict {
        var copy = bytes
        return s.engine.withLock { e in
            copy.withUnsafeMutableBytes {
                e.process($0, info: PacketInfo(hook: fromProxy ? Engine.Hook.localOut : Engine.Hook.preRouting), now: .seconds(0))
            }
        }
    }

    /// The flow's snapshot in the supervisor's engine.
    func flow(_ s: Supervisor<Int>) -> FlowSnapshot? {
        s.engine.withLock { $0.flows(now: .seconds(0)) }.first { $0.initiatorPort == clientPort && $0.initiator == client }
    }

    func spliceCounters(_ s: Supervisor<Int>) -> SpliceCounters { s.engine.withLock { $0.counters.splices } }

    /// A registered proxy (client 1) and one resilient flow through it, both halves established.
    func resilientFlow() -> Supervisor<Int> {
        let s = makeSupervisor()
        #expect(send(s, ControlRequest(command: .register, proxy: proxyA), from: 1).0.ok)
        #expect(feed(s, packet(fromClient: true, flags: .syn, seq: clientISN)) == .accept)
        #expect(feed(s, packet(fromClient: false, flags: [.syn, .ack], seq: serverISN, ack: clientISN + 1)) == .accept)
        #expect(feed(s, packet(fromClient: true, flags: .ack, seq: clientISN + 1, ack: serverISN + 1)).action == .repeatHook)
        // The proxy's down socket answers the replayed SYN; its up socket connects to the server.
        #expect(feed(s, packet(fromClient: false, flags: [.syn, .ack], seq: proxyDownISN, ack: clientISN + 1), fromProxy: true) == .drop)
        #expect(feed(s, packet(fromClient: true, flags: .syn, seq: proxyUpISN), fromProxy: true) == .drop)
        #expect(feed(s, packet(fromClient: true, flags: .ack, seq: proxyUpISN + 1, ack: serverISN + 1), fromProxy: true).action == .accept)
        #expect(flow(s)?.mode == .resilient && flow(s)?.phase == .established)
        return s
    }

    func decision(_ action: RuleAction, rule: Int? = nil, clientPort: UInt16? = nil) -> FlowDecision {
        FlowDecision(client: "10.0.1.2", clientPort: clientPort ?? self.clientPort, server: "10.0.2.2", serverPort: serverPort,
                     action: action, rule: rule)
    }

    // MARK: decide and step-out

    @Test("decide: the answer echoes the decision and answers decide; the engine has it, with the rule")
    func decide() {
        let s = resilientFlow()
        let d = decision(.proxy, rule: 3)
        let (r, event) = send(s, ControlRequest(command: .decide, decision: d), from: 1)
        #expect(r.ok && r.error == nil && event == nil)
        #expect(r.decision == d && r.answers == .decide)
        #expect(flow(s)?.decision == .proxy && flow(s)?.ruleID == 3)
        #expect(spliceCounters(s).decidedProxy == 1)
        // The default action (no rule): rule 0.
        let (r2, _) = send(s, ControlRequest(command: .decide, decision: decision(.splice)), from: 1)
        #expect(r2.ok && r2.answers == .decide && r2.decision == decision(.splice))
        #expect(flow(s)?.decision == .splice && flow(s)?.ruleID == 0 && flow(s)?.splice == .pending)
        #expect(spliceCounters(s).decidedSplice == 1)
    }

    @Test("decide(bypass) then step-out: the flow is spliced for its bypass rule; the answer says drained")
    func bypassThenStepOut() {
        let s = resilientFlow()
        #expect(send(s, ControlRequest(command: .decide, decision: decision(.bypass, rule: 2)), from: 1).0.ok)
        #expect(spliceCounters(s).decidedBypass == 1)
        let d = decision(.bypass, rule: 2)
        let (r, event) = send(s, ControlRequest(command: .stepOut, decision: d), from: 1)
        #expect(r.ok && r.outcome == "drained" && r.decision == d && r.answers == .stepOut && event == nil)
        #expect(flow(s)?.mode == .spliced && flow(s)?.reason == .ruleBypass)
    }

    @Test("decide for a flow the engine does not know: refused with its reason, the decision still echoed")
    func decideUnknownFlow() {
        let s = resilientFlow()
        let d = decision(.splice, rule: 1, clientPort: 40001)
        let (r, event) = send(s, ControlRequest(command: .decide, decision: d), from: 1)
        #expect(!r.ok && r.error == "no such flow" && event == nil)
        #expect(r.decision == d && r.answers == .decide)
        #expect(spliceCounters(s).refused == 1 && spliceCounters(s).decidedSplice == 0)
    }

    @Test("step-out: not drained while the client's data is unacknowledged; forced, it falls back")
    func stepOutNotDrainedThenForced() {
        let s = resilientFlow()
        #expect(feed(s, packet(fromClient: true, flags: [.ack, .psh], seq: clientISN + 1, ack: serverISN + 1, payload: 100)).action == .repeatHook)
        let d = decision(.splice, rule: 8)
        #expect(send(s, ControlRequest(command: .decide, decision: d), from: 1).0.ok)
        let (r1, e1) = send(s, ControlRequest(command: .stepOut, decision: d), from: 1)
        #expect(!r1.ok && r1.outcome == "not-drained" && r1.error?.isEmpty == false && e1 == nil)
        #expect(r1.decision == d && r1.answers == .stepOut)
        #expect(flow(s)?.mode == .resilient && flow(s)?.splice == .pending)
        #expect(spliceCounters(s).notYetDrained == 1)
        let (r2, _) = send(s, ControlRequest(command: .stepOut, decision: d, force: true), from: 1)
        #expect(r2.ok && r2.outcome == "fell-back" && r2.error == nil && r2.decision == d && r2.answers == .stepOut)
        #expect(flow(s)?.mode == .spliced && flow(s)?.reason == .ruleSplice && flow(s)?.spliceDrained == false)
        #expect(spliceCounters(s).fellBack == 1)
        // Once spliced, another step-out is refused with the engine's reason.
        let (r3, _) = send(s, ControlRequest(command: .stepOut, decision: d, force: true), from: 1)
        #expect(!r3.ok && r3.error?.contains("not resilient") == true && r3.outcome == nil && r3.answers == .stepOut)
    }

    @Test("step-out with no splice pending is refused with the engine's reason")
    func stepOutNotPending() {
        let s = resilientFlow()
        let (r, _) = send(s, ControlRequest(command: .stepOut, decision: decision(.splice)), from: 1)
        #expect(!r.ok && r.error?.contains("no splice is pending") == true && r.answers == .stepOut)
        #expect(flow(s)?.mode == .resilient)
    }

    @Test("decide and step-out from a connection that has not registered are refused; the engine is not touched",
          arguments: [ControlRequest.Command.decide, .stepOut])
    func notRegistered(command: ControlRequest.Command) {
        let s = resilientFlow()
        if command == .stepOut {
            #expect(send(s, ControlRequest(command: .decide, decision: decision(.splice)), from: 1).0.ok)
        }
        let before = spliceCounters(s)
        let snapshot = flow(s)
        let (r, event) = send(s, ControlRequest(command: command, decision: decision(.splice), force: true), from: 2)
        #expect(!r.ok && r.error?.contains("has not registered") == true && event == nil)
        #expect(r.error?.hasPrefix(command.rawValue) == true, "\(r.error ?? "")")
        #expect(spliceCounters(s) == before)
        #expect(flow(s) == snapshot)
    }

    @Test("a missing or malformed decision is refused, naming the decision object",
          arguments: [ControlRequest.Command.decide, .stepOut])
    func malformedDecision(command: ControlRequest.Command) {
        let s = resilientFlow()
        let before = spliceCounters(s)
        var badClient = decision(.splice)
        badClient.client = "not-an-address"
        var badServer = decision(.splice)
        badServer.server = "10.0.2"
        for d in [nil, badClient, badServer] {
            let (r, event) = send(s, ControlRequest(command: command, decision: d, force: true), from: 1)
            #expect(!r.ok && r.error?.contains("\"decision\"") == true && event == nil, "\(r.error ?? "")")
        }
        #expect(spliceCounters(s) == before)
        #expect(flow(s)?.splice == SpliceStage.none && flow(s)?.decision == ProxyDecision.none)
    }

    // MARK: The rule commands

    func request(_ command: ControlRequest.Command, rules: RuleSet? = nil, rule: SpliceRule? = nil,
                 ruleID: Int? = nil, position: Int? = nil) -> ControlRequest {
        ControlRequest(command: command, rules: rules, rule: rule, ruleID: ruleID, position: position)
    }

    func rule(_ port: UInt16, _ action: RuleAction = .splice) -> SpliceRule {
        SpliceRule(match: RuleMatch(ports: [port]), action: action)
    }

    func stored(_ s: Supervisor<Int>) -> RuleSet { s.rules.withLock { $0.set } }

    @Test("rules answers the set in force, with no event")
    func rulesQuery() {
        let s = makeSupervisor(rules: RuleSet(rules: [rule(80)], defaultAction: .bypass))
        let (r, event) = send(s, request(.rules), from: 7)
        #expect(r.ok && event == nil)
        #expect(r.rules == stored(s) && r.rules?.rules.map(\.id) == [1] && r.rules?.defaultAction == .bypass)
    }

    @Test("add-rule, move-rule, remove-rule, set-rules: each answers the new set and gives rulesChanged with it")
    func ruleEdits() {
        let s = makeSupervisor()
        let (a1, e1) = send(s, request(.addRule, rule: rule(80)), from: 7)
        #expect(a1.ok && a1.rules?.rules.map(\.id) == [1] && a1.rules?.version == 1)
        #expect(e1 == .rulesChanged(stored(s)) && a1.rules == stored(s))
        let (a2, e2) = send(s, request(.addRule, rule: rule(81), position: 1), from: 7)
        #expect(a2.ok && a2.rules?.rules.map(\.id) == [2, 1] && e2 == .rulesChanged(stored(s)))

        let (m, em) = send(s, request(.moveRule, ruleID: 2, position: 2), from: 7)
        #expect(m.ok && m.rules?.rules.map(\.id) == [1, 2] && m.rules?.version == 3)
        #expect(em == .rulesChanged(stored(s)))

        let (d, ed) = send(s, request(.removeRule, ruleID: 1), from: 7)
        #expect(d.ok && d.rules?.rules.map(\.id) == [2] && d.rules?.version == 4)
        #expect(ed == .rulesChanged(stored(s)))

        let replacement = RuleSet(rules: [rule(443, .bypass), rule(8080, .proxy)], defaultAction: .splice)
        let (r, er) = send(s, request(.setRules, rules: replacement), from: 7)
        #expect(r.ok && r.rules?.rules.map(\.id) == [3, 4] && r.rules?.defaultAction == .splice && r.rules?.version == 5)
        #expect(er == .rulesChanged(stored(s)))
        #expect(stored(s).rules.map(\.action) == [.bypass, .proxy])
    }

    @Test("a refused rule edit answers the reason, gives no event, and changes nothing")
    func refusedEdits() {
        let s = makeSupervisor(rules: RuleSet(rules: [rule(80)]))
        let before = stored(s)
        var dup = RuleSet(rules: [rule(81), rule(82)])
        dup.rules[0].id = 5
        dup.rules[1].id = 5
        let cases: [(ControlRequest, String)] = [
            (request(.addRule, rule: SpliceRule(match: RuleMatch(host: ""), action: .splice)), "host '' is empty"),
            (request(.addRule, rule: rule(81), position: 3), "position 3 is out of range (1 to 2)"),
            (request(.addRule), "add-rule needs"),
            (request(.removeRule, ruleID: 9), "no rule 9"),
            (request(.removeRule), "remove-rule needs"),
            (request(.moveRule, ruleID: 9, position: 1), "no rule 9"),
            (request(.moveRule, ruleID: 1, position: 2), "position 2 is out of range (1 to 1)"),
            (request(.moveRule, ruleID: 1), "move-rule needs"),
            (request(.setRules, rules: dup), "rule id 5 is given twice"),
            (request(.setRules), "set-rules needs"),
        ]
        for (req, message) in cases {
            let (r, event) = send(s, req, from: 7)
            #expect(!r.ok && event == nil, "\(req.command)")
            #expect(r.error?.contains(message) == true, "\(req.command): \(r.error ?? "no error")")
            #expect(r.rules == nil)
        }
        #expect(stored(s) == before)
    }

    @Test("register answers the rules in force")
    func registerCarriesRules() {
        let s = makeSupervisor(rules: RuleSet(rules: [rule(80)]))
        _ = send(s, request(.addRule, rule: rule(443, .bypass)), from: 7)
        let (r, event) = send(s, ControlRequest(command: .register, proxy: proxyA), from: 1)
        #expect(r.ok && r.proxyID == 1 && event == .registered(id: 1, proxyA))
        #expect(r.rules == stored(s))
        #expect(r.rules?.rules.map(\.id) == [1, 2] && r.rules?.version == 1)
        #expect(r.rules?.rules.last?.action == .bypass)
    }
}
