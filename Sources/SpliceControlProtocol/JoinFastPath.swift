// The per-connection messages (the balancer's joins, the proxy's decisions and step-outs),
// written and read without Foundation's JSONEncoder/JSONDecoder.
//
// Every balanced connection costs two requests (`prepare`, `join`) and their two answers, each
// encoded by one side and decoded by the other. Through Codable that was most of spliced's and
// splice-proxy's own CPU under a crowd of short requests (perf, bench-balancer's short
// requests: ControlRequest's decoding and ControlResponse's encoding ~60% of spliced's
// samples). These messages are flat: a writer and a reader for exactly them are short, and
// the wire stays the same JSON. The same held for the resilient mode's one message a
// connection, `decide` (the proxy's `proxy` decision, shown in `splicectl flows`): under
// bench-connrate's resilient case its Codable reading and writing took ~9% of the machine in
// spliced's control thread. And: the writer's bytes are the ones JSONEncoder writes with
// `.sortedKeys` and `.withoutEscapingSlashes` (the tests compare them), and the reader takes
// any JSON text of the same shape. Anything else (another command, a field the fast path
// does not know, a number with a fraction, a duplicated key) is left to Codable: the reader
// answers nil and the caller decodes as before.

// MARK: Writing

struct JSONLineWriter {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(384) }

    mutating func raw(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func string(_ s: String) {
        bytes.append(0x22)
        for b in s.utf8 {
            switch b {
            case 0x22: bytes.append(0x5c); bytes.append(0x22)
            case 0x5c: bytes.append(0x5c); bytes.append(0x5c)
            case 0x0a: bytes.append(0x5c); bytes.append(UInt8(ascii: "n"))
            case 0x0d: bytes.append(0x5c); bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(0x5c); bytes.append(UInt8(ascii: "t"))
            case 0x08: bytes.append(0x5c); bytes.append(UInt8(ascii: "b"))
            case 0x0c: bytes.append(0x5c); bytes.append(UInt8(ascii: "f"))
            case 0..<0x20:
                bytes.append(contentsOf: #"\u00"#.utf8)
                bytes.append(contentsOf: (b < 0x10 ? "0" : "").utf8)
                bytes.append(contentsOf: String(b, radix: 16).utf8)
            default: bytes.append(b)
            }
        }
        bytes.append(0x22)
    }

    mutating func number<T: BinaryInteger>(_ v: T) {
        bytes.append(contentsOf: String(v).utf8)
    }

    mutating func bool(_ v: Bool) { if v { raw("true") } else { raw("false") } }

    /// `,"key":` (or `"key":` for the first member: `first` says so and is cleared).
    mutating func key(_ k: StaticString, first: inout Bool) {
        if !first { bytes.append(0x2c) }
        first = false
        bytes.append(0x22)
        k.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(0x22)
        bytes.append(0x3a)
    }
}

extension JoinMessage {
    /// The members in JSONEncoder's `.sortedKeys` order.
    func write(to w: inout JSONLineWriter) {
        var first = true
        w.bytes.append(0x7b)
        w.key("backend", first: &first); w.string(backend)
        w.key("backendPort", first: &first); w.number(backendPort)
        if let chunkLeft { w.key("chunkLeft", first: &first); w.number(chunkLeft) }
        w.key("client", first: &first); w.string(client)
        w.key("clientPort", first: &first); w.number(clientPort)
        w.key("local", first: &first); w.string(local)
        w.key("localPort", first: &first); w.number(localPort)
        if let oneWay { w.key("oneWay", first: &first); w.string(oneWay) }
        if let pool { w.key("pool", first: &first); w.string(pool) }
        if let readFromBackend { w.key("readFromBackend", first: &first); w.number(readFromBackend) }
        if let readFromClient { w.key("readFromClient", first: &first); w.number(readFromClient) }
        if let returnAfter { w.key("returnAfter", first: &first); w.number(returnAfter) }
        if let returnWindow { w.key("returnWindow", first: &first); w.number(returnWindow) }
        if let rule { w.key("rule", first: &first); w.number(rule) }
        w.key("service", first: &first); w.string(service)
        w.key("servicePort", first: &first); w.number(servicePort)
        w.key("step", first: &first); w.string(step.rawValue)
        if let writtenToBackend { w.key("writtenToBackend", first: &first); w.number(writtenToBackend) }
        if let writtenToClient { w.key("writtenToClient", first: &first); w.number(writtenToClient) }
        w.bytes.append(0x7d)
    }
}

extension FlowDecision {
    /// The members in JSONEncoder's `.sortedKeys` order.
    func write(to w: inout JSONLineWriter) {
        var first = true
        w.bytes.append(0x7b)
        w.key("action", first: &first); w.string(action.rawValue)
        w.key("client", first: &first); w.string(client)
        w.key("clientPort", first: &first); w.number(clientPort)
        if let rule { w.key("rule", first: &first); w.number(rule) }
        w.key("server", first: &first); w.string(server)
        w.key("serverPort", first: &first); w.number(serverPort)
        w.bytes.append(0x7d)
    }
}

extension ControlRequest {
    /// The request as one line, when it is a join message alone, or a `decide` or `step-out`
    /// with its decision (and `force`) alone (nil: write it with Codable).
    var fastLine: [UInt8]? {
        guard proxy == nil, close == nil, policy == nil, rules == nil, rule == nil, ruleID == nil,
              position == nil, pool == nil, poolName == nil, member == nil else { return nil }
        var w = JSONLineWriter()
        if command == .join, let join, decision == nil, force == nil {
            w.raw(#"{"command":"join","join":"#)
            join.write(to: &w)
        } else if command == .decide || command == .stepOut, let decision, join == nil {
            var first = true
            w.bytes.append(0x7b)
            w.key("command", first: &first); w.string(command.rawValue)
            w.key("decision", first: &first); decision.write(to: &w)
            if let force { w.key("force", first: &first); w.bool(force) }
        } else {
            return nil
        }
        w.bytes.append(0x7d)
        w.bytes.append(0x0a)
        return w.bytes
    }
}

extension ControlResponse {
    /// The answer as one line, when it carries no more than `answers`, `decision`, `error`,
    /// `join`, `ok` and `outcome` (a join's or a decision's answer, a refusal; nil: write it
    /// with Codable).
    var fastLine: [UInt8]? {
        guard status == nil, flows == nil, proxyID == nil, policy == nil, rules == nil,
              flowsReset == nil else { return nil }
        var w = JSONLineWriter()
        var first = true
        w.bytes.append(0x7b)
        if let answers { w.key("answers", first: &first); w.string(answers.rawValue) }
        if let decision { w.key("decision", first: &first); decision.write(to: &w) }
        if let error { w.key("error", first: &first); w.string(error) }
        if let join { w.key("join", first: &first); join.write(to: &w) }
        w.key("ok", first: &first); w.bool(ok)
        if let outcome { w.key("outcome", first: &first); w.string(outcome) }
        w.bytes.append(0x7d)
        w.bytes.append(0x0a)
        return w.bytes
    }
}

// MARK: Reading

/// Reads the flat JSON of the join messages in one pass over the bytes, into the fields
/// themselves: no tree of values, no key strings (a key is compared as bytes), so a message
/// costs a few small strings (the addresses) and nothing else. Reads strings, integers,
/// booleans, null and objects; anything else (an array, a fraction, a key with an escape in
/// it, a key given twice) fails the read, and the caller leaves the line to Codable.
struct FlatReader {
    let b: UnsafeBufferPointer<UInt8>
    var i = 0

    init(_ b: UnsafeBufferPointer<UInt8>) { self.b = b }

    mutating func skipSpace() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0a || b[i] == 0x0d || b[i] == 0x09 { i += 1 }
    }

    /// Only spaces (a trailing newline among them) are left.
    mutating func atEnd() -> Bool {
        skipSpace()
        return i == b.count
    }

    /// The members of an object: `member` is called with each key's bytes and must read its
    /// value (false: the read fails). False for anything but a well-formed object.
    static func object(_ r: inout FlatReader, _ member: (UnsafeBufferPointer<UInt8>, inout FlatReader) -> Bool) -> Bool {
        r.skipSpace()
        guard r.i < r.b.count, r.b[r.i] == 0x7b else { return false }
        r.i += 1
        r.skipSpace()
        if r.i < r.b.count, r.b[r.i] == 0x7d { r.i += 1; return true }
        while true {
            r.skipSpace()
            guard r.i < r.b.count, r.b[r.i] == 0x22 else { return false }
            let start = r.i + 1
            var end = start
            while end < r.b.count, r.b[end] != 0x22, r.b[end] != 0x5c, r.b[end] >= 0x20 { end += 1 }
            guard end < r.b.count, r.b[end] == 0x22 else { return false }
            r.i = end + 1
            r.skipSpace()
            guard r.i < r.b.count, r.b[r.i] == 0x3a else { return false }
            r.i += 1
            r.skipSpace()
            guard member(UnsafeBufferPointer(rebasing: r.b[start..<end]), &r) else { return false }
            r.skipSpace()
            guard r.i < r.b.count else { return false }
            if r.b[r.i] == 0x2c { r.i += 1; continue }
            if r.b[r.i] == 0x7d { r.i += 1; return true }
            return false
        }
    }

    /// `null` (consumed), for an optional member: absent, as for Codable.
    mutating func null() -> Bool { literal("null") }

    mutating func bool() -> Bool? {
        if literal("true") { return true }
        if literal("false") { return false }
        return nil
    }

    private mutating func literal(_ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard i + n <= b.count else { return false }
        let same = word.withUTF8Buffer { w in (0..<n).allSatisfy { b[i + $0] == w[$0] } }
        if same { i += n }
        return same
    }

    /// An integer: no leading zero before more digits, no fraction, no exponent, no overflow.
    mutating func integer() -> (negative: Bool, magnitude: UInt64)? {
        var negative = false
        if i < b.count, b[i] == UInt8(ascii: "-") { negative = true; i += 1 }
        let start = i
        var m: UInt64 = 0
        while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
            let (t, o1) = m.multipliedReportingOverflow(by: 10)
            let (s, o2) = t.addingReportingOverflow(UInt64(b[i] - 0x30))
            guard !o1, !o2 else { return nil }
            m = s
            i += 1
        }
        guard i > start else { return nil }
        if b[start] == 0x30 && i - start > 1 { return nil }
        if i < b.count, b[i] == UInt8(ascii: ".") || b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") { return nil }
        return (negative, m)
    }

    mutating func unsigned<T: FixedWidthInteger & UnsignedInteger>(_: T.Type) -> T? {
        guard let (negative, m) = integer() else { return nil }
        if negative { return m == 0 ? 0 : nil }
        return T(exactly: m)
    }

    mutating func int() -> Int? {
        guard let (negative, m) = integer() else { return nil }
        if negative {
            guard m <= UInt64(Int.max) + 1 else { return nil }
            return m == UInt64(Int.max) + 1 ? Int.min : -Int(m)
        }
        return Int(exactly: m)
    }

    private static func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case 0x30...0x39: return UInt32(c - 0x30)
        case 0x61...0x66: return UInt32(c - 0x61 + 10)
        case 0x41...0x46: return UInt32(c - 0x41 + 10)
        default: return nil
        }
    }

    private mutating func hex4() -> UInt32? {
        guard i + 4 <= b.count else { return nil }
        var v: UInt32 = 0
        for k in 0..<4 {
            guard let h = FlatReader.hexValue(b[i + k]) else { return nil }
            v = v << 4 | h
        }
        i += 4
        return v
    }

    mutating func string() -> String? {
        guard i < b.count, b[i] == 0x22 else { return nil }
        i += 1
        let start = i
        // The common case: no escape.
        while i < b.count, b[i] != 0x22, b[i] != 0x5c, b[i] >= 0x20 { i += 1 }
        guard i < b.count else { return nil }
        if b[i] == 0x22 {
            let s = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
            i += 1
            return s
        }
        var out = Array(b[start..<i])
        while i < b.count {
            let c = b[i]
            if c == 0x22 { i += 1; return String(decoding: out, as: UTF8.self) }
            if c < 0x20 { return nil }
            if c != 0x5c { out.append(c); i += 1; continue }
            i += 1
            guard i < b.count else { return nil }
            let e = b[i]
            i += 1
            switch e {
            case 0x22, 0x5c, 0x2f: out.append(e)
            case UInt8(ascii: "n"): out.append(0x0a)
            case UInt8(ascii: "r"): out.append(0x0d)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0c)
            case UInt8(ascii: "u"):
                guard var u = hex4() else { return nil }
                if (0xd800..<0xdc00).contains(u) {
                    guard i + 2 <= b.count, b[i] == 0x5c, b[i + 1] == UInt8(ascii: "u") else { return nil }
                    i += 2
                    guard let low = hex4(), (0xdc00..<0xe000).contains(low) else { return nil }
                    u = 0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00)
                } else if (0xdc00..<0xe000).contains(u) {
                    return nil
                }
                guard let scalar = Unicode.Scalar(u) else { return nil }
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default:
                return nil
            }
        }
        return nil
    }

    /// The index of `key` in `names`, compared as bytes.
    static func index(of key: UnsafeBufferPointer<UInt8>, in names: [StaticString]) -> Int? {
        for (n, name) in names.enumerated() where name.utf8CodeUnitCount == key.count {
            let same = name.withUTF8Buffer { w in (0..<key.count).allSatisfy { key[$0] == w[$0] } }
            if same { return n }
        }
        return nil
    }
}

