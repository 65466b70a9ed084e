#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue
import Synchronization
import SpliceEngine

/// One bound NFQUEUE, read through libmnl and libnetfilter_queue's message helpers.
///
/// The reader sets the GSO flag (whole 64 KiB packets, no segmentation before the queue) and
/// fail-open (the kernel accepts instead of dropping when the queue is full), a large receive
/// buffer, and survives ENOBUFS. Verdicts: a packet accepted unchanged and unmarked is added
/// to a batch (`NFQNL_MSG_VERDICT_BATCH` accepts every pending id up to the last one); any
/// other verdict but a drop first closes the batch, so that the kernel re-injects a flow's
/// packets in the order they came (a drop re-injects nothing, and must reach the kernel before
/// a batch that would cover its id). The verdict messages of one `drain` are written one after
/// the other into the send buffer and go to the kernel in one `sendto`, which handles them in
/// order. Nothing on the per-packet path allocates.
public final class NetfilterQueue: @unchecked Sendable {
    public struct Options: Sendable {
        /// Packets the kernel may hold for us before it drops (or, with `failOpen`, accepts).
        public var maxLength: UInt32 = 65536
        /// Socket receive buffer; ~16 MiB is needed for a stream of 64 KiB packets
        /// (KERNEL-NOTES.md), and more for bursts of thousands of connections: a packet the
        /// buffer cannot take is dropped (or accepted unseen with fail-open) by the kernel.
        public var receiveBufferBytes: Int = 128 << 20
        /// Accepts gathered before a batch verdict is sent.
        public var batchLimit: Int = 32
        /// Receives (each may carry many packets) one `drain` call makes at most before it
        /// returns, so that one busy queue cannot keep the reader from the others.
        public var receivesPerDrain: Int = 32
        /// Whether the reader may give this queue more of its turn while it holds more packets
        /// than the other such queues (`DrainShares`): the kernel keeps at most 65,536 per queue
        /// whatever `maxLength` says (Docs/packet-path.md), so the fullest is drained first.
        /// Off for the handshake queue, whose share stays small by design.
        public var sharesByBacklog = true
        /// How long a blocking receive waits (binding and configuring the queue; the packet
        /// loop polls and never blocks in a receive).
        public var receiveTimeoutMilliseconds: Int = 100
        public var gso = true
        public var failOpen = true
        public init() {}
    }

    /// Counters of this reader; written by its thread only, read racily for status.
    public struct Counters: Sendable {
        public var packets: UInt64 = 0
        public var verdictMessages: UInt64 = 0
        /// `sendto` calls that carried them (one per `drain`, or more when the buffer filled).
        public var verdictSends: UInt64 = 0
        /// `sendto` calls of verdicts the kernel refused (their packets left queued).
        public var verdictSendFailures: UInt64 = 0
        /// Of `verdictSends`, those made in the middle of a drain, before a packet the engine
        /// made (`sendPendingVerdicts`).
        public var sendsBeforeInjection: UInt64 = 0
        public var batchedAccepts: UInt64 = 0
        public var receiveOverruns: UInt64 = 0
        public var truncated: UInt64 = 0
        /// How long packets waited in the queue, from the kernel's timestamp of each
        /// (`NFQA_TIMESTAMP`: when it arrived at this host) to its receive here
        /// (`QueueDelay`); packets with no timestamp are not counted.
        public var delay = QueueDelay()
    }

