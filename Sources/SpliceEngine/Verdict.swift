import SpliceWire

/// The engine's decision for one packet, as the queue reader returns it to the kernel.
public struct Verdict: Sendable, Equatable, CustomStringConvertible {
    public enum Action: UInt8, Sendable {
        /// `NF_ACCEPT`: the packet goes on.
        case accept
        /// `NF_DROP`.
        case drop
        /// `NF_REPEAT`: the packet runs the hook again (with `mark` set, so a rule before the
        /// queue rule hands it to the proxy through TPROXY).
        case repeatHook
    }

    public var action: Action
    public var inScratch: Bool
    // Stored compactly (16 bytes): a verdict is returned for every packet, and a larger one
    // cost the bypass path a third more time in the engine benchmark (66 -> 90 ns).
    @usableFromInline var length: UInt32
    @usableFromInline var markValue: UInt32
    @usableFromInline var hasMark: Bool
    /// 0: no checksum to fill (a TCP segment never starts at offset 0).
    @usableFromInline var checksumSegmentOffset: UInt16
    @usableFromInline var checksumPseudoHeader: UInt16

    /// nil: the bytes are unchanged. Otherwise the packet's new length; the new bytes are in the
    /// packet buffer itself, or in the scratch buffer when `inScratch`.
    @inlinable public var rewrittenLength: Int? { length == 0 ? nil : Int(length) }
    /// A new packet mark, if any.
    @inlinable public var mark: UInt32? { hasMark ? markValue : nil }
    /// The rewritten packet still needs a complete TCP checksum (its field held only the
    /// pseudo-header sum). Left to `finish`, which the queue reader calls outside the engine's
    /// lock, so that the sum over a 64 KiB packet does not hold the other queues up; the engine
    /// says where the segment starts (it runs to the end of the packet) and what its
    /// pseudo-header sums to, so that `finish` does not parse the packet again.
    @inlinable public var pendingChecksum: PendingChecksum? {
        checksumSegmentOffset == 0 ? nil : PendingChecksum(segmentOffset: checksumSegmentOffset, pseudoHeader: checksumPseudoHeader)
    }

    /// Where the TCP segment of a rewritten packet starts, and its pseudo-header sum (folded:
    /// one's complement sums add the same folded or not).
    public struct PendingChecksum: Sendable, Equatable {
        public var segmentOffset: UInt16
        public var pseudoHeader: UInt16
        @inlinable public init(segmentOffset: UInt16, pseudoHeader: UInt16) {
            self.segmentOffset = segmentOffset
            self.pseudoHeader = pseudoHeader
        }
        @inlinable public init(_ p: TCPPacket) {
            segmentOffset = UInt16(truncatingIfNeeded: UnsafeRawPointer(p.tcp.bytes.baseAddress!) - UnsafeRawPointer(p.bytes.baseAddress!))
            pseudoHeader = p.pseudoHeaderSum.folded
        }
    }

    @inlinable
    public init(action: Action, rewrittenLength: Int? = nil, inScratch: Bool = false, mark: UInt32? = nil,
                pendingChecksum: PendingChecksum? = nil) {
        self.action = action
        self.inScratch = inScratch
        length = UInt32(truncatingIfNeeded: rewrittenLength ?? 0)
        markValue = mark ?? 0
        hasMark = mark != nil
        checksumSegmentOffset = pendingChecksum?.segmentOffset ?? 0
        checksumPseudoHeader = pendingChecksum?.pseudoHeader ?? 0
    }

    /// Completes the rewritten packet (the full checksum, if asked for); returns its bytes, or
    /// nil when the packet is unchanged.
    @inlinable
    public func finish(packet: UnsafeMutableRawBufferPointer, scratch: UnsafeMutableRawBufferPointer) -> UnsafeMutableRawBufferPointer? {
        guard let length = rewrittenLength else { return nil }
        let source = inScratch ? scratch : packet
        let bytes = UnsafeMutableRawBufferPointer(rebasing: source[0..<min(length, source.count)])
        if checksumSegmentOffset != 0, Int(checksumSegmentOffset) < bytes.count,
           let tcp = TCPHeader(UnsafeMutableRawBufferPointer(rebasing: bytes[Int(checksumSegmentOffset)...])) {
            tcp.fillChecksum(pseudoHeader: Checksum.Accumulator(UInt64(checksumPseudoHeader)))
        }
        return bytes
    }

