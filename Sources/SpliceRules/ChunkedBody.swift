// The framing of a chunked HTTP/1.1 message body (RFC 9112, 7.1), followed as the bytes go by,
// so that a relay knows where a response without a Content-Length ends and can take the
// connection's next request after it (the balancer's keep-alive re-routing, Docs/balancer.md).
// Only the framing is read: a chunk's data is skipped by count, never held.

/// Where a chunked body stands: `consume` the bytes in order (or `skip` a chunk's data
/// unseen); `state` says what comes next, `.done` after the last chunk and the trailer section.
public struct ChunkedBody: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        /// A chunk-size line: hex digits, then optional extensions, then CRLF.
        case size
        /// This many bytes of chunk data, then CRLF.
        case data(UInt64)
        /// The CRLF after a chunk's data.
        case dataEnd
        /// The trailer section after the last chunk: field lines, then an empty line.
        case trailer
        /// The body is over: no byte after it belongs to it.
        case done
        /// Not a chunked body (a bad size, a missing CRLF, a line too long).
        case invalid
    }

    public private(set) var state = State.size
    /// Size line: the digits so far, whether past them (in extensions or whitespace), a CR.
    private var size: UInt64 = 0
    private var digits = 0
    private var pastDigits = false
    private var sawCR = false
    /// Bytes of the current size, extension or trailer line (bounded).
    private var lineLength = 0
    public static let maxLineLength = 8192

    public init() {}

    /// A body followed from inside a chunk's data: `left` bytes of it, then the CRLF after it
    /// (where a relay that read the size line hands the rest of the body on: the engine
    /// following a joined chunked response, Docs/balancer.md).
    public init(dataLeft left: UInt64) {
        state = left == 0 ? .dataEnd : .data(left)
    }

    /// Chunk data bytes that may pass unseen now (0 outside a chunk's data).
    public var dataLeft: UInt64 {
        if case .data(let n) = state { return n }
        return 0
    }

    /// `n` (at most `dataLeft`) bytes of chunk data passed without being looked at.
    public mutating func skip(_ n: UInt64) {
        guard case .data(let left) = state, n <= left else {
            state = .invalid
            return
        }
        state = left == n ? .dataEnd : .data(left - n)
    }

    /// Follows the framing through `bytes`; returns how many it took: all of them, or up to
    /// the body's end (`.done`: the rest is not the body's), or up to the byte that made it
    /// `.invalid`.
    public mutating func consume<C: Collection>(_ bytes: C) -> Int where C.Element == UInt8 {
        var taken = 0
        var i = bytes.startIndex
        while i != bytes.endIndex {
            switch state {
            case .done, .invalid:
                return taken
            case .data(let left):
                let n = min(UInt64(bytes.distance(from: i, to: bytes.endIndex)), left)
                i = bytes.index(i, offsetBy: Int(n))
                taken += Int(n)
                state = left == n ? .dataEnd : .data(left - n)
                continue
            case .size:
                sizeByte(bytes[i])
            case .dataEnd:
                dataEndByte(bytes[i])
            case .trailer:
                trailerByte(bytes[i])
            }
            i = bytes.index(after: i)
            taken += 1
            if state == .invalid { return taken }
        }
        return taken
    }

    private mutating func sizeByte(_ b: UInt8) {
        lineLength += 1
        guard lineLength <= Self.maxLineLength else { state = .invalid; return }
        if sawCR && b != 0x0a { state = .invalid; return }
        switch b {
        case 0x0a:
            guard digits > 0 else { state = .invalid; return }
            state = size == 0 ? .trailer : .data(size)
            resetLine()
        case 0x0d:
            sawCR = true
        case _ where pastDigits:
            // Whitespace and extensions (`;name=value`) up to the line's end: not read.
            break
        case 0x3b, 0x20, 0x09:
            guard digits > 0 else { state = .invalid; return }
            pastDigits = true
        default:
            guard let v = Self.hexValue(b), digits < 16 else { state = .invalid; return }
            size = size << 4 | UInt64(v)
            digits += 1
        }
    }

    private mutating func dataEndByte(_ b: UInt8) {
        switch b {
        case 0x0d where !sawCR:
            sawCR = true
        case 0x0a:
            state = .size
            resetLine()
        default:
            state = .invalid
        }
    }

    private mutating func trailerByte(_ b: UInt8) {
        switch b {
        case 0x0a:
            // An empty line ends the section; a field line is over.
            state = lineLength == 0 ? .done : .trailer
            resetLine()
        case 0x0d:
            sawCR = true
        default:
            if sawCR { state = .invalid; return }
            lineLength += 1
            if lineLength > Self.maxLineLength { state = .invalid }
        }
    }

    private mutating func resetLine() {
        size = 0
        digits = 0
        pastDigits = false
        sawCR = false
        lineLength = 0
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }
}
