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
