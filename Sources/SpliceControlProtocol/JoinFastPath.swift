// The balancer's join messages, written and read without Foundation's JSONEncoder/JSONDecoder.
//
// Every balanced connection costs two requests (`prepare`, `join`) and their two answers, each
// encoded by one side and decoded by the other. Through Codable that was most of spliced's and
// splice-proxy's own CPU under a crowd of short requests (perf, bench-balancer's short
// requests: ControlRequest's decoding and ControlResponse's encoding ~60% of spliced's
// samples). These messages are flat: a writer and a reader for exactly them are short, and
// the wire stays the same JSON: the writer's bytes are the ones JSONEncoder writes with
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

extension ControlRequest {
    /// The request as one line, when it is a join message alone (nil: write it with Codable).
    var fastLine: [UInt8]? {
        guard command == .join, let join, proxy == nil, close == nil, policy == nil, decision == nil,
              force == nil, rules == nil, rule == nil, ruleID == nil, position == nil, pool == nil,
              poolName == nil, member == nil else { return nil }
        var w = JSONLineWriter()
        w.raw(#"{"command":"join","join":"#)
        join.write(to: &w)
        w.bytes.append(0x7d)
        w.bytes.append(0x0a)
        return w.bytes
    }
}

extension ControlResponse {
    /// The answer as one line, when it carries no more than `answers`, `error`, `join`, `ok`
    /// and `outcome` (a join's answer, a refusal; nil: write it with Codable).
    var fastLine: [UInt8]? {
        guard status == nil, flows == nil, proxyID == nil, policy == nil, rules == nil, decision == nil,
              flowsReset == nil else { return nil }
        var w = JSONLineWriter()
        var first = true
        w.bytes.append(0x7b)
        if let answers { w.key("answers", first: &first); w.string(answers.rawValue) }
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

/// A JSON value of the shapes the fast path reads: strings, integers, booleans, null and
/// objects of them (no arrays, no fractions).
indirect enum FlatJSON {
    case string(String)
    case integer(negative: Bool, magnitude: UInt64)
    case bool(Bool)
    case null
    case object([(key: String, value: FlatJSON)])

    /// Parses one JSON object (whitespace around it allowed, a trailing newline too); nil for
    /// anything else or anything the fast path does not read.
    static func parseObject(_ b: UnsafeBufferPointer<UInt8>) -> [(key: String, value: FlatJSON)]? {
        var i = 0
        guard case .object(let members)? = value(b, &i, depth: 0) else { return nil }
        skipSpace(b, &i)
        return i == b.count ? members : nil
    }

    private static func skipSpace(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int) {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0a || b[i] == 0x0d || b[i] == 0x09 { i += 1 }
    }

    private static func value(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int, depth: Int) -> FlatJSON? {
        skipSpace(b, &i)
        guard i < b.count else { return nil }
        switch b[i] {
        case 0x7b:
            guard depth < 4 else { return nil }
            i += 1
            var members: [(key: String, value: FlatJSON)] = []
            skipSpace(b, &i)
            if i < b.count, b[i] == 0x7d { i += 1; return .object(members) }
            while true {
                skipSpace(b, &i)
                guard let k = string(b, &i) else { return nil }
                skipSpace(b, &i)
                guard i < b.count, b[i] == 0x3a else { return nil }
                i += 1
                guard let v = value(b, &i, depth: depth + 1) else { return nil }
                // A key given twice: left to Codable.
                if members.contains(where: { $0.key == k }) { return nil }
                members.append((k, v))
                skipSpace(b, &i)
                guard i < b.count else { return nil }
                if b[i] == 0x2c { i += 1; continue }
                if b[i] == 0x7d { i += 1; return .object(members) }
                return nil
            }
        case 0x22:
            return string(b, &i).map { .string($0) }
        case UInt8(ascii: "t"):
            return literal(b, &i, "true") ? .bool(true) : nil
        case UInt8(ascii: "f"):
            return literal(b, &i, "false") ? .bool(false) : nil
        case UInt8(ascii: "n"):
            return literal(b, &i, "null") ? .null : nil
        case UInt8(ascii: "-"), 0x30...0x39:
            var negative = false
            if b[i] == UInt8(ascii: "-") { negative = true; i += 1 }
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
            // A leading zero before more digits is not JSON; a fraction or an exponent is
            // not read here.
            if b[start] == 0x30 && i - start > 1 { return nil }
            if i < b.count, b[i] == UInt8(ascii: ".") || b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") { return nil }
            return .integer(negative: negative, magnitude: m)
        default:
            return nil
        }
    }

    private static func literal(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int, _ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard i + n <= b.count else { return false }
        let same = word.withUTF8Buffer { w in (0..<n).allSatisfy { b[i + $0] == w[$0] } }
        if same { i += n }
        return same
    }

    private static func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case 0x30...0x39: return UInt32(c - 0x30)
        case 0x61...0x66: return UInt32(c - 0x61 + 10)
        case 0x41...0x46: return UInt32(c - 0x41 + 10)
        default: return nil
        }
    }

    private static func hex4(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int) -> UInt32? {
        guard i + 4 <= b.count else { return nil }
        var v: UInt32 = 0
        for k in 0..<4 {
            guard let h = hexValue(b[i + k]) else { return nil }
            v = v << 4 | h
        }
        i += 4
        return v
    }

