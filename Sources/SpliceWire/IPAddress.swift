/// An IPv4 or IPv6 address in 16 bytes. IPv4 addresses are kept IPv4-mapped
/// (`::ffff:a.b.c.d`), so that one flow key type serves both families.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// The first and last 8 bytes of the address, read big-endian.
    public var high: UInt64
    public var low: UInt64

    @inlinable public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// An IPv4 address from its big-endian value.
    @inlinable public init(ipv4 value: UInt32) {
        self.high = 0
        self.low = 0x0000_ffff_0000_0000 | UInt64(value)
    }

    @inlinable public var isIPv4: Bool { high == 0 && (low >> 32) == 0x0000_ffff }

    /// The IPv4 address as a big-endian value (meaningful only when `isIPv4`).
    @inlinable public var ipv4Value: UInt32 { UInt32(truncatingIfNeeded: low) }

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text (with `::` and an embedded IPv4 tail).
    public init?(_ text: some StringProtocol) {
        let s = String(text)
        if s.contains(":") {
            guard let v6 = IPAddress.parseIPv6(s) else { return nil }
            self = v6
        } else {
            guard let v4 = IPAddress.parseIPv4(s) else { return nil }
            self.init(ipv4: v4)
        }
    }

    static func parseIPv4(_ s: String) -> UInt32? {
        // Four parts of decimal digits only, no sign, and no leading zero (as inet_pton: "010"
        // would be octal to inet_aton, so it is refused rather than read either way). Read
        // from the bytes: the control path parses addresses for every join message.
        var v: UInt32 = 0, part: UInt32 = 0, digits = 0, parts = 0, leadingZero = false
        for b in s.utf8 {
            if b == UInt8(ascii: ".") {
                guard digits > 0, parts < 3 else { return nil }
                v = v << 8 | part
                parts += 1
                part = 0
                digits = 0
                leadingZero = false
                continue
            }
            guard b >= 0x30, b <= 0x39, !leadingZero else { return nil }
            if digits == 0 && b == 0x30 { leadingZero = true }
            part = part * 10 + UInt32(b - 0x30)
            digits += 1
            guard part <= 255 else { return nil }
        }
        guard digits > 0, parts == 3 else { return nil }
        return v << 8 | part
    }

    static func parseIPv6(_ s: String) -> IPAddress? {
        var groups: [UInt16] = []
        var tailGroups: [UInt16] = []
        var seenDoubleColon = false
        var halves: [String] = [s]
        if let r = s.firstRange(of: "::") {
            halves = [String(s[..<r.lowerBound]), String(s[r.upperBound...])]
            guard halves[1].firstRange(of: "::") == nil else { return nil }
        }
        func parseGroups(_ part: String, allowV4Tail: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            let fields = part.split(separator: ":", omittingEmptySubsequences: false)
            for (i, f) in fields.enumerated() {
                if f.contains(".") {
                    guard allowV4Tail, i == fields.count - 1, let v4 = parseIPv4(String(f)) else { return nil }
                    out.append(UInt16(v4 >> 16)); out.append(UInt16(v4 & 0xffff))
                } else {
                    // Hex digits only: UInt16(_:radix:) alone would take a sign ("+1").
                    guard !f.isEmpty, f.count <= 4, f.allSatisfy({ $0.isASCII && $0.isHexDigit }),
                          let g = UInt16(f, radix: 16) else { return nil }
                    out.append(g)
                }
            }
            return out
        }
        if halves.count == 2 {
            seenDoubleColon = true
            guard let a = parseGroups(halves[0], allowV4Tail: false),
                  let b = parseGroups(halves[1], allowV4Tail: true) else { return nil }
            groups = a; tailGroups = b
            guard groups.count + tailGroups.count <= 7 else { return nil }
        } else {
            guard let a = parseGroups(halves[0], allowV4Tail: true), a.count == 8 else { return nil }
            groups = a
        }
        var all = groups
        if seenDoubleColon {
            all += Array(repeating: 0, count: 8 - groups.count - tailGroups.count) + tailGroups
        }
        guard all.count == 8 else { return nil }
        var hi: UInt64 = 0, lo: UInt64 = 0
        for i in 0..<4 { hi = hi << 16 | UInt64(all[i]) }
        for i in 4..<8 { lo = lo << 16 | UInt64(all[i]) }
        return IPAddress(high: hi, low: lo)
    }

    public var description: String {
        if isIPv4 {
            let v = ipv4Value
            return "\(v >> 24).\((v >> 16) & 0xff).\((v >> 8) & 0xff).\(v & 0xff)"
        }
        var g: [UInt16] = []
        for i in (0..<4).reversed() { g.append(UInt16(truncatingIfNeeded: high >> (UInt64(i) * 16))) }
        for i in (0..<4).reversed() { g.append(UInt16(truncatingIfNeeded: low >> (UInt64(i) * 16))) }
        // Longest run of zero groups (length >= 2) becomes "::" (RFC 5952).
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if g[i] == 0 {
                var j = i
                while j < 8 && g[j] == 0 { j += 1 }
                if j - i > bestLen && j - i >= 2 { bestStart = i; bestLen = j - i }
                i = j
            } else { i += 1 }
        }
        func hex(_ r: Range<Int>) -> String { r.map { String(g[$0], radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLen)..<8)
    }
}
