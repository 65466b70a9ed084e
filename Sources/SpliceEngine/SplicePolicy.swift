import SpliceWire

/// Which new flows go through the proxy (resilient mode). A flow is claimed when its
/// destination port is one of `ports` (empty: any), its server is in one of `servers` (empty:
/// any) and its client in one of `clients` (empty: any). Everything else stays in bypass.
public struct SplicePolicy: Sendable, Equatable {
    public var ports: PortSet
    public var servers: [IPPrefix]
    public var clients: [IPPrefix]
    /// When false, no flow is claimed (the daemon runs in bypass only).
    public var enabled: Bool

    public init(ports: PortSet = [], servers: [IPPrefix] = [], clients: [IPPrefix] = [], enabled: Bool = false) {
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

/// Why a policy (from the command line or the control socket) was refused.
public struct SplicePolicyError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The one validation of a policy, used by `spliced --proxy-ports/--proxy-servers/--proxy-clients`,
/// by `splicectl policy` before it sends anything, and by the daemon for a `set-policy` request.
extension SplicePolicy {
    /// A comma-separated list of server ports and port ranges ("80,443,8000:8999"; blanks
    /// around an element are allowed; every port is "1:65535"). Refused: an empty list, an empty
    /// element ("80,,443", "80,"), anything not a decimal number or a range A:B with A below B,
    /// 0, and numbers above 65535. Overlaps are kept (the policy holds a set).
    public static func parsePorts(_ text: String) throws(SplicePolicyError) -> [PortRange] {
        let elements = text.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingWhitespace() }
        if elements.allSatisfy(\.isEmpty) {
            throw SplicePolicyError("an empty list of ports: give at least one port (1-65535) or range (A:B)")
        }
        var ports: [PortRange] = []
        for (i, e) in elements.enumerated() {
            guard !e.isEmpty else {
                throw SplicePolicyError("an empty element (number \(i + 1)) in the list of ports '\(text)'")
            }
            switch PortRange.parse(e) {
            case .success(let r): ports.append(r)
            case .failure(let error): throw SplicePolicyError(error.description)
            }
        }
        return ports
    }

    /// A comma-separated list of address prefixes ("10.0.0.0/8,2001:db8::/32"); an empty
    /// string is the empty list (any address). Refused: an empty element and anything that is
    /// not an address or prefix (a length past 32 for IPv4, 128 for IPv6 included). `what`
    /// names the list in the message ("servers", "clients").
    public static func parsePrefixes(_ text: String, what: String) throws(SplicePolicyError) -> [IPPrefix] {
        let elements = text.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingWhitespace() }
        if elements.allSatisfy(\.isEmpty) && !text.contains(",") { return [] }
        return try prefixes(elements, what: what)
    }

    private static func prefixes(_ elements: [Substring], what: String) throws(SplicePolicyError) -> [IPPrefix] {
        var out: [IPPrefix] = []
        for (i, e) in elements.enumerated() {
            guard !e.isEmpty else {
                throw SplicePolicyError("an empty element (number \(i + 1)) in the list of \(what)")
            }
            guard let p = IPPrefix(e) else {
                throw SplicePolicyError("not an address prefix: '\(e)' (\(what); e.g. 10.0.0.0/8 or 2001:db8::/32)")
            }
            out.append(p)
        }
        return out
    }

    /// A policy as a control request or the command line gives it, validated: no port 0 (a
    /// port above 65535 cannot be a UInt16: the JSON decoder refuses it), an enabled policy
    /// names at least one port (an empty list would claim every port), and every server and
    /// client is an address prefix.
    public init(validating enabled: Bool, ports: [PortRange], servers: [String], clients: [String]) throws(SplicePolicyError) {
        if ports.contains(where: { $0.first == 0 }) { throw SplicePolicyError("port 0 cannot be claimed (ports are 1-65535)") }
        if enabled && ports.isEmpty {
            throw SplicePolicyError("an enabled policy needs at least one port (an empty list of ports would claim every port)")
        }
        let servers = try SplicePolicy.prefixes(servers.map { Substring($0).trimmingWhitespace() }, what: "servers")
        let clients = try SplicePolicy.prefixes(clients.map { Substring($0).trimmingWhitespace() }, what: "clients")
        self.init(ports: PortSet(ports), servers: servers, clients: clients, enabled: enabled)
    }
}

extension Substring {
    fileprivate func trimmingWhitespace() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return s
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
    /// A spliced flow's packets (set with NF_REPEAT; the rules save it as the flow's conntrack
    /// mark, and the flow's data and ACKs skip the queue from then on).
    public var spliced: UInt32 = 0x5a5d
    /// Packets of the balancer's own sockets (SO_MARK): queued from OUTPUT so that the engine
    /// sees both connections it may join (Splice/Join.swift).
    public var balancer: UInt32 = 0x5a5e
    public init() {}
    /// A mark as the rules and the options write it (`0x5a5a`).
    public static func hex(_ mark: UInt32) -> String { "0x" + String(mark, radix: 16) }
}
