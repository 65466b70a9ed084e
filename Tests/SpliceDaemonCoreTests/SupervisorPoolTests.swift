import Foundation
import Testing
import SpliceControlProtocol
import SpliceDaemonCore
import SpliceEngine

@Suite("Supervisor: the pool commands")
struct SupervisorPoolTests {
    func makeSupervisor(rules: RuleSet = .empty) -> Supervisor<Int> {
        Supervisor(engine: Engine(table: FlowTable(capacity: 16), now: .seconds(0)),
                   heartbeatLimit: .init(deciseconds: 30), rules: rules)
    }
    func send(_ s: Supervisor<Int>, _ r: ControlRequest) -> (ControlResponse, Supervisor<Int>.Event?) {
        s.handle(r, from: 7, now: .seconds(0), status: { fatalError("not asked") }, flows: { [] })
    }
    func stored(_ s: Supervisor<Int>) -> RuleSet { s.rules.withLock { $0.set } }
    let m1 = Backend(address: "10.0.0.1", port: 80)
    let m2 = Backend(address: "10.0.0.2", port: 80, weight: 2)

    @Test("add-pool, add-member, drain-member, undrain-member, remove-member, remove-pool: each answers the new set, gives rulesChanged with it, and the engine has it")
    func poolEdits() {
        let s = makeSupervisor()
        let steps: [(ControlRequest, [String])] = [
            (ControlRequest(command: .addPool, pool: Pool(name: "web", backends: [m1])), ["10.0.0.1:80"]),
            (ControlRequest(command: .addMember, poolName: "web", member: m2), ["10.0.0.1:80", "10.0.0.2:80"]),
            (ControlRequest(command: .drainMember, poolName: "web", member: m1), ["10.0.0.1:80 drained", "10.0.0.2:80"]),
            (ControlRequest(command: .undrainMember, poolName: "web", member: m1), ["10.0.0.1:80", "10.0.0.2:80"]),
            (ControlRequest(command: .removeMember, poolName: "web", member: Backend(address: "10.0.0.2", port: 80)),
             ["10.0.0.1:80"]),
        ]
        for (version, (request, members)) in steps.enumerated() {
            let (r, event) = send(s, request)
            #expect(r.ok, "\(request.command): \(r.error ?? "")")
            #expect(r.rules == stored(s) && event == .rulesChanged(stored(s)) && r.rules?.version == version + 1)
            #expect(r.rules?.pools.first?.backends.map { $0.key + ($0.drained ? " drained" : "") } == members)
            #expect(s.engine.withLock { $0.rules } == stored(s))
        }
        let (r, event) = send(s, ControlRequest(command: .removePool, poolName: "web"))
        #expect(r.ok && r.rules?.pools.isEmpty == true && r.rules?.version == 6 && event == .rulesChanged(stored(s)))
    }

    @Test("a refused pool edit answers the reason, gives no event, and changes nothing")
    func refused() {
        let s = makeSupervisor(rules: RuleSet(rules: [SpliceRule(match: RuleMatch(), action: .splice, pool: "web")],
                                              pools: [Pool(name: "web", backends: [m1])]))
        let before = stored(s)
        let cases: [(ControlRequest, String)] = [
            (ControlRequest(command: .addPool), "add-pool needs a \"pool\" object"),
            (ControlRequest(command: .addPool, pool: Pool(name: "web")), "pool 'web' exists already"),
            (ControlRequest(command: .removePool), "remove-pool needs a \"poolName\""),
            (ControlRequest(command: .removePool, poolName: "web"), "pool 'web' is used by rule 1"),
            (ControlRequest(command: .addMember, poolName: "web"), "add-member needs a \"poolName\" and a \"member\" object"),
            (ControlRequest(command: .drainMember, member: m1), "drain-member needs a \"poolName\" and a \"member\" object"),
            (ControlRequest(command: .addMember, poolName: "web", member: m1), "pool 'web' has a member 10.0.0.1:80 already"),
            (ControlRequest(command: .removeMember, poolName: "web", member: m2), "pool 'web' has no member 10.0.0.2:80"),
            (ControlRequest(command: .undrainMember, poolName: "nope", member: m1), "no pool 'nope'"),
        ]
        for (request, message) in cases {
            let (r, event) = send(s, request)
            #expect(!r.ok && event == nil && r.rules == nil, "\(request.command)")
            #expect(r.error?.contains(message) == true, "\(request.command): \(r.error ?? "no error")")
        }
        #expect(stored(s) == before)
    }

    @Test("the pool commands' JSON: their names; the new fields are optional, older requests decode as before")
    func json() throws {
        let names = [ControlRequest.Command.addPool, .removePool, .addMember, .removeMember, .drainMember, .undrainMember]
        #expect(names.map(\.rawValue) == ["add-pool", "remove-pool", "add-member", "remove-member", "drain-member", "undrain-member"])
        let request = ControlRequest(command: .addMember, poolName: "web", member: m2)
        let data = try JSONEncoder().encode(request)
        #expect(try JSONDecoder().decode(ControlRequest.self, from: data) == request)
        let old = #"{"command":"remove-rule","ruleID":3}"#
        let decoded = try JSONDecoder().decode(ControlRequest.self, from: Data(old.utf8))
        #expect(decoded == ControlRequest(command: .removeRule, ruleID: 3))
        let hand = #"{"command":"drain-member","poolName":"web","member":{"address":"10.0.0.1","port":80}}"#
        #expect(try JSONDecoder().decode(ControlRequest.self, from: Data(hand.utf8))
            == ControlRequest(command: .drainMember, poolName: "web", member: m1))
    }
}
