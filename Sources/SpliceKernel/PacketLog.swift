#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue
import Synchronization

/// One bound NFLOG group (nfnetlink_log), read through libmnl: copies of packets the rules log
/// while the packets themselves go on in the kernel, unqueued. tcpsplice logs a spliced flow's
/// FINs this way (`install-rules.sh --fin-log-group`): the flow table follows the flow's end
/// without the FINs paying a trip through the queue (Docs/splicing.md).
///
/// Only the headers are copied (`copyBytes`), and the kernel gathers up to `batch` packets (or
/// `flushCentiseconds`' worth) into one receive. A copy the socket buffer cannot take is lost
/// (ENOBUFS: counted); the packet itself is never held up. Nothing on the read path allocates.
public final class PacketLog: @unchecked Sendable {
    public struct Options: Sendable {
        /// Bytes copied from each packet: the IP and TCP headers (IPv6 with extension headers
        /// and 60 bytes of TCP header fit).
        public var copyBytes: UInt32 = 256
        /// Packets the kernel gathers into one message batch, and the longest it waits.
        public var batch: UInt32 = 64
        public var flushCentiseconds: UInt32 = 5
        /// The kernel's buffer for one message (NFULA_CFG_NLBUFSIZ): it allocates that much
        /// for each message it starts, whatever the message then holds, so a log read one
        /// copy at a time (`batch` 1) takes a small one.
        public var messageBufferBytes: UInt32 = 0x10000
        public var receiveBufferBytes: Int = 8 << 20
        public var receivesPerDrain: Int = 16
        public init() {}
    }

    /// Counters of this reader; written by its thread only, read through `snapshot`.
    public struct Counters: Sendable {
        public var packets: UInt64 = 0
        /// Receives that failed with ENOBUFS: log copies lost (their packets went on).
        public var overruns: UInt64 = 0
    }

    public let group: UInt16
    public let options: Options
    private let netlink: NetfilterSocket
    private var socket: OpaquePointer { netlink.socket }
    private var fd: Int32 { netlink.fd }
    public var portID: UInt32 { netlink.portID }
    private let buffer: UnsafeMutableRawPointer
    private let bufferSize = 0x20000
    /// Where the handler may view a copied packet at its full length (zeroed once).
    private let room: UnsafeMutableRawBufferPointer
    private var counters = Counters()
    private let countersLock = Mutex(Counters())