extension JoinMessage {
    /// The members a join object may have, in the order `read` numbers them.
    static let memberNames: [StaticString] = [
        "step", "client", "clientPort", "service", "servicePort", "local", "localPort", "backend", "backendPort",
        "readFromClient", "writtenToClient", "readFromBackend", "writtenToBackend", "returnAfter", "chunkLeft",
        "returnWindow", "oneWay", "rule", "pool",
    ]
    /// The first nine are required.
    static let requiredMembers: UInt32 = (1 << 9) - 1

    /// A join object as the fast path reads it: every required member, each of its type, no
    /// member it does not know, none twice (nil otherwise: Codable decides).
    static func read(_ r: inout FlatReader) -> JoinMessage? {
        var m = JoinMessage(step: .prepare, client: "", clientPort: 0, service: "", servicePort: 0,
                            local: "", localPort: 0, backend: "", backendPort: 0)
        var seen: UInt32 = 0
        let ok = FlatReader.object(&r) { key, r in
            guard let n = FlatReader.index(of: key, in: JoinMessage.memberNames), seen & (1 << n) == 0 else { return false }
            seen |= 1 << n
            // An optional member that is null is absent, as for Codable.
            if n >= 9 && r.null() { return true }
            switch n {
            case 0: guard let s = r.string(), let st = Step(rawValue: s) else { return false }; m.step = st
            case 1: guard let s = r.string() else { return false }; m.client = s
            case 2: guard let p = r.unsigned(UInt16.self) else { return false }; m.clientPort = p
            case 3: guard let s = r.string() else { return false }; m.service = s
            case 4: guard let p = r.unsigned(UInt16.self) else { return false }; m.servicePort = p
            case 5: guard let s = r.string() else { return false }; m.local = s
            case 6: guard let p = r.unsigned(UInt16.self) else { return false }; m.localPort = p
            case 7: guard let s = r.string() else { return false }; m.backend = s
            case 8: guard let p = r.unsigned(UInt16.self) else { return false }; m.backendPort = p
            case 9: guard let v = r.unsigned(UInt64.self) else { return false }; m.readFromClient = v
            case 10: guard let v = r.unsigned(UInt64.self) else { return false }; m.writtenToClient = v
            case 11: guard let v = r.unsigned(UInt64.self) else { return false }; m.readFromBackend = v
            case 12: guard let v = r.unsigned(UInt64.self) else { return false }; m.writtenToBackend = v
            case 13: guard let v = r.unsigned(UInt64.self) else { return false }; m.returnAfter = v
            case 14: guard let v = r.unsigned(UInt64.self) else { return false }; m.chunkLeft = v
            case 15: guard let v = r.unsigned(UInt32.self) else { return false }; m.returnWindow = v
            case 16: guard let s = r.string() else { return false }; m.oneWay = s
            case 17: guard let v = r.int() else { return false }; m.rule = v
            default: guard let s = r.string() else { return false }; m.pool = s
            }
            return true
        }
        guard ok, seen & requiredMembers == requiredMembers else { return nil }
        return m
    }
}