    public static let accept = Verdict(action: .accept)
    public static let drop = Verdict(action: .drop)
    /// Accept with the bytes rewritten in place.
    @inlinable public static func acceptModified(length: Int) -> Verdict {
        Verdict(action: .accept, rewrittenLength: length)
    }
    /// Accept a packet rewritten in place on its way out: a small one whose field held only
    /// the pseudo-header sum needs a full checksum; a large (GSO) one leaving through an
    /// interface is segmented and checksummed again by the kernel whatever its field holds
    /// (KERNEL-NOTES.md): no full sum over 64 KiB.
    @inlinable public static func acceptModified(_ p: TCPPacket, info: PacketInfo) -> Verdict {
        Verdict(action: .accept, rewrittenLength: p.bytes.count,
                pendingChecksum: info.checksumPartial && !info.gso ? PendingChecksum(p) : nil)
    }
    /// Accept a packet rewritten in place on its way to a local socket, which checks the sum: a
    /// field that held only the pseudo-header sum gets the full checksum, GSO or not.
    @inlinable public static func acceptModifiedLocal(_ p: TCPPacket, info: PacketInfo) -> Verdict {
        Verdict(action: .accept, rewrittenLength: p.bytes.count,
                pendingChecksum: info.checksumPartial ? PendingChecksum(p) : nil)
    }
    /// Accept a packet rebuilt in the scratch buffer.
    @inlinable public static func acceptScratch(length: Int) -> Verdict {
        Verdict(action: .accept, rewrittenLength: length, inScratch: true)
    }
    /// Hand the (rewritten) packet to the proxy: repeat the hook with the proxy mark.
    @inlinable public static func toProxy(length: Int?, inScratch: Bool = false, mark: UInt32) -> Verdict {
        Verdict(action: .repeatHook, rewrittenLength: length, inScratch: inScratch, mark: mark)
    }
    /// Hand a packet rewritten in place to the proxy; `fillChecksum`: its field held only the
    /// pseudo-header sum (it goes to a local socket, which checks the sum).
    @inlinable public static func toProxy(_ p: TCPPacket, mark: UInt32, fillChecksum: Bool) -> Verdict {
        Verdict(action: .repeatHook, rewrittenLength: p.bytes.count, mark: mark,
                pendingChecksum: fillChecksum ? PendingChecksum(p) : nil)
    }

    /// True when the kernel gets the packet back unchanged and unmarked: batchable.
    @inlinable public var isPlainAccept: Bool { action == .accept && rewrittenLength == nil && mark == nil }

    public var description: String {
        var s = "\(action)"
        if let l = rewrittenLength { s += " rewritten(\(l)\(inScratch ? ", scratch" : ""))" }
        if let m = mark { s += " mark=0x\(String(m, radix: 16))" }
        return s
    }
}

/// Where the engine sends packets it builds (the daemon: raw sockets; tests: a recorder).
public protocol PacketInjector: AnyObject {
    /// Sends a complete IP packet. `toLocalSocket`: the packet is for a socket of this host
    /// bound to a foreign address (the proxy's), so it is routed through `lo`.
    /// The caller says where it goes (the injector does not parse what the engine just built).
    func inject(_ packet: UnsafeRawBufferPointer, to destination: IPAddress, toLocalSocket: Bool)
    /// Sends a packet of a flow being spliced toward the wire with the splice mark: on its way
    /// out the rules save that mark as the flow's conntrack mark, so that from this packet on
    /// the flow's data skips the queue (no later packet can overtake an earlier one queued).
    func injectSplicing(_ packet: UnsafeRawBufferPointer, to destination: IPAddress)
    /// Sends an end's packet to the proxy with the proxy mark, untracked: routed through `lo`,
    /// it meets the rules' TPROXY (the listener for a SYN, the established socket otherwise)
    /// without the conntrack entry of a flow the router source-NATs (Resilient/SourceNAT.swift).
    func injectToProxy(_ packet: UnsafeRawBufferPointer, to destination: IPAddress)
}
