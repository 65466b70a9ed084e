#if canImport(Glibc)
import Glibc
#endif

/// How many receives each queue gets in one turn of a reader that serves several: the fullest
/// first.
///
/// The kernel keeps at most 65,536 packets waiting per queue on the kernels we run on (its
/// per-queue id table stops growing there, whatever the configured length: Docs/packet-path.md),
/// and drops the next ones of a fail-closed queue. A reader that gives every ready queue the same
/// number of receives lets the queue that fills fastest reach that bound while the others hold
/// half as much: in a crowd of 10,000 downloads the ends' queue (two ends sending, one of them
/// bursting its answers) reached it with the proxy's queue at 33,000. So while queues hold a
/// backlog, the one holding the most packets gets most of the turn, until another holds more:
/// their backlogs stay even, and together they hold up to the sum of their bounds before any
/// drops. No I/O: the caller counts (`QueueBacklog`).
public enum DrainShares {
    /// A queue gets more of the turn only above this many packets waiting: below, nothing is
    /// near the bound and the turns stay even.
    public static let minimumBacklog = 1024

    /// `waiting[i]`: packets waiting in sharing queue i; `base`: receives each gets when even.
    /// Writes the receives per queue into `out` (resized to match, no allocation once it has the
    /// room): `base` each, unless the fullest holds at least `minimumBacklog` packets and more
    /// than an eighth over the next; then it gets what the others give up, each of them keeping
    /// a quarter of `base` so that none stops. The turn's total stays the same.
    public static func receives(waiting: [Int], base: Int, into out: inout [Int]) {
        out.removeAll(keepingCapacity: true)
        for _ in waiting.indices { out.append(base) }
        guard waiting.count >= 2 else { return }
        var top = 0
        for i in waiting.indices where waiting[i] > waiting[top] { top = i }
        var next = 0
        for i in waiting.indices where i != top { next = max(next, waiting[i]) }
        guard waiting[top] >= minimumBacklog, waiting[top] > next + next / 8 else { return }
        let floor = max(1, base / 4)
        for i in out.indices where i != top { out[i] = floor }
        out[top] = base * waiting.count - floor * (waiting.count - 1)
    }

    /// `receives(waiting:base:into:)` into a new array.
    public static func receives(waiting: [Int], base: Int) -> [Int] {
        var out: [Int] = []
        receives(waiting: waiting, base: base, into: &out)
        return out
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
