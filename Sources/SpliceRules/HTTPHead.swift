/// The most bytes the proxy looks at: a request or response head, or a ClientHello, that does
/// not fit in this many bytes is taken as invalid.
public let maxPeekLength = 16384

/// What a parser makes of the bytes it was given.
public enum Peek<Value: Sendable>: Sendable {
    /// Not enough bytes yet: more could still make a valid value.
    case incomplete
    /// The bytes can never be a valid value, whatever follows.
    case invalid
    /// A whole value was parsed.
    case complete(Value)

    /// The parsed value, when complete.
    public var value: Value? {
        if case .complete(let v) = self { return v }
        return nil
    }
}

extension Peek: Equatable where Value: Equatable {}

/// One header field of an HTTP head: the name lowercased, the value with the blanks around it
/// removed.
public struct HTTPHeaderField: Sendable, Hashable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// The head of an HTTP/1.x request, as the client's first bytes hold it.
public struct HTTPRequestHead: Sendable, Equatable {
    public var method: String
    /// The request target as sent ("/index.html?q=1").
    public var target: String
    /// "HTTP/1.0" or "HTTP/1.1".
    public var version: String
    public var headers: [HTTPHeaderField]
    /// The first Host header, lowercased, without its port ("example.com", "[::1]"); nil when
    /// there is none or it is empty. An absolute-form target's authority is not looked at.
    public var host: String?
    /// The bytes of the head, up to and including the blank line.
    public var headLength: Int

    public init(method: String, target: String, version: String, headers: [HTTPHeaderField], headLength: Int) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.headLength = headLength
        self.host = headers.first { $0.name == "host" }.flatMap { HTTPRequestHead.hostWithoutPort($0.value) }
    }

    /// Parses a request head: "METHOD SP target SP HTTP/1.x", header lines, a blank line; line
    /// ends are CRLF or a bare LF. Bytes after the head (a body) are ignored.
    ///
    /// `.invalid` as soon as the bytes cannot be the start of such a head (a first byte that
    /// cannot start a method, such as a TLS record's 0x16; a method that is not a token; a
    /// version that is not HTTP/1.0 or HTTP/1.1; a malformed header line; a folded header line),
    /// and when the first 16384 bytes hold no blank line.
    public static func parse(_ bytes: some Collection<UInt8>) -> Peek<HTTPRequestHead> {
        switch parseHead(bytes, firstLine: requestLine) {
        case .incomplete: return .incomplete
        case .invalid: return .invalid
        case .complete(let head):
            let (method, target, version) = head.first
            return .complete(HTTPRequestHead(method: method, target: target, version: version,
                                             headers: head.headers, headLength: head.length))
        }
    }

    /// "example.com:8080" → "example.com", "[::1]:80" → "[::1]", lowercased; nil when empty.
    static func hostWithoutPort(_ value: String) -> String? {
        var host = Substring(value)
        if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
            host = host[...close]
        } else if let colon = host.firstIndex(of: ":") {
            host = host[..<colon]
        }
        return host.isEmpty ? nil : host.lowercased()
    }

    /// The request line: method, target and version.
    static func requestLine(_ line: ArraySlice<UInt8>, complete: Bool) -> LineCheck<(String, String, String)> {
        let end = line.endIndex
        let methodEnd = scan(line, from: line.startIndex, while: isTokenByte)
        guard methodEnd < end else { return complete ? .bad : .partial }
        guard methodEnd > line.startIndex, line[methodEnd] == space else { return .bad }

        let targetStart = methodEnd + 1
        let targetEnd = scan(line, from: targetStart, while: isTargetByte)
        guard targetEnd < end else { return complete ? .bad : .partial }
        guard targetEnd > targetStart, line[targetEnd] == space else { return .bad }

        let rest = line[(targetEnd + 1)...]
        switch httpVersion(rest) {
        case .bad: return .bad
        case .partial: return complete ? .bad : .partial
        case .ok(let version):
            guard rest.count == 8 else { return .bad }
            guard complete else { return .partial }
            return .ok((text(line[..<methodEnd]), text(line[targetStart..<targetEnd]), version))
        }
    }
}

