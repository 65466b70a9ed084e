import Foundation
import Testing
import SpliceControlProtocol
import SpliceDaemonCore
import SpliceEngine
import SpliceWire

@Suite("The status report: built from the engine's counters, shown under their own names")
struct StatusReportTests {
    let client = IPAddress("10.0.1.2")!
    let server = IPAddress("10.0.2.2")!

    func packet(fromClient: Bool, flags: TCPFlags, seq: UInt32, ack: UInt32 = 0) -> [UInt8] {
        TCPPacketSpec(source: fromClient ? client : server, destination: fromClient ? server : client,
                      sourcePort: fromClient ? 40000 : 80, destinationPort: fromClient ? 80 : 40000,
                      sequenceNumber: SeqNumber(seq), acknowledgmentNumber: SeqNumber(ack), flags: flags,
                      payload: []).bytes()
    }

    func engineAfterAHandshake() -> Engine {
        let e = Engine(table: FlowTable(capacity: 16, blockCapacity: 4), now: .seconds(0))
        for var p in [packet(fromClient: true, flags: .syn, seq: 100),
                      packet(fromClient: false, flags: [.syn, .ack], seq: 500, ack: 101),
                      packet(fromClient: true, flags: .ack, seq: 101, ack: 501),
                      [0x45, 0x00]] {   // and a malformed one
            _ = p.withUnsafeMutableBytes { e.process($0, info: PacketInfo(), now: .seconds(1)) }
        }
        return e
    }

    func report(_ e: Engine, injectorFailures: UInt64 = 0) -> StatusReport {
        StatusReport(engine: e.status(), version: "t", pid: 1, uptimeSeconds: 2, queues: [], proxies: [],
                     control: nil, injectorFailures: injectorFailures, resident: (resident: 4096, peak: 8192))
    }

    @Test("counts, flows by state and mode, memory in use: what the engine holds")
    func fromTheEngine() {
        let e = engineAfterAHandshake()
        let r = report(e)
        #expect(r.packets == e.counters.packets && r.packets.total == 4 && r.packets.tcp == 3 && r.packets.malformed == 1)
        #expect(r.verdicts == e.counters.verdicts)
        #expect(r.flows.total == 1 && r.flows.capacity == 16 && r.flows.events.created == 1)
        #expect(r.flows.byState == ["ESTABLISHED": 1] && r.flows.byMode == ["bypass": 1])
        #expect(r.memory.inUseBytes == r.memory.entryBytes + r.memory.blocksInUse * r.memory.blockBytes + r.memory.indexBytes)
        #expect(r.memory.residentBytes == 4096 && r.memory.peakResidentBytes == 8192)
        #expect(r.resilient?.activeProxy == nil && r.policy?.enabled == false)
    }

    @Test("the injector's failures are added to the engine's")
    func injectionFailures() {
        let r = report(engineAfterAHandshake(), injectorFailures: 3)
        #expect(r.resilient?.counters.injectionFailures == 3)
    }

    @Test("in JSON, the flow events and the resilient counters sit beside the other keys, and read back equal")
    func json() throws {
        var r = report(engineAfterAHandshake())
        r.resilient?.counters.failovers = 7
        r.resilient?.activeProxy = 2
        let data = try JSONEncoder().encode(r)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let flows = try #require(object["flows"] as? [String: Any])
        let resilient = try #require(object["resilient"] as? [String: Any])
        #expect(flows["created"] as? Int == 1 && flows["tableFull"] as? Int == 0 && flows["total"] as? Int == 1)
        #expect(resilient["failovers"] as? Int == 7 && resilient["activeProxy"] as? Int == 2)
        #expect((object["packets"] as? [String: Any])?["malformed"] as? Int == 1)
        #expect(try JSONDecoder().decode(StatusReport.self, from: data) == r)
    }

    @Test("flow records name the tuple, state and mode as the engine holds them")
    func flowRecords() {
        let records = engineAfterAHandshake().flowRecords(now: .seconds(3))
        #expect(records.count == 1)
        let f = records[0]
        #expect(f.family == 4 && f.src == "10.0.1.2" && f.sport == 40000 && f.dst == "10.0.2.2" && f.dport == 80)
        #expect(f.state == "ESTABLISHED" && f.mode == "bypass" && f.proxy == nil && f.ageSeconds == 2)
    }

    @Test("a policy goes to the control socket and back; a bad one names its fault")
    func policy() throws {
        let p = try SplicePolicy(PolicyConfig(enabled: true, ports: [443, 80], servers: ["10.0.2.0/24"], clients: []))
        #expect(PolicyConfig(p) == PolicyConfig(enabled: true, ports: [80, 443], servers: ["10.0.2.0/24"], clients: []))
        #expect(throws: (any Error).self) { try SplicePolicy(PolicyConfig(enabled: true, ports: [0], servers: [], clients: [])) }
    }

    @Test("a policy's ports in JSON: single ports as numbers, ranges as \"A:B\", adjacent ports merged; bad ones named")
    func policyPortsJSON() throws {
        let json = #"{"enabled":true,"ports":[443,"8000:8999",80,81],"servers":[],"clients":[]}"#
        let c = try JSONDecoder().decode(PolicyConfig.self, from: Data(json.utf8))
        #expect(c.ports == [443, PortRange(8000, 8999), 80, 81])
        let back = PolicyConfig(try SplicePolicy(c))
        #expect(back.ports == [PortRange(80, 81), 443, PortRange(8000, 8999)])
        let encoded = String(decoding: try JSONEncoder().encode(back), as: UTF8.self)
        #expect(encoded.contains(#""ports":["80:81",443,"8000:8999"]"#), "\(encoded)")
        for (bad, says) in [(#"[70000]"#, "70000"), (#"["9:3"]"#, "below"), (#"["http"]"#, "not a port"), (#"[80.5]"#, "80.5")] {
            let text = #"{"enabled":true,"ports":"# + bad + #","servers":[],"clients":[]}"#
            do {
                _ = try JSONDecoder().decode(PolicyConfig.self, from: Data(text.utf8))
                Issue.record("\(bad) was accepted")
            } catch {
                #expect("\(error)".contains(says), "\(bad): \(error)")
            }
        }
    }
}
