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
/// drops. No I/O: the caller counts (`KernelQueueStats`).
public enum DrainShares {
    /// A queue gets more of the turn only above this many packets waiting: below, the turns
    /// stay even. Low, because waiting packets are also time: at 1,024 (until 2026-12-08) a
    /// reader that could not keep up (50 transfers through the proxy, the links' offloads off)
    /// left the servers' queue at 500-1,000 packets with the others near empty, and the servers'
    /// packets waited 119 ms on average (72% of them 100-500 ms, `splicectl status`) against
    /// 5 ms for the clients'; their senders' round-trip estimates reached seconds. At 64 both
    /// waited ~10 ms (Docs/packet-path.md, "Waiting in the queue").
    public static let minimumBacklog = 64

    /// `waiting[i]`: packets waiting in sharing queue i; `base`: receives each gets when even.
    /// Returns the receives per queue: `base` each, unless the fullest holds at least
    /// `minimumBacklog` packets and more than an eighth over the next; then it gets what the
    /// others give up, each of them keeping a quarter of `base` so that none stops. The turn's
    /// total stays the same.
    public static func receives(waiting: [Int], base: Int) -> [Int] {
        var out = [Int](repeating: base, count: waiting.count)
        guard waiting.count >= 2 else { return out }
        var top = 0
        for i in waiting.indices where waiting[i] > waiting[top] { top = i }
        var next = 0
        for i in waiting.indices where i != top { next = max(next, waiting[i]) }
        guard waiting[top] >= minimumBacklog, waiting[top] > next + next / 8 else { return out }
        let floor = max(1, base / 4)
        for i in out.indices where i != top { out[i] = floor }
        out[top] = base * waiting.count - floor * (waiting.count - 1)
        return out
    }
}