/// The head of an HTTP/1.x response.
public struct HTTPResponseHead: Sendable, Equatable {
    /// "HTTP/1.0" or "HTTP/1.1".
    public var version: String
    /// The three-digit status code. An interim (1xx) response is parsed like any other.
    public var status: Int
    public var reason: String
    public var headers: [HTTPHeaderField]
    /// The Content-Length: nil when there is none, when one is not a decimal number, when
    /// several disagree, or when a Transfer-Encoding is present.
    public var contentLength: Int?
    /// The first Content-Type, as sent.
    public var contentType: String?
    /// The bytes of the head, up to and including the blank line.
    public var headLength: Int

    public init(version: String, status: Int, reason: String, headers: [HTTPHeaderField], headLength: Int) {
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.headLength = headLength
        self.contentType = headers.first { $0.name == "content-type" }?.value
        self.contentLength = HTTPResponseHead.contentLength(headers)
    }

    /// Parses a response head: "HTTP/1.x SP 3DIGIT SP reason" (the reason may be empty, and
    /// the space before it missing), header lines, a blank line; line ends are CRLF or a bare
    /// LF. `.invalid` as soon as the bytes cannot be the start of such a head, and when the
    /// first 16384 bytes hold no blank line.
    public static func parse(_ bytes: some Collection<UInt8>) -> Peek<HTTPResponseHead> {
        switch parseHead(bytes, firstLine: statusLine) {
        case .incomplete: return .incomplete
        case .invalid: return .invalid
        case .complete(let head):
            let (version, status, reason) = head.first
            return .complete(HTTPResponseHead(version: version, status: status, reason: reason,
                                              headers: head.headers, headLength: head.length))
        }
    }

    static func contentLength(_ headers: [HTTPHeaderField]) -> Int? {
        if headers.contains(where: { $0.name == "transfer-encoding" }) { return nil }
        var length: Int?
        for h in headers where h.name == "content-length" {
            // At most 18 digits: no overflow.
            guard !h.value.isEmpty, h.value.utf8.count <= 18, h.value.utf8.allSatisfy(isDigit),
                  let n = Int(h.value), length == nil || length == n else { return nil }
            length = n
        }
        return length
    }

    /// The status line: version, status and reason.
    static func statusLine(_ line: ArraySlice<UInt8>, complete: Bool) -> LineCheck<(String, Int, String)> {
        let start = line.startIndex, end = line.endIndex
        let version: String
        switch httpVersion(line) {
        case .bad: return .bad
        case .partial: return complete ? .bad : .partial
        case .ok(let v): version = v
        }
        let codeStart = start + 8
        guard codeStart < end else { return complete ? .bad : .partial }
        guard line[codeStart] == space else { return .bad }
        let digitsEnd = scan(line, from: codeStart + 1, while: isDigit)
        let digits = digitsEnd - (codeStart + 1)
        guard digits <= 3 else { return .bad }
        guard digits == 3 else { return digitsEnd == end && !complete ? .partial : .bad }
        var reasonStart = digitsEnd
        if reasonStart < end {
            guard line[reasonStart] == space else { return .bad }
            reasonStart += 1
        }
        let reason = line[reasonStart...]
        guard reason.allSatisfy(isFieldValueByte) else { return .bad }
        guard complete else { return .partial }
        let status = line[(codeStart + 1)..<digitsEnd].reduce(0) { $0 * 10 + Int($1 - 0x30) }
        return .ok((version, status, text(reason)))
    }
}

// MARK: The shared head parser

/// What a parser makes of one line: a value (only for a whole line), or, for the start of a
/// line whose end has not come yet, whether it can still become a good line.
enum LineCheck<Value> {
    case ok(Value)
    case partial
    case bad
}

/// A head split into its first line's value and its header fields.
struct HeadParts<First: Sendable>: Sendable {
    var first: First
    var headers: [HTTPHeaderField]
    var length: Int
}

