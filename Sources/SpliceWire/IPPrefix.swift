/// An address prefix (CIDR). IPv4 prefixes are kept in the IPv4-mapped space, so one type
/// matches both families.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    /// Prefix length in the 128-bit space (an IPv4 /24 is 96 + 24).
    public var length: Int

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let a = IPAddress(parts[0]) else { return nil }
        let maxLength = a.isIPv4 ? 32 : 128
        var l = maxLength
        if parts.count == 2 {
            guard let n = Int(parts[1]), n >= 0, n <= maxLength else { return nil }
            l = n
        }
        length = a.isIPv4 ? 96 + l : l
        address = IPPrefix.masked(a, length)
    }

    @usableFromInline static func masked(_ a: IPAddress, _ length: Int) -> IPAddress {
        let hiBits = min(64, length), loBits = max(0, length - 64)
        let hiMask: UInt64 = hiBits == 0 ? 0 : ~UInt64(0) << UInt64(64 - hiBits)
        let loMask: UInt64 = loBits == 0 ? 0 : ~UInt64(0) << UInt64(64 - loBits)
        return IPAddress(high: a.high & hiMask, low: a.low & loMask)
    }

    @inlinable public func contains(_ a: IPAddress) -> Bool {
        IPPrefix.masked(a, length) == address
    }

    public var description: String {
        address.isIPv4 ? "\(address)/\(length - 96)" : "\(address)/\(length)"
    }
}
