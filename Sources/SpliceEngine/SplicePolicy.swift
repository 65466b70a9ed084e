import SpliceWire

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

/// Which new flows go through the proxy (resilient mode). A flow is claimed when its
/// destination port is one of `ports` (empty: any), its server is in one of `servers` (empty:
/// any) and its client in one of `clients` (empty: any). Everything else stays in bypass.
public struct SplicePolicy: Sendable, Equatable {
    public var ports: Set<UInt16>
    public var servers: [IPPrefix]
    public var clients: [IPPrefix]
    /// When false, no flow is claimed (the daemon runs in bypass only).
    public var enabled: Bool

    public init(ports: Set<UInt16> = [], servers: [IPPrefix] = [], clients: [IPPrefix] = [], enabled: Bool = false) {
        self.ports = ports
        self.servers = servers
        self.clients = clients
        self.enabled = enabled
    }

    public static let bypassOnly = SplicePolicy()

    @inlinable
    public func claims(client: IPAddress, server: IPAddress, serverPort: UInt16) -> Bool {
        guard enabled else { return false }
        if !ports.isEmpty && !ports.contains(serverPort) { return false }
        if !servers.isEmpty && !servers.contains(where: { $0.contains(server) }) { return false }
        if !clients.isEmpty && !clients.contains(where: { $0.contains(client) }) { return false }
        return true
    }
}

/// The marks the engine and the rules agree on (Scripts/install-rules.sh takes the same).
public struct SpliceMarks: Sendable, Equatable {
    /// Packets the engine injects toward the wire: never queued.
    public var inject: UInt32 = 0x5a5a
    /// Packets the engine hands to the proxy (set with NF_REPEAT; the rules TPROXY them).
    public var toProxy: UInt32 = 0x5a5b
    /// Packets for local (transparent) sockets: routed through `lo` by an `ip rule`; also what
    /// TPROXY sets. Never queued.
    public var local: UInt32 = 0x5a5c
    public init() {}
}
