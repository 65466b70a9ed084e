#if canImport(Glibc)
import Glibc
#endif

/// The kernel's own counters for each bound NFQUEUE, from `/proc/net/netfilter/nfnetlink_queue`:
/// queue number, peer port id, packets waiting, copy mode, copy range, packets dropped because
/// the queue was full, packets dropped because they could not be sent to userspace (the
/// ENOBUFS drops `NETLINK_NO_ENOBUFS` would hide), last packet id, and 1.
public struct KernelQueueStats: Sendable, Equatable {
    public var queue: UInt16
    public var portID: UInt32
    public var queueTotal: UInt64
    public var copyMode: Int
    public var copyRange: UInt64
    public var queueDropped: UInt64
    public var userDropped: UInt64
    public var lastID: UInt64

    public static let path = "/proc/net/netfilter/nfnetlink_queue"

    /// Parses the file's text; lines that do not have the expected columns are skipped.
    public static func parse(_ text: String) -> [KernelQueueStats] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard f.count >= 8, let q = UInt16(f[0]), let port = UInt32(f[1]), let total = UInt64(f[2]),
                  let mode = Int(f[3]), let range = UInt64(f[4]), let qd = UInt64(f[5]), let ud = UInt64(f[6]),
                  let id = UInt64(f[7]) else { return nil }
            return KernelQueueStats(queue: q, portID: port, queueTotal: total, copyMode: mode, copyRange: range,
                                    queueDropped: qd, userDropped: ud, lastID: id)
        }
    }

    /// Reads the proc file of this network namespace; nil if it cannot be read.
    public static func read() -> [KernelQueueStats]? {
        guard let text = readSmallFile(path) else { return nil }
        return parse(text)
    }
}

/// The packets waiting in each bound queue of this network namespace, as the kernel counts them
/// (`queue_total` of `/proc/net/netfilter/nfnetlink_queue`): the file kept open and read again
/// into one buffer, parsed without allocating. For the reader's thread, a few times a second at
/// most while queues hold a backlog.
public final class QueueBacklog {
    private let fd: Int32
    private let buffer: UnsafeMutableRawBufferPointer

    public init?() {
        fd = open(KernelQueueStats.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        buffer = .allocate(byteCount: 1 << 16, alignment: 8)
    }

    deinit {
        close(fd)
        buffer.deallocate()
    }

    /// For each of `queues` (queue numbers), the packets waiting in it, into `out` (same order;
    /// 0 for a queue the file does not list). False if the file could not be read.
    public func read(queues: [UInt16], into out: inout [Int]) -> Bool {
        var used = 0
        while used < buffer.count {
            let n = pread(fd, buffer.baseAddress! + used, buffer.count - used, off_t(used))
            if n < 0 { if errno == EINTR { continue }; return false }
            if n == 0 { break }
            used += n
        }
        QueueBacklog.parse(UnsafeRawBufferPointer(rebasing: buffer[0..<used]), queues: queues, into: &out)
        return true
    }

    /// Parses the file's lines into `out` (one count per queue of `queues`, 0 for one not
    /// listed): the first column is the queue number, the third its packets waiting. Lines of
    /// other queues, or too short, are skipped.
    static func parse(_ text: UnsafeRawBufferPointer, queues: [UInt16], into out: inout [Int]) {
        out.removeAll(keepingCapacity: true)
        for _ in queues { out.append(0) }
        var column = 0
        var value = 0
        var inNumber = false
        var queue = -1
        var total = -1
        func endField() {
            if inNumber {
                if column == 0 { queue = value } else if column == 2 { total = value }
                column += 1
            }
            inNumber = false
            value = 0
        }
        for byte in text {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                inNumber = true
                value = value &* 10 &+ Int(byte &- UInt8(ascii: "0"))
            case UInt8(ascii: "\n"):
                endField()
                if queue >= 0, total >= 0, let i = queues.firstIndex(of: UInt16(truncatingIfNeeded: queue)) { out[i] = total }
                column = 0
                queue = -1
                total = -1
            default:
                endField()
            }
        }
    }
}

/// Reads a small text file (proc files report size 0, so read until EOF).
public func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; return nil }
        if n == 0 { break }
        out.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: out, as: UTF8.self)
}

/// This process's resident set size and its peak, from /proc/self/status (bytes).
public func processMemory() -> (resident: Int, peak: Int)? {
    guard let text = readSmallFile("/proc/self/status") else { return nil }
    var rss = 0, hwm = 0
    for line in text.split(separator: "\n") {
        let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard f.count >= 2, let kb = Int(f[1]) else { continue }
        if f[0] == "VmRSS:" { rss = kb * 1024 }
        if f[0] == "VmHWM:" { hwm = kb * 1024 }
    }
    return (rss, hwm)
}