    private static func string(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int) -> String? {
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
                guard var u = hex4(b, &i) else { return nil }
                if (0xd800..<0xdc00).contains(u) {
                    guard i + 2 <= b.count, b[i] == 0x5c, b[i + 1] == UInt8(ascii: "u") else { return nil }
                    i += 2
                    guard let low = hex4(b, &i), (0xdc00..<0xe000).contains(low) else { return nil }
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
}

extension FlatJSON {
    var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    var boolValue: Bool? { if case .bool(let v) = self { return v }; return nil }
    func unsigned<T: FixedWidthInteger & UnsignedInteger>(_: T.Type) -> T? {
        guard case .integer(let negative, let m) = self else { return nil }
        if negative { return m == 0 ? 0 : nil }
        return T(exactly: m)
    }
    var intValue: Int? {
        guard case .integer(let negative, let m) = self else { return nil }
        if negative {
            guard m <= UInt64(Int.max) + 1 else { return nil }
            return m == UInt64(Int.max) + 1 ? Int.min : -Int(m)
        }
        return Int(exactly: m)
    }
    var isNull: Bool { if case .null = self { return true }; return false }
}

extension JoinMessage {
    /// A join object as the fast path reads it: every required member, each of its type, no
    /// member it does not know (nil otherwise: Codable decides).
    init?(flat members: [(key: String, value: FlatJSON)]) {
        var step: Step?, client: String?, clientPort: UInt16?, service: String?, servicePort: UInt16?
        var local: String?, localPort: UInt16?, backend: String?, backendPort: UInt16?
        var m = JoinMessage(step: .prepare, client: "", clientPort: 0, service: "", servicePort: 0,
                            local: "", localPort: 0, backend: "", backendPort: 0)
        for (k, v) in members {
            // An optional member that is null is absent, as for Codable.
            let absent = v.isNull
            switch k {
            case "step": guard let s = v.stringValue, let st = Step(rawValue: s) else { return nil }; step = st
            case "client": guard let s = v.stringValue else { return nil }; client = s
            case "clientPort": guard let p = v.unsigned(UInt16.self) else { return nil }; clientPort = p
            case "service": guard let s = v.stringValue else { return nil }; service = s
            case "servicePort": guard let p = v.unsigned(UInt16.self) else { return nil }; servicePort = p
            case "local": guard let s = v.stringValue else { return nil }; local = s
            case "localPort": guard let p = v.unsigned(UInt16.self) else { return nil }; localPort = p
            case "backend": guard let s = v.stringValue else { return nil }; backend = s
            case "backendPort": guard let p = v.unsigned(UInt16.self) else { return nil }; backendPort = p
            case "readFromClient":
                if !absent { guard let n = v.unsigned(UInt64.self) else { return nil }; m.readFromClient = n }
            case "writtenToClient":
                if !absent { guard let n = v.unsigned(UInt64.self) else { return nil }; m.writtenToClient = n }
            case "readFromBackend":
                if !absent { guard let n = v.unsigned(UInt64.self) else { return nil }; m.readFromBackend = n }
            case "writtenToBackend":
                if !absent { guard let n = v.unsigned(UInt64.self) else { return nil }; m.writtenToBackend = n }
            case "returnAfter":
                if !absent { guard let n = v.unsigned(UInt64.self) else { return nil }; m.returnAfter = n }
            case "chunkLeft":
                if !absent { guard let n = v.unsigned(UInt64.self) else { return nil }; m.chunkLeft = n }
            case "returnWindow":
                if !absent { guard let n = v.unsigned(UInt32.self) else { return nil }; m.returnWindow = n }
            case "oneWay":
                if !absent { guard let s = v.stringValue else { return nil }; m.oneWay = s }
            case "rule":
                if !absent { guard let n = v.intValue else { return nil }; m.rule = n }
            case "pool":
                if !absent { guard let s = v.stringValue else { return nil }; m.pool = s }
            default:
                return nil
            }
        }
        guard let step, let client, let clientPort, let service, let servicePort, let local, let localPort,
              let backend, let backendPort else { return nil }
        m.step = step
        m.client = client; m.clientPort = clientPort
        m.service = service; m.servicePort = servicePort
        m.local = local; m.localPort = localPort
        m.backend = backend; m.backendPort = backendPort
        self = m
    }
}

extension ControlRequest {
    /// A join request read without Codable (nil: not one the fast path reads).
    static func fastJoin(_ line: UnsafeBufferPointer<UInt8>) -> ControlRequest? {
        guard let members = FlatJSON.parseObject(line), members.count == 2 else { return nil }
        var command: Command?, join: JoinMessage?
        for (k, v) in members {
            switch k {
            case "command": command = v.stringValue.flatMap(Command.init(rawValue:))
            case "join":
                guard case .object(let j) = v else { return nil }
                join = JoinMessage(flat: j)
            default: return nil
            }
        }
        guard command == .join, let join else { return nil }
        var r = ControlRequest(command: .join)
        r.join = join
        return r
    }
}

extension ControlResponse {
    /// An answer of `ok`, `answers`, `error`, `outcome` and `join` read without Codable (nil:
    /// not one the fast path reads).
    static func fast(_ line: UnsafeBufferPointer<UInt8>) -> ControlResponse? {
        guard let members = FlatJSON.parseObject(line) else { return nil }
        var r = ControlResponse(ok: false)
        var sawOK = false
        for (k, v) in members {
            let absent = v.isNull
            switch k {
            case "ok": guard let b = v.boolValue else { return nil }; r.ok = b; sawOK = true
            case "error": if !absent { guard let s = v.stringValue else { return nil }; r.error = s }
            case "outcome": if !absent { guard let s = v.stringValue else { return nil }; r.outcome = s }
            case "answers":
                if !absent { guard let c = v.stringValue.flatMap(ControlRequest.Command.init(rawValue:)) else { return nil }; r.answers = c }
            case "join":
                if !absent {
                    guard case .object(let j) = v, let m = JoinMessage(flat: j) else { return nil }
                    r.join = m
                }
            default: return nil
            }
        }
        return sawOK ? r : nil
    }
}
