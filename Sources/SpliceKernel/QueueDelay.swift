import Glibc
import SpliceControlProtocol

/// How long a queue's packets waited before the reader received them: a histogram with fixed
/// bounds, their sum and the largest, counted per packet that carried the kernel's timestamp.
///
/// The kernel stamps a packet it receives only while some socket of the host asked for receive
/// timestamps (`net_enable_timestamp`, host-wide); `spliced` holds such a socket open
/// (`QueueDelay.enableKernelTimestamps`). The packets this host sends (the proxy's, in raw
/// OUTPUT) came with no stamp on the kernel of these machines (6.18): their queues' waits are
/// not measured. A stamp of another clock (ahead of the receive, or more than an hour behind
/// it) is counted apart (`unusable`), not as a wait. `record` allocates nothing.
public struct QueueDelay: Sendable {
    /// Upper bounds (microseconds) of the buckets, the last one open: up to 1 ms, 5 ms, 20 ms,
    /// 100 ms, 500 ms, and longer (`bucket(_:)` places a wait by the same bounds).
    public static let boundsMicroseconds: [UInt64] = [1_000, 5_000, 20_000, 100_000, 500_000]

    /// Waits counted per bucket, in the order of `boundsMicroseconds`, the open one last.
    private var counts = InlineArray<6, UInt64>(repeating: 0)
    public private(set) var totalMicroseconds: UInt64 = 0
    public private(set) var maxMicroseconds: UInt64 = 0
    /// Stamps of another clock, not counted as waits.
    public private(set) var unusable: UInt64 = 0

    public init() {}

    public var buckets: [UInt64] { counts.indices.map { counts[$0] } }
    /// As `splicectl status` shows it.
    public var report: QueueDelayReport {
        let b = buckets
        return QueueDelayReport(samples: b.reduce(0, &+), totalMicroseconds: totalMicroseconds, maxMicroseconds: maxMicroseconds,
                                boundsMicroseconds: QueueDelay.boundsMicroseconds, buckets: b, unusable: unusable)
    }
    /// Packets timed.
    public var samples: UInt64 { buckets.reduce(0, &+) }

    /// The bucket of a wait (microseconds): the first whose bound it does not exceed.
    @inline(__always)
    static func bucket(_ wait: UInt64) -> Int {
        switch wait {
        case ...1_000: 0
        case ...5_000: 1
        case ...20_000: 2
        case ...100_000: 3
        case ...500_000: 4
        default: 5
        }
    }

    /// One packet stamped `queuedAt`, received at `receivedAt` (both `CLOCK_REALTIME`
    /// microseconds).
    @inline(__always)
    public mutating func record(queuedAt: UInt64, receivedAt: UInt64) {
        // A stamp up to 1 ms ahead of the receive is the clocks' read order (the receive time
        // is read once per receive); further ahead, or more than an hour behind, another clock.
        let wait = queuedAt > receivedAt ? 0 : receivedAt &- queuedAt
        guard queuedAt <= receivedAt &+ 1_000, wait < 3_600_000_000 else {
            unusable &+= 1
            return
        }
        counts[QueueDelay.bucket(wait)] &+= 1
        totalMicroseconds &+= wait
        if wait > maxMicroseconds { maxMicroseconds = wait }
    }

    /// `CLOCK_REALTIME` in microseconds (the clock of the kernel's packet stamps).
    @inline(__always)
    public static func nowMicroseconds() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return UInt64(t.tv_sec) &* 1_000_000 &+ UInt64(t.tv_nsec / 1_000)
    }

    /// Opens a UDP socket that asks for receive timestamps and keeps it: while it is open the
    /// kernel stamps every packet it receives (host-wide, ~a clock read per packet), so that
    /// queued packets carry `NFQA_TIMESTAMP`. Returns its descriptor, or -1 (the waits are then
    /// not measured; nothing else depends on it).
    public static func enableKernelTimestamps() -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var on: Int32 = 1
        guard setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            close(fd)
            return -1
        }
        return fd
    }
}