extension FlowDecision {
    static let memberNames: [StaticString] = ["action", "client", "clientPort", "server", "serverPort", "rule"]
    /// The first five are required.
    static let requiredMembers: UInt32 = (1 << 5) - 1

    /// A decision object as the fast path reads it (nil otherwise: Codable decides).
    static func read(_ r: inout FlatReader) -> FlowDecision? {
        var d = FlowDecision(client: "", clientPort: 0, server: "", serverPort: 0, action: .proxy, rule: nil)
        var seen: UInt32 = 0
        let ok = FlatReader.object(&r) { key, r in
            guard let n = FlatReader.index(of: key, in: FlowDecision.memberNames), seen & (1 << n) == 0 else { return false }
            seen |= 1 << n
            switch n {
            case 0: guard let s = r.string(), let a = RuleAction(rawValue: s) else { return false }; d.action = a
            case 1: guard let s = r.string() else { return false }; d.client = s
            case 2: guard let p = r.unsigned(UInt16.self) else { return false }; d.clientPort = p
            case 3: guard let s = r.string() else { return false }; d.server = s
            case 4: guard let p = r.unsigned(UInt16.self) else { return false }; d.serverPort = p
            default:
                if r.null() { return true }
                guard let v = r.int() else { return false }
                d.rule = v
            }
            return true
        }
        guard ok, seen & requiredMembers == requiredMembers else { return nil }
        return d
    }
}