/// Splits an HTTP head into lines (CRLF or bare LF), checks the first with `firstLine` and the
/// others as header fields, up to the blank line. The line whose end has not come yet is
/// checked as far as it goes, so that bad bytes are seen at once.
func parseHead<First: Sendable>(
    _ bytes: some Collection<UInt8>,
    firstLine: (ArraySlice<UInt8>, _ complete: Bool) -> LineCheck<First>
) -> Peek<HeadParts<First>> {
    let b = Array(bytes.prefix(maxPeekLength))
    var first: First?
    var headers: [HTTPHeaderField] = []
    var start = 0
    while true {
        guard let lf = b[start...].firstIndex(of: lineFeed) else {
            // A line that ends in CR can only go on with LF: it must be good as it is.
            let endsInCR = b.last == carriageReturn
            let rest = withoutTrailingCR(b[start...])
            let possible = if first == nil {
                !isBad(firstLine(rest, endsInCR))
            } else {
                (endsInCR && rest.isEmpty) || !isBad(headerLine(rest, complete: endsInCR))
            }
            return possible && b.count < maxPeekLength ? .incomplete : .invalid
        }
        let line = withoutTrailingCR(b[start..<lf])
        if let first {
            if line.isEmpty { return .complete(HeadParts(first: first, headers: headers, length: lf + 1)) }
            guard case .ok(let field) = headerLine(line, complete: true) else { return .invalid }
            headers.append(field)
        } else {
            guard case .ok(let value) = firstLine(line, true) else { return .invalid }
            first = value
        }
        start = lf + 1
    }
}

/// A header line: "name: value" with a token name and no blank before the colon. A line that
/// starts with a blank (obsolete folding) is bad.
func headerLine(_ line: ArraySlice<UInt8>, complete: Bool) -> LineCheck<HTTPHeaderField> {
    let nameEnd = scan(line, from: line.startIndex, while: isTokenByte)
    guard nameEnd < line.endIndex else { return complete ? .bad : .partial }
    guard nameEnd > line.startIndex, line[nameEnd] == colon else { return .bad }
    var value = line[(nameEnd + 1)...]
    guard value.allSatisfy(isFieldValueByte) else { return .bad }
    guard complete else { return .partial }
    while let c = value.first, c == space || c == tab { value = value.dropFirst() }
    while let c = value.last, c == space || c == tab { value = value.dropLast() }
    return .ok(HTTPHeaderField(name: text(line[..<nameEnd]).lowercased(), value: text(value)))
}

/// Checks the start of `s` against "HTTP/1.0" or "HTTP/1.1": `.ok` when all 8 bytes are there
/// and match, `.partial` when fewer are there and they match so far.
func httpVersion(_ s: ArraySlice<UInt8>) -> LineCheck<String> {
    let expected = Array("HTTP/1.".utf8)
    for k in 0..<8 {
        let i = s.startIndex + k
        guard i < s.endIndex else { return .partial }
        let good = k < 7 ? s[i] == expected[k] : (s[i] == 0x30 || s[i] == 0x31)
        if !good { return .bad }
    }
    return .ok(s[s.startIndex + 7] == 0x30 ? "HTTP/1.0" : "HTTP/1.1")
}

func isBad<Value>(_ check: LineCheck<Value>) -> Bool {
    if case .bad = check { return true }
    return false
}

/// The index of the first byte from `i` that fails `ok`, or the end.
func scan(_ s: ArraySlice<UInt8>, from i: Int, while ok: (UInt8) -> Bool) -> Int {
    var j = i
    while j < s.endIndex && ok(s[j]) { j += 1 }
    return j
}

func withoutTrailingCR(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
    s.last == carriageReturn ? s.dropLast() : s
}

func text(_ s: ArraySlice<UInt8>) -> String { String(decoding: s, as: UTF8.self) }

let space: UInt8 = 0x20, tab: UInt8 = 0x09, colon: UInt8 = 0x3a
let lineFeed: UInt8 = 0x0a, carriageReturn: UInt8 = 0x0d

func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }

/// An HTTP token character (RFC 9110 section 5.6.2): letters, digits and !#$%&'*+-.^_`|~.
func isTokenByte(_ c: UInt8) -> Bool {
    switch c {
    case 0x30...0x39, 0x41...0x5a, 0x61...0x7a: return true
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
         UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
         UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        return true
    default: return false
    }
}

/// A byte of a request target: anything visible (bytes above 0x7f are let through).
func isTargetByte(_ c: UInt8) -> Bool { c > 0x20 && c != 0x7f }

/// A byte of a field value or reason phrase: a blank, anything visible, or obs-text.
func isFieldValueByte(_ c: UInt8) -> Bool { c == tab || (c >= 0x20 && c != 0x7f) }