    public let number: UInt16
    public let options: Options
    private let netlink: NetfilterSocket
    private var socket: OpaquePointer { netlink.socket }
    public var portID: UInt32 { netlink.portID }
    private var fd: Int32 { netlink.fd }
    private let receiveBuffer: UnsafeMutableRawPointer
    private let receiveBufferSize: Int
    private let sendBuffer: UnsafeMutableRawPointer
    private let sendBufferSize: Int
    private let attributes: UnsafeMutablePointer<UnsafeMutablePointer<nlattr>?>
    /// Where the engine rebuilds packets whose size changes (this queue's own).
    private let scratch: UnsafeMutableRawBufferPointer
    private let attributeCount = Int(TS_NFQA_MAX) + 1
    private var pendingID: UInt32 = 0
    private var pendingCount = 0
    /// Bytes of verdict messages written into `sendBuffer` and not yet sent.
    private var sendUsed = 0
    /// The most one `sendto` carries: netlink refuses a message longer than the socket's send
    /// buffer (EMSGSIZE; `net.core.wmem_default` is 212,992 here), and a refused round would
    /// leave its packets queued for good. One rewritten 64 KiB packet always fits.
    static let sendLimit = 0x18000
    private var counters = Counters()
    /// A copy of the counters for the control thread, written by the reader after each drain.
    private let countersLock = Mutex(Counters())
    /// The id of the last packet the handler was given (the kernel numbers a queue's packets
    /// 1, 2, 3, ... in the order it queues them; 0 before the first), and its copy published
    /// after each drain for other threads: every packet with an id up to it has been seen.
    private var lastHandledID: UInt32 = 0
    /// When the current receive returned (`CLOCK_REALTIME`, microseconds): the packets it
    /// brought were in the queue until then.
    private var receivedAt: UInt64 = 0
    private let seenThrough = Atomic<UInt32>(0)
    /// The drains begun and ended: odd while one is under way (packets received, their verdicts
    /// not all sent), even between them.
    private let drains = Atomic<UInt32>(0)

    /// Binds queue `number`. Throws with a message naming the problem (not root, queue taken).
    public init(number: UInt16, options: Options = Options()) throws {
        self.number = number
        self.options = options
        netlink = try NetfilterSocket.open(for: "NFQUEUE")
        receiveBufferSize = 0x10000 + 0x4000
        receiveBuffer = UnsafeMutableRawPointer.allocate(byteCount: receiveBufferSize, alignment: 16)
        // Room for a round of verdicts (up to `sendLimit`), rewritten packets of up to 64 KiB
        // among them.
        sendBufferSize = NetfilterQueue.sendLimit + 0x1000
        sendBuffer = UnsafeMutableRawPointer.allocate(byteCount: sendBufferSize, alignment: 16)
        attributes = .allocate(capacity: Int(TS_NFQA_MAX) + 1)
        scratch = .allocate(byteCount: 0x10000 + 256, alignment: 16)
        attributes.initialize(repeating: nil, count: Int(TS_NFQA_MAX) + 1)

        // Every stored property is set: from here on a throw runs deinit, which closes the
        // socket and frees the buffers. Freeing them here too was a double free (an abort
        // instead of the error, e.g. when another program had bound the queue).
        try configure()
    }

    deinit {
        mnl_socket_close(socket)
        receiveBuffer.deallocate()
        sendBuffer.deallocate()
        attributes.deallocate()
        scratch.deallocate()
    }

    private func configure() throws {
        var size = Int32(clamping: options.receiveBufferBytes)
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var tv = timeval(tv_sec: options.receiveTimeoutMilliseconds / 1000,
                         tv_usec: (options.receiveTimeoutMilliseconds % 1000) * 1000)
        guard setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            throw SystemError("setting the receive timeout")
        }

        // Bind the queue.
        var nlh = nfq_nlmsg_put(sendBuffer.assumingMemoryBound(to: CChar.self), Int32(NFQNL_MSG_CONFIG.rawValue), UInt32(number))!
        nfq_nlmsg_cfg_put_cmd(nlh, UInt16(AF_UNSPEC), UInt8(NFQNL_CFG_CMD_BIND.rawValue))
        try sendExpectingAck(nlh, what: "binding NFQUEUE \(number)")

