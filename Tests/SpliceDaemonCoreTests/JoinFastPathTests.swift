import Foundation
import Testing
@testable import SpliceControlProtocol
import TestSupport

/// The join messages' fast path (SpliceControlProtocol/JoinFastPath.swift): the same bytes as
/// Codable's writing, the same values as Codable's reading, and Codable for anything else.
@Suite("Control protocol: the join messages' fast path")
struct JoinFastPathTests {
    func codable<T: Encodable>(_ v: T) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try e.encode(v)) + [0x0a]
    }

    func full() -> JoinMessage {
        var m = JoinMessage(step: .join, client: "10.77.1.2", clientPort: 40000, service: "fd77:9::1", servicePort: 80,
                            local: "10.77.2.1", localPort: 61000, backend: "10.77.2.2", backendPort: 65535)
        m.readFromClient = 120
        m.writtenToClient = 0
        m.readFromBackend = UInt64.max
        m.writtenToBackend = 1_234_567_890_123
        m.returnAfter = 983_416
        m.returnWindow = 65535
        m.chunkLeft = 1 << 40
        m.oneWay = "to-client"
        m.rule = -3
        m.pool = "web \"a\"\\b/c\u{1}\n\té"
        return m
    }

    func minimal(_ step: JoinMessage.Step) -> JoinMessage {
        JoinMessage(step: step, client: "::1", clientPort: 1, service: "::1", servicePort: 2,
                    local: "::1", localPort: 0, backend: "::2", backendPort: 3)
    }

    func decision(rule: Int?, action: RuleAction = .proxy) -> FlowDecision {
        FlowDecision(client: "fd77:1::2", clientPort: 65535, server: "10.77.2.2", serverPort: 80, action: action, rule: rule)
    }

    @Test func decisionsAndTheirAnswersAreWrittenAsCodableWritesThemAndReadBack() throws {
        var requests: [ControlRequest] = []
        for (command, d, force) in [(ControlRequest.Command.decide, decision(rule: nil), nil as Bool?),
                                    (.decide, decision(rule: -7, action: .splice), nil),
                                    (.stepOut, decision(rule: 2, action: .bypass), true),
                                    (.stepOut, decision(rule: nil, action: .splice), nil)] {
            var r = ControlRequest(command: command, decision: d)
            r.force = force
            requests.append(r)
        }
        for r in requests {
            let fast = try #require(r.fastLine)
            #expect(fast == (try codable(r)))
            let read = try #require(fast.withUnsafeBufferPointer { ControlRequest.fast($0) })
            #expect(read.command == r.command && read.decision == r.decision && read.force == r.force && read.join == nil)
            #expect(try ControlFraming.decode(ControlRequest.self, from: fast).decision == r.decision)
        }
        var a = ControlResponse(ok: true, outcome: "drained")
        a.answers = .stepOut
        a.decision = decision(rule: 3, action: .splice)
        var b = ControlResponse(ok: false, error: "no such flow")
        b.answers = .decide
        b.decision = decision(rule: nil)
        for r in [a, b] {
            let fast = try #require(r.fastLine)
            #expect(fast == (try codable(r)))
            let read = try #require(fast.withUnsafeBufferPointer { ControlResponse.fast($0) })
            #expect(read.ok == r.ok && read.error == r.error && read.outcome == r.outcome
                    && read.answers == r.answers && read.decision == r.decision && read.join == nil)
        }
        // A decision with a member or an action the fast path does not read is Codable's; a
        // decide without its decision, or with a join, too.
        let leftToCodable = [
            #"{"command":"decide","decision":{"action":"proxy","client":"a","clientPort":1,"server":"b","serverPort":2,"extra":1}}"#,
            #"{"command":"decide","decision":{"action":"teleport","client":"a","clientPort":1,"server":"b","serverPort":2}}"#,
            #"{"command":"decide","decision":{"action":"proxy","client":"a","clientPort":1,"server":"b"}}"#,
            #"{"command":"decide"}"#,
            #"{"command":"join","decision":{"action":"proxy","client":"a","clientPort":1,"server":"b","serverPort":2}}"#,
            #"{"command":"status","decision":{"action":"proxy","client":"a","clientPort":1,"server":"b","serverPort":2}}"#,
        ]
        for text in leftToCodable {
            #expect(Array(text.utf8).withUnsafeBufferPointer { ControlRequest.fast($0) } == nil, "\(text)")
        }
        #expect(throws: (any Error).self) { try ControlFraming.decode(ControlRequest.self, from: Array(leftToCodable[1].utf8)) }
    }

    /// Adding a field to these types must come with the fast path's knowing it: its writer
    /// would leave it out, its reader would hand the message to Codable.
    @Test func theFastPathKnowsEveryField() {
        #expect(Mirror(reflecting: full()).children.count == 19)
        #expect(Mirror(reflecting: decision(rule: 1)).children.count == 6)
        #expect(Mirror(reflecting: ControlRequest(command: .join)).children.count == 14)
        #expect(Mirror(reflecting: ControlResponse(ok: true)).children.count == 12)
    }

    @Test func requestsAreWrittenAsCodableWritesThemAndReadBack() throws {
        for m in [full(), minimal(.prepare), minimal(.cancel), minimal(.arm), minimal(.release), minimal(.end)] {
            var r = ControlRequest(command: .join)
            r.join = m
            let fast = try #require(r.fastLine)
            #expect(fast == (try codable(r)))
            #expect(try ControlFraming.encode(r) == fast)
            let fastRead = fast.withUnsafeBufferPointer { ControlRequest.fast($0) }
            #expect(fastRead?.join == m && fastRead?.command == .join)
            #expect(try ControlFraming.decode(ControlRequest.self, from: fast).join == m)
        }
    }

    @Test func answersAreWrittenAsCodableWritesThemAndReadBack() throws {
        var a = ControlResponse(ok: false, error: "no join is prepared for these connections", outcome: "not-drained")
        a.answers = .join
        a.join = full()
        var b = ControlResponse(ok: true)
        b.answers = .heartbeat
        let c = ControlResponse.failure("request too long")
        for r in [a, b, c] {
            let fast = try #require(r.fastLine)
            #expect(fast == (try codable(r)))
            let read = try #require(fast.withUnsafeBufferPointer { ControlResponse.fast($0) })
            #expect(read.ok == r.ok && read.error == r.error && read.outcome == r.outcome
                    && read.answers == r.answers && read.join == r.join)
        }
    }

    @Test func otherMessagesGoThroughCodable() throws {
        var r = ControlRequest(command: .join)
        r.join = minimal(.join)
        r.force = true
        #expect(r.fastLine == nil)
        #expect(ControlRequest(command: .status).fastLine == nil)
        #expect(ControlResponse(ok: true, proxyID: 3).fastLine == nil)
        // Codable's answer still comes out, and reads back.
        let line = try ControlFraming.encode(ControlResponse(ok: true, proxyID: 3))
        #expect(try ControlFraming.decode(ControlResponse.self, from: line).proxyID == 3)
    }

    /// Any JSON text of the same shape is read (spacing, member order, escapes, nulls for
    /// absent members); anything the fast path does not read is handed to Codable (nil), which
    /// reads it or names what is wrong.
    @Test func theReaderTakesJSONOfTheSameShapeAndLeavesTheRestToCodable() throws {
        let spaced = #" { "join" : { "step":"join", "servicePort":80, "service":"10.77.9.1", "client":"10.\u0037\u00377.1.2","#
            + #" "clientPort" : 4, "local":"10.77.2.1", "localPort":61000, "backend":"b\/\"x\"", "backendPort":80,"#
            + #" "rule": null, "pool": "\ud83d\ude00", "readFromClient": 0 }, "command" : "join" }"# + "\n"
        let r = try #require(Array(spaced.utf8).withUnsafeBufferPointer { ControlRequest.fast($0) })
        #expect(r.join?.client == "10.777.1.2" && r.join?.backend == #"b/"x""# && r.join?.rule == nil)
        #expect(r.join?.pool == "😀" && r.join?.readFromClient == 0)
        #expect(try ControlFraming.decode(ControlRequest.self, from: Array(spaced.utf8)).join == r.join)

        let leftToCodable = [
            #"{"command":"join"}"#,                                           // no join object
            #"{"command":"status","join":{}}"#,                               // another command
            #"{"command":"join","join":{"step":"join"},"force":true}"#,       // another member
            #"{"command":"join","join":{"step":"bogus","client":"a","clientPort":1,"service":"a","servicePort":1,"local":"a","localPort":1,"backend":"a","backendPort":1}}"#,
            #"{"command":"join","join":{"step":"join","client":"a","clientPort":70000,"service":"a","servicePort":1,"local":"a","localPort":1,"backend":"a","backendPort":1}}"#,
            #"{"command":"join","join":{"step":"join","client":"a","clientPort":1.5,"service":"a","servicePort":1,"local":"a","localPort":1,"backend":"a","backendPort":1}}"#,
            #"{"command":"join","join":{"step":"join","client":"a","clientPort":1,"service":"a","servicePort":1,"local":"a","localPort":1,"backend":"a","backendPort":1,"extra":1}}"#,
            #"{"command":"join","command":"join","join":{}}"#,               // a key twice
            #"{"command":"join","join":{"step":"join","client":"a","clientPort":1,"service":"a","servicePort":1,"local":"a","localPort":1,"backend":"a","backendPort":1,"backend":"b"}}"#,
            #"{"command":"join","join":{"st\u0065p":"join","client":"a","clientPort":1,"service":"a","servicePort":1,"local":"a","localPort":1,"backend":"a","backendPort":1}}"#,
            #"{"command":"join","join":{"step":"join","client":["a"],"clientPort":1,"service":"a","servicePort":1,"local":"a","localPort":1,"backend":"a","backendPort":1}}"#,
            #"{"command":"join","join":{"step":"join"}} trailing"#,
            #"{"command":"join","join":{"step":"join"#,                      // cut short
            #"{"command":"join","join":{"client":"\ud800"}}"#,              // a lone surrogate
            "",
        ]
        for text in leftToCodable {
            #expect(Array(text.utf8).withUnsafeBufferPointer { ControlRequest.fast($0) } == nil, "\(text)")
        }
        // A key written with an escape is Codable's to read.
        #expect(try ControlFraming.decode(ControlRequest.self, from: Array(leftToCodable[9].utf8)).join?.step == .join)
        // A port out of range is Codable's to refuse, with its own words.
        #expect(throws: (any Error).self) { try ControlFraming.decode(ControlRequest.self, from: Array(leftToCodable[4].utf8)) }
        // An answer without `ok`, or with a member the fast path does not know.
        #expect(Array(#"{"answers":"join"}"#.utf8).withUnsafeBufferPointer { ControlResponse.fast($0) } == nil)
        #expect(Array(#"{"ok":true,"proxyID":3}"#.utf8).withUnsafeBufferPointer { ControlResponse.fast($0) } == nil)
    }

    /// Damaged lines (bytes flipped, cut, spliced with JSON pieces, numbers at and past their
    /// types' ends): the hand-written reader never traps, and whatever it reads Codable reads
    /// the same (it hands everything else to Codable, which names what is wrong).
    @Test func damagedLinesAreReadAsCodableReadsThemOrLeftToIt() throws {
        var rng = SplitMix64(seed: testSeed(default: 0xfa57))
        var lines: [[UInt8]] = []
        for m in [full(), minimal(.join), minimal(.prepare), minimal(.end)] {
            var r = ControlRequest(command: .join)
            r.join = m
            lines.append(try #require(r.fastLine))
        }
        for (command, d) in [(ControlRequest.Command.decide, decision(rule: nil)), (.stepOut, decision(rule: -7, action: .splice))] {
            lines.append(try #require(ControlRequest(command: command, decision: d).fastLine))
        }
        var answer = ControlResponse(ok: false, error: "no join is prepared", outcome: "not-drained")
        answer.answers = .join
        answer.join = full()
        let answers = [try #require(answer.fastLine)]
        let pieces = ["0", "-1", "65535", "65536", "4294967296", "18446744073709551615", "18446744073709551616",
                      "-9223372036854775809", "1e3", "1.0", "null", "true", "\"\\u0000\"", "\"\\ud800\"", "{}", "[]",
                      ",", ":", "\"", "\\", " ", "\n"].map { Array($0.utf8) }
        var readFast = 0
        for i in 0..<20_000 {
            let answerLine = i % 5 == 0
            var b = (answerLine ? answers : lines).randomElement(using: &rng)!
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let at = Int.random(in: 0...b.count, using: &rng)
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: if at < b.count { b[at] = UInt8.random(in: 0...255, using: &rng) }
                case 1: b = Array(b.prefix(at))
                case 2: b.insert(contentsOf: pieces.randomElement(using: &rng)!, at: at)
                default:   // a number replaced by a piece
                    if let start = b[at...].firstIndex(where: { (0x30...0x39).contains($0) }) {
                        let end = b[start...].firstIndex(where: { !(0x30...0x39).contains($0) }) ?? b.count
                        b.replaceSubrange(start..<end, with: pieces.randomElement(using: &rng)!)
                    }
                }
            }
            if answerLine {
                guard let fast = b.withUnsafeBufferPointer({ ControlResponse.fast($0) }) else { continue }
                readFast += 1
                let slow = try? ControlFraming.decode(ControlResponse.self, from: b)
                #expect(slow?.ok == fast.ok && slow?.error == fast.error && slow?.outcome == fast.outcome
                        && slow?.answers == fast.answers && slow?.join == fast.join, "\(String(decoding: b, as: UTF8.self))")
            } else {
                guard let fast = b.withUnsafeBufferPointer({ ControlRequest.fast($0) }) else { continue }
                readFast += 1
                let slow = try? ControlFraming.decode(ControlRequest.self, from: b)
                #expect(slow == fast, "\(String(decoding: b, as: UTF8.self))")
            }
        }
        #expect(readFast > 0)
    }
}