extension ControlRequest {
    static let fastMembers: [StaticString] = ["command", "join", "decision", "force"]

    /// A join request, or a `decide` or `step-out` with its decision (and `force`), read
    /// without Codable (nil: not one the fast path reads).
    static func fast(_ line: UnsafeBufferPointer<UInt8>) -> ControlRequest? {
        var r = FlatReader(line)
        var command: Command?, join: JoinMessage?, decision: FlowDecision?, force: Bool?, seen: UInt32 = 0
        let ok = FlatReader.object(&r) { key, r in
            guard let n = FlatReader.index(of: key, in: ControlRequest.fastMembers), seen & (1 << n) == 0 else { return false }
            seen |= 1 << n
            if n > 0 && r.null() { return true }
            switch n {
            case 0:
                guard let s = r.string(), let c = Command(rawValue: s) else { return false }
                command = c
            case 1:
                guard let m = JoinMessage.read(&r) else { return false }
                join = m
            case 2:
                guard let d = FlowDecision.read(&r) else { return false }
                decision = d
            default:
                guard let b = r.bool() else { return false }
                force = b
            }
            return true
        }
        guard ok, r.atEnd(), let command else { return nil }
        switch command {
        case .join: guard join != nil, decision == nil, force == nil else { return nil }
        case .decide, .stepOut: guard decision != nil, join == nil else { return nil }
        default: return nil
        }
        var request = ControlRequest(command: command)
        request.join = join
        request.decision = decision
        request.force = force
        return request
    }
}