        // Copy whole packets, flags, queue length.
        nlh = nfq_nlmsg_put(sendBuffer.assumingMemoryBound(to: CChar.self), Int32(NFQNL_MSG_CONFIG.rawValue), UInt32(number))!
        nfq_nlmsg_cfg_put_params(nlh, UInt8(NFQNL_COPY_PACKET.rawValue), 0xffff)
        nfq_nlmsg_cfg_put_qmaxlen(nlh, options.maxLength)
        var flags: UInt32 = 0
        if options.gso { flags |= UInt32(NFQA_CFG_F_GSO) }
        if options.failOpen { flags |= UInt32(NFQA_CFG_F_FAIL_OPEN) }
        let mask = UInt32(NFQA_CFG_F_GSO) | UInt32(NFQA_CFG_F_FAIL_OPEN)
        mnl_attr_put_u32(nlh, UInt16(NFQA_CFG_FLAGS.rawValue), flags.bigEndian)
        mnl_attr_put_u32(nlh, UInt16(NFQA_CFG_MASK.rawValue), mask.bigEndian)
        try sendExpectingAck(nlh, what: "configuring NFQUEUE \(number)")
    }

    /// Sends a config message with NLM_F_ACK and waits for the kernel's answer.
    private func sendExpectingAck(_ nlh: UnsafeMutablePointer<nlmsghdr>, what: String) throws {
        let seq = UInt32(truncatingIfNeeded: time(nil)) &+ UInt32(number)
        try netlink.sendExpectingAck(nlh, sequence: seq, buffer: receiveBuffer, size: receiveBufferSize, what: what,
                                     onPacket: { [self] m in acceptArrived(m) }) { code in
            if code == EBUSY { return " (another program has bound this queue)" }
            if code == EPERM { return permissionHint(queue: number) }
            return ""
        }
    }

    /// Why the kernel answered EPERM to a config message of queue `queue`: the queue is bound
    /// by another netlink socket (the kernel says EPERM, not EBUSY, for that), or we lack
    /// CAP_NET_ADMIN.
    private func permissionHint(queue: UInt16) -> String {
        if let owner = KernelQueueStats.read()?.first(where: { $0.queue == queue }), owner.portID != portID {
            return " (another program has bound this queue: netlink port id \(owner.portID))"
        }
        return " (run as root, or with CAP_NET_ADMIN)"
    }

    /// A snapshot of this reader's counters (from any thread).
    public var snapshot: Counters { countersLock.withLock { $0 } }

    /// The netlink socket, for poll(2) when one thread serves several queues.
    public var fileDescriptor: Int32 { fd }

    /// Handles what is waiting, without blocking: at most `batchLimit` receives, then the
    /// batch of accepts is flushed. For a loop that polls several queues' descriptors.
    private func publishCounters() {
        let c = counters
        countersLock.withLock { $0 = c }
        seenThrough.store(lastHandledID, ordering: .releasing)
    }

    /// Has the reader handled the packet the kernel numbered `id`, and every one before it?
    /// (Ids wrap at 2^32: compared as sequence numbers are.) A packet the kernel dropped or let
    /// by without queueing it counts as handled once a later one is. Any thread.
    public func hasSeen(through id: UInt32) -> Bool {
        Int32(bitPattern: seenThrough.load(ordering: .acquiring) &- id) >= 0
    }

    /// The reader's drains so far, counted at their start and at their end (after their
    /// verdicts went out): odd while one is under way. A packet the engine handled before some
    /// moment has had its verdict sent once this differs from an odd value read after that
    /// moment, or when it is even. Any thread.
    public var drainCount: UInt32 { drains.load(ordering: .acquiring) }

    /// Is a packet waiting in the socket, not received yet? Any thread (a peek).
    public func holdsUnreceived() -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT)) > 0
    }

    /// Handles up to `limit` receives of what is waiting (the reader's share for this queue:
    /// `receivesPerDrain`, or what `DrainShares` gives it); returns how many it made (as many as
    /// allowed: more may be waiting).
    public func drain(receives limit: Int,
                      handle: (UnsafeMutableRawBufferPointer, UnsafeMutableRawBufferPointer, PacketInfo) -> Verdict) throws -> Int {
        drains.wrappingAdd(1, ordering: .acquiringAndReleasing)
        defer { drains.wrappingAdd(1, ordering: .releasing) }
        var drained = 0
        var overruns = 0
        while drained < limit {
            let n = recv(fd, receiveBuffer, receiveBufferSize, Int32(MSG_DONTWAIT))
            if n < 0 {
                let e = errno
                if e == ENOBUFS && overruns < options.receivesPerDrain {
                    counters.receiveOverruns &+= 1
                    overruns += 1
                    continue
                }
                if e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ENOBUFS { break }
                flushBatch()
                flushSends()
                publishCounters()
                throw SystemError("receiving from NFQUEUE \(number)", errno: e)
            }
            receivedAt = QueueDelay.nowMicroseconds()
            dispatch(length: n, handle: handle)
            drained += 1
        }
        flushBatch()
        flushSends()
        publishCounters()
        return drained
    }

    private func dispatch(length: Int, handle: (UnsafeMutableRawBufferPointer, UnsafeMutableRawBufferPointer, PacketInfo) -> Verdict) {
        var len = Int32(length)
        var msg: UnsafeMutablePointer<nlmsghdr>? = receiveBuffer.assumingMemoryBound(to: nlmsghdr.self)
        while let m = msg, mnl_nlmsg_ok(m, len) {
            if m.pointee.nlmsg_type == UInt16(NFNL_SUBSYS_QUEUE << 8) | UInt16(NFQNL_MSG_PACKET.rawValue) {
                packet(m, handle: handle)
            }
            msg = mnl_nlmsg_next(m, &len)
        }
    }

    /// A packet that came while a configuration message awaited its answer (the queue bound
    /// while its rules already send it traffic): accepted at once, as the kernel would have let
    /// it by unqueued, instead of being left queued without a verdict.
    private func acceptArrived(_ m: UnsafeMutablePointer<nlmsghdr>) {
        attributes.update(repeating: nil, count: attributeCount)
        guard nfq_nlmsg_parse(m, attributes) >= 0, let ph = attributes[Int(NFQA_PACKET_HDR.rawValue)] else { return }
        let id = UInt32(bigEndian: mnl_attr_get_payload(ph)!.assumingMemoryBound(to: nfqnl_msg_packet_hdr.self).pointee.packet_id)
        sendVerdict(id: id, verdict: TS_NF_ACCEPT, payload: nil)
        flushSends()
    }

    private func packet(_ m: UnsafeMutablePointer<nlmsghdr>,
                        handle: (UnsafeMutableRawBufferPointer, UnsafeMutableRawBufferPointer, PacketInfo) -> Verdict) {
        attributes.update(repeating: nil, count: attributeCount)
        guard nfq_nlmsg_parse(m, attributes) >= 0, let ph = attributes[Int(NFQA_PACKET_HDR.rawValue)] else { return }
        let hdr = mnl_attr_get_payload(ph)!.assumingMemoryBound(to: nfqnl_msg_packet_hdr.self)
        let id = UInt32(bigEndian: hdr.pointee.packet_id)
        counters.packets &+= 1
        lastHandledID = id
        if let a = attributes[Int(NFQA_TIMESTAMP.rawValue)], mnl_attr_get_payload_len(a) >= 16 {
            // struct nfqnl_msg_packet_timestamp: seconds and microseconds, big-endian 64-bit.
            let t = UnsafeRawPointer(mnl_attr_get_payload(a)!)
            let sec = UInt64(bigEndian: t.loadUnaligned(as: UInt64.self))
            let usec = UInt64(bigEndian: t.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            counters.delay.record(queuedAt: sec &* 1_000_000 &+ usec, receivedAt: receivedAt)
        }
        guard let pa = attributes[Int(NFQA_PAYLOAD.rawValue)] else {
            accept(id)
            return
        }
        let payload = mnl_attr_get_payload(pa)!
        let payloadLength = Int(mnl_attr_get_payload_len(pa))
        var info = PacketInfo(hook: hdr.pointee.hook)
        if let a = attributes[Int(NFQA_MARK.rawValue)] { info.mark = UInt32(bigEndian: mnl_attr_get_u32(a)) }
        if let a = attributes[Int(NFQA_SKB_INFO.rawValue)] {
            let skb = UInt32(bigEndian: mnl_attr_get_u32(a))
            info.checksumPartial = skb & UInt32(NFQA_SKB_CSUMNOTREADY) != 0
            info.gso = skb & UInt32(NFQA_SKB_GSO) != 0
        }
        if let a = attributes[Int(NFQA_IFINDEX_INDEV.rawValue)] { info.inInterface = UInt32(bigEndian: mnl_attr_get_u32(a)) }
        if let a = attributes[Int(NFQA_IFINDEX_OUTDEV.rawValue)] { info.outInterface = UInt32(bigEndian: mnl_attr_get_u32(a)) }
        if let a = attributes[Int(NFQA_CAP_LEN.rawValue)], Int(UInt32(bigEndian: mnl_attr_get_u32(a))) != payloadLength {
            // We were not given the whole packet: we must not rewrite it; the kernel's verdict.
            counters.truncated &+= 1
            accept(id)
            return
        }
        let bytes = UnsafeMutableRawBufferPointer(start: payload, count: payloadLength)
        let verdict = handle(bytes, scratch, info)
        if verdict.isPlainAccept {
            accept(id)
            return
        }
        // Anything else goes alone, after the batch, so that a flow's packets keep their order;
        // a drop before it (the batch must not cover the dropped packet's id).
        if verdict.action != .drop { flushBatch() }
        let newBytes = verdict.finish(packet: bytes, scratch: scratch).map(UnsafeRawBufferPointer.init)
        let code: UInt32
        switch verdict.action {
        case .accept: code = TS_NF_ACCEPT
        case .drop: code = TS_NF_DROP
        case .repeatHook: code = TS_NF_REPEAT
        }
        sendVerdict(id: id, verdict: code, payload: verdict.action == .drop ? nil : newBytes, mark: verdict.mark)
    }

    /// Sends the verdicts written so far (the batch of accepts included) now, not at the end
    /// of the drain: called while the engine handles one of this queue's packets, before a
    /// packet it makes goes out (`SpliceInjector.verdictsFirst`), so that what it made leaves
    /// after the packets it handled before. The current packet's verdict is not written yet.
    public func sendPendingVerdicts() {
        guard pendingCount > 0 || sendUsed > 0 else { return }
        counters.sendsBeforeInjection &+= 1
        flushBatch()
        flushSends()
    }

    @inline(__always)
    private func accept(_ id: UInt32) {
        pendingID = id
        pendingCount += 1
        if pendingCount >= options.batchLimit { flushBatch() }
    }

    /// Accepts every pending packet up to the last batched id, in one message.
    private func flushBatch() {
        guard pendingCount > 0 else { return }
        let nlh = nfq_nlmsg_put(nextMessage(payloadBytes: 0), Int32(NFQNL_MSG_VERDICT_BATCH.rawValue), UInt32(number))!
        nfq_nlmsg_verdict_put(nlh, Int32(bitPattern: pendingID), Int32(TS_NF_ACCEPT))
        written(nlh)
        counters.batchedAccepts &+= UInt64(pendingCount)
        pendingCount = 0
    }

    private func sendVerdict(id: UInt32, verdict: UInt32, payload: UnsafeRawBufferPointer?, mark: UInt32? = nil) {
        let nlh = nfq_nlmsg_put(nextMessage(payloadBytes: payload?.count ?? 0),
                                Int32(NFQNL_MSG_VERDICT.rawValue), UInt32(number))!
        nfq_nlmsg_verdict_put(nlh, Int32(bitPattern: id), Int32(bitPattern: verdict))
        if let mark { nfq_nlmsg_verdict_put_mark(nlh, mark) }
        if let p = payload, let base = p.baseAddress {
            nfq_nlmsg_verdict_put_pkt(nlh, base, UInt32(p.count))
        }
        written(nlh)
    }

    /// Where the next verdict message goes in the send buffer: after those written, or at its
    /// start once they are sent, when a message carrying `payloadBytes` would take the round
    /// past `sendLimit`.
    private func nextMessage(payloadBytes: Int) -> UnsafeMutablePointer<CChar> {
        if sendUsed + payloadBytes + 256 > NetfilterQueue.sendLimit { flushSends() }
        return (sendBuffer + sendUsed).assumingMemoryBound(to: CChar.self)
    }

    /// A message was written at `nextMessage`: it goes with the next `flushSends`.
    private func written(_ nlh: UnsafeMutablePointer<nlmsghdr>) {
        counters.verdictMessages &+= 1
        // libmnl keeps nlmsg_len a multiple of 4: the next message starts aligned.
        sendUsed += Int(nlh.pointee.nlmsg_len)
    }

    /// Sends the verdict messages written so far, in one `sendto`.
    private func flushSends() {
        guard sendUsed > 0 else { return }
        counters.verdictSends &+= 1
        while mnl_socket_sendto(socket, sendBuffer, sendUsed) < 0 {
            if errno == EINTR || errno == ENOBUFS || errno == EAGAIN { continue }
            // The packets stay queued (until the queue is unbound); counted.
            counters.verdictSendFailures &+= 1
            break
        }
        sendUsed = 0
    }

    /// Unbinds the queue (pending packets are dropped by the kernel and retransmitted by TCP).
    public func unbind() {
        let nlh = nfq_nlmsg_put(sendBuffer.assumingMemoryBound(to: CChar.self), Int32(NFQNL_MSG_CONFIG.rawValue), UInt32(number))!
        nfq_nlmsg_cfg_put_cmd(nlh, UInt16(AF_UNSPEC), UInt8(NFQNL_CFG_CMD_UNBIND.rawValue))
        _ = mnl_socket_sendto(socket, nlh, Int(nlh.pointee.nlmsg_len))
    }
}