    /// Binds log group `group`. Throws with a message naming the problem (not root, the group
    /// bound by another program).
    public init(group: UInt16, options: Options = Options()) throws {
        self.group = group
        self.options = options
        netlink = try NetfilterSocket.open(for: "NFLOG")
        buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 16)
        room = .allocate(byteCount: 0x10000 + 256, alignment: 16)
        room.initializeMemory(as: UInt8.self, repeating: 0)
        // Every stored property is set: a throw from here on runs deinit (which frees).
        try configure()
    }

    deinit {
        mnl_socket_close(socket)
        buffer.deallocate()
        room.deallocate()
    }

    /// The netlink socket, for poll(2).
    public var fileDescriptor: Int32 { fd }

    /// A snapshot of the counters (from any thread).
    public var snapshot: Counters { countersLock.withLock { $0 } }

    private func configure() throws {
        var size = Int32(clamping: options.receiveBufferBytes)
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        // Bind the group.
        var nlh = configMessage()
        var cmd = nfulnl_msg_config_cmd(command: UInt8(NFULNL_CFG_CMD_BIND.rawValue))
        mnl_attr_put(nlh, UInt16(NFULA_CFG_CMD.rawValue), MemoryLayout<nfulnl_msg_config_cmd>.size, &cmd)
        try sendExpectingAck(nlh, what: "binding NFLOG group \(group)")
        // Headers only, gathered in batches.
        nlh = configMessage()
        var mode = nfulnl_msg_config_mode(copy_range: options.copyBytes.bigEndian, copy_mode: UInt8(NFULNL_COPY_PACKET), _pad: 0)
        mnl_attr_put(nlh, UInt16(NFULA_CFG_MODE.rawValue), MemoryLayout<nfulnl_msg_config_mode>.size, &mode)
        mnl_attr_put_u32(nlh, UInt16(NFULA_CFG_QTHRESH.rawValue), options.batch.bigEndian)
        mnl_attr_put_u32(nlh, UInt16(NFULA_CFG_TIMEOUT.rawValue), options.flushCentiseconds.bigEndian)
        mnl_attr_put_u32(nlh, UInt16(NFULA_CFG_NLBUFSIZ.rawValue), options.messageBufferBytes.bigEndian)
        try sendExpectingAck(nlh, what: "configuring NFLOG group \(group)")
    }

    private func configMessage() -> UnsafeMutablePointer<nlmsghdr> {
        let nlh = mnl_nlmsg_put_header(buffer)!
        nlh.pointee.nlmsg_type = UInt16(NFNL_SUBSYS_ULOG << 8) | UInt16(NFULNL_MSG_CONFIG.rawValue)
        nlh.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST)
        let g = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<nfgenmsg>.size)!.assumingMemoryBound(to: nfgenmsg.self)
        g.pointee.nfgen_family = UInt8(AF_UNSPEC)
        g.pointee.version = UInt8(NFNETLINK_V0)
        g.pointee.res_id = group.bigEndian
        return nlh
    }

    private func sendExpectingAck(_ nlh: UnsafeMutablePointer<nlmsghdr>, what: String) throws {
        let seq = UInt32(truncatingIfNeeded: time(nil)) &+ UInt32(group)
        try netlink.sendExpectingAck(nlh, sequence: seq, buffer: buffer, size: bufferSize, what: what) { code in
            code == EBUSY || code == EPERM ? " (another program has bound this group, or run as root)" : ""
        }
    }

    /// Hands each logged packet's copied bytes (from its IP header on: the headers, perhaps
    /// not the whole packet) to `handle`, with a zeroed buffer of 64 KiB + 256 bytes the handler
    /// may use (to view the copy at the packet's length), without blocking; at most
    /// `receivesPerDrain` receives.
    public func drain(handle: (UnsafeRawBufferPointer, UnsafeMutableRawBufferPointer) -> Void) {
        for _ in 0..<options.receivesPerDrain {
            let n = recv(fd, buffer, bufferSize, Int32(MSG_DONTWAIT))
            if n < 0 {
                if errno == ENOBUFS { counters.overruns &+= 1; continue }
                break
            }
            var len = Int32(n)
            var msg: UnsafeMutablePointer<nlmsghdr>? = buffer.assumingMemoryBound(to: nlmsghdr.self)
            while let m = msg, mnl_nlmsg_ok(m, len) {
                if m.pointee.nlmsg_type == UInt16(NFNL_SUBSYS_ULOG << 8) | UInt16(NFULNL_MSG_PACKET.rawValue),
                   let payload = payloadAttribute(m) {
                    counters.packets &+= 1
                    handle(payload, room)
                }
                msg = mnl_nlmsg_next(m, &len)
            }
        }
        let c = counters
        countersLock.withLock { $0 = c }
    }

    /// The NFULA_PAYLOAD attribute of a packet message.
    private func payloadAttribute(_ m: UnsafeMutablePointer<nlmsghdr>) -> UnsafeRawBufferPointer? {
        let offset = MemoryLayout<nfgenmsg>.size
        guard var a = mnl_nlmsg_get_payload_offset(m, offset)?.assumingMemoryBound(to: nlattr.self) else { return nil }
        let end = UnsafeRawPointer(mnl_nlmsg_get_payload_tail(m)!)
        var left = Int32(end - UnsafeRawPointer(a))
        while mnl_attr_ok(a, left) {
            if mnl_attr_get_type(a) == UInt16(NFULA_PAYLOAD.rawValue) {
                return UnsafeRawBufferPointer(start: mnl_attr_get_payload(a), count: Int(mnl_attr_get_payload_len(a)))
            }
            let next = mnl_attr_next(a)!
            left -= Int32(UnsafeRawPointer(next) - UnsafeRawPointer(a))
            a = next
        }
        return nil
    }

    /// Unbinds the group.
    public func unbind() {
        let nlh = configMessage()
        var cmd = nfulnl_msg_config_cmd(command: UInt8(NFULNL_CFG_CMD_UNBIND.rawValue))
        mnl_attr_put(nlh, UInt16(NFULA_CFG_CMD.rawValue), MemoryLayout<nfulnl_msg_config_cmd>.size, &cmd)
        _ = mnl_socket_sendto(socket, nlh, Int(nlh.pointee.nlmsg_len))
    }
}
