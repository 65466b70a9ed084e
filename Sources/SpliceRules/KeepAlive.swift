// What the balancer's keep-alive re-routing needs to know of a request and its response
// (Docs/balancer.md, "Keep-alive re-routing"): where a request (and its small body) ends, how many
// bytes its response has, whether the backend closes after it, and the response head a client
// keeps its connection open with.

extension HTTPRequestHead {
    /// How a per-request connection's request stands in `bytes` (everything read of it).
    public enum PerRequestFraming: Equatable, Sendable {
        /// Exactly one whole HTTP/1.1 request: its head and the body its Content-Length
        /// announces (none without one), nothing after it; the client is not expected to send
        /// more before the response.
        case whole
        /// The head is whole and announces a body that is not all here yet, but fits in the
        /// limit: wait for it.
        case awaitingBody
        /// Not for per-request routing: not HTTP/1.1, a chunked or unannounced body, a body
        /// larger than the limit, `Expect: 100-continue` (the client waits for the backend
        /// before its body), bytes past the request (pipelined), or no whole head.
        case unsuitable
    }

    /// The framing of the request in `bytes`, for a request (head and body) of at most `limit`
    /// bytes.
    public static func perRequestFraming(_ bytes: [UInt8], limit: Int) -> PerRequestFraming {
        guard case .complete(let h) = parse(bytes), h.version == "HTTP/1.1" else { return .unsuitable }
        if h.headers.contains(where: { $0.name == "transfer-encoding" || $0.name == "expect" }) { return .unsuitable }
        let lengths = h.headers.filter { $0.name == "content-length" }.map(\.value)
        guard lengths.count <= 1 else { return .unsuitable }
        var body = 0
        if let v = lengths.first {
            guard !v.isEmpty, v.utf8.count <= 9, v.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(v) else { return .unsuitable }
            body = n
        }
        let total = h.headLength + body
        if total > limit || bytes.count > total { return .unsuitable }
        return bytes.count == total ? .whole : .awaitingBody
    }
}

extension HTTPResponseHead {
    /// How the body after the head is framed (RFC 9112, 6.3).
    public enum Body: Equatable, Sendable {
        /// This many bytes (0: no body, as for a HEAD's response, 1xx, 204 and 304).
        case length(Int)
        /// Chunked (ChunkedBody follows where it ends); a Content-Length beside it is ignored.
        case chunked
        /// Delimited by the backend's close.
        case untilClose
    }

    /// The comma-separated list of every `name` field (a lower-case name), in order, each
    /// item lower-cased without its blanks.
    func tokens(of name: String) -> [String] {
        headers.filter { $0.name == name }
            .flatMap { $0.value.lowercased().split(separator: ",").map { String($0.filter { $0 != " " && $0 != "\t" }) } }
    }

    /// How this response's body is framed. `method`: the request's.
    public func body(method: String) -> Body {
        if method == "HEAD" || (100..<200).contains(status) || status == 204 || status == 304 { return .length(0) }
        if isChunked { return .chunked }
        return contentLength.map(Body.length) ?? .untilClose
    }

    /// The body is chunked: `Transfer-Encoding`'s last coding is `chunked`.
    public var isChunked: Bool { tokens(of: "transfer-encoding").last == "chunked" }

    /// The backend closes its connection after this response: `Connection: close`, or an
    /// HTTP/1.0 response without `Connection: keep-alive`.
    public var closesConnection: Bool {
        let tokens = tokens(of: "connection")
        if tokens.contains("close") { return true }
        return version == "HTTP/1.0" && !tokens.contains("keep-alive")
    }

    /// The head `bytes` (this response's, `headLength` long) as a client keeps its
    /// connection open with: HTTP/1.1 on the status line, no `Connection` header lines (the
    /// proxy processes the backend's close; the client's connection goes on).
    public static func keepingAlive(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var start = bytes.startIndex
        var first = true
        while start < bytes.endIndex {
            let lf = bytes[start...].firstIndex(of: 0x0a) ?? (bytes.endIndex - 1)
            let line = bytes[start...lf]
            if first {
                out.append(contentsOf: Array("HTTP/1.1".utf8))
                out.append(contentsOf: line.dropFirst(8))
                first = false
            } else {
                let name = line.prefix { $0 != 0x3a }
                if !(name.count == 10 && String(decoding: name, as: UTF8.self).lowercased() == "connection") {
                    out.append(contentsOf: line)
                }
            }
            start = lf + 1
        }
        return out
    }
}
