/// A TCP port or a range of them, `first...last`, as a policy names them: written "80" or
/// "8000:8999" (iptables' multiport form, which `install-rules.sh --ports` takes too). In JSON a
/// single port is a number and a range the string "A:B", so that a list of single ports reads
/// as it always did (`[80, 443]`).
public struct PortRange: Sendable, Hashable, Codable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var first: UInt16
    public var last: UInt16

    public init(_ first: UInt16, _ last: UInt16) {
        self.first = min(first, last)
        self.last = max(first, last)
    }
    public init(integerLiteral port: UInt16) { self.init(port, port) }

    public var description: String { first == last ? "\(first)" : "\(first):\(last)" }

    /// "80" or "8000:8999"; the error says what is wrong with the text. 0 is refused (no
    /// connection has it), and a range's first port must be below its last.
    public static func parse(_ text: Substring) -> Result<PortRange, PortRangeError> {
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count <= 2 else { return .failure(PortRangeError("not a port or a range A:B: '\(text)'")) }
        var ends: [UInt16] = []
        for p in parts {
            let digits = p.first == "-" ? p.dropFirst() : p
            guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else {
                return .failure(PortRangeError(parts.count == 1
                    ? "not a port number: '\(text)' (ports are 1-65535)"
                    : "not a port range: '\(text)' (A:B, both 1-65535)"))
            }
            // Int(_:) is nil past Int.max: out of range too.
            guard let n = Int(p), n >= 1, n <= 65535 else {
                return .failure(PortRangeError("port \(p) is out of range (ports are 1-65535)"))
            }
            ends.append(UInt16(n))
        }
        if ends.count == 2 && ends[0] >= ends[1] {
            return .failure(PortRangeError("port range '\(text)': the first port must be below the second"))
        }
        return .success(PortRange(ends[0], ends[ends.count - 1]))
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Double.self) {
            // A number past 65535 (or not whole) is refused by name, not as "data corrupted".
            guard n >= 0, n <= 65535, n == n.rounded(.towardZero) else {
                let shown = n == n.rounded(.towardZero) && abs(n) < 1e15 ? String(Int64(n)) : String(n)
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "port \(shown) is out of range (ports are 1-65535)")
            }
            self.init(UInt16(n), UInt16(n))
            return
        }
        let text = try c.decode(String.self)
        switch PortRange.parse(Substring(text)) {
        case .success(let r): self = r
        case .failure(let e): throw DecodingError.dataCorruptedError(in: c, debugDescription: e.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        if first == last { try c.encode(first) } else { try c.encode(description) }
    }
}

public struct PortRangeError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A set of TCP ports as a 65,536-bit map (8 KiB, allocated when the first port goes in):
/// membership is one bit test whatever ranges made it, for the check on every new flow.
public struct PortSet: Sendable, Equatable, ExpressibleByArrayLiteral {
    @usableFromInline var words: [UInt64] = []

    public init() {}
    public init(arrayLiteral ports: UInt16...) { self.init(ports.map { PortRange($0, $0) }) }
    public init<S: Sequence>(_ ranges: S) where S.Element == PortRange {
        for r in ranges { insert(r) }
    }

    public var isEmpty: Bool { words.isEmpty }

    @inlinable public func contains(_ port: UInt16) -> Bool {
        guard !words.isEmpty else { return false }
        return words[Int(port >> 6)] & (1 << UInt64(port & 63)) != 0
    }

    public mutating func insert(_ r: PortRange) {
        if words.isEmpty { words = [UInt64](repeating: 0, count: 1024) }
        for p in Int(r.first)...Int(r.last) { words[p >> 6] |= 1 << UInt64(p & 63) }
    }

    /// The ports as the fewest ranges, ascending.
    public var ranges: [PortRange] {
        guard !words.isEmpty else { return [] }
        var out: [PortRange] = []
        var start = -1
        for p in 0...65536 {
            let inSet = p < 65536 && contains(UInt16(p))
            if inSet && start < 0 { start = p }
            if !inSet && start >= 0 {
                out.append(PortRange(UInt16(start), UInt16(p - 1)))
                start = -1
            }
        }
        return out
    }
}