extension ControlResponse {
    static let fastMembers: [StaticString] = ["ok", "error", "outcome", "answers", "join", "decision"]

    /// An answer of `ok`, `answers`, `error`, `outcome`, `join` and `decision` read without
    /// Codable (nil: not one the fast path reads).
    static func fast(_ line: UnsafeBufferPointer<UInt8>) -> ControlResponse? {
        var r = FlatReader(line)
        var answer = ControlResponse(ok: false)
        var seen: UInt32 = 0
        let ok = FlatReader.object(&r) { key, r in
            guard let n = FlatReader.index(of: key, in: ControlResponse.fastMembers),
                  seen & (1 << n) == 0 else { return false }
            seen |= 1 << n
            if n > 0 && r.null() { return true }
            switch n {
            case 0: guard let b = r.bool() else { return false }; answer.ok = b
            case 1: guard let s = r.string() else { return false }; answer.error = s
            case 2: guard let s = r.string() else { return false }; answer.outcome = s
            case 3: guard let s = r.string(), let c = ControlRequest.Command(rawValue: s) else { return false }; answer.answers = c
            case 4: guard let m = JoinMessage.read(&r) else { return false }; answer.join = m
            default: guard let d = FlowDecision.read(&r) else { return false }; answer.decision = d
            }
            return true
        }
        guard ok, r.atEnd(), seen & 1 != 0 else { return nil }
        return answer
    }
}
