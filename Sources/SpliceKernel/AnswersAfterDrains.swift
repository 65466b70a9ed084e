/// Answers that must not go out before the queue readers' drains under way when they were made
/// have ended, i.e. before the verdicts of every packet the engine handled until then were sent.
///
/// A proxy told that its flow was spliced or joined closes its sockets. A packet of the flow that
/// the engine handled just before (accepted to one of those sockets), whose verdict the reader
/// sends only at the end of its drain, would reach the closed port after that, and the router
/// would answer it with a reset, ending the far end's connection. So such an answer waits for
/// those drains. Each reader counts its drains at their start and their end
/// (`NetfilterQueue.drainCount`): odd while one is under way.
///
/// Held by one thread (the control thread); no I/O: the caller reads the counts and sends what
/// `release` returns.
public struct AnswersAfterDrains<Answer, Client: Equatable> {
    struct Entry {
        let answer: Answer
        let client: Client
        let key: String
        /// Per queue (an index into the counts) its drain count when the answer was made (odd).
        let drains: [(queue: Int, count: UInt32)]
        let since: Int64
    }

    private var entries: [Entry] = []

    public init() {}

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }

    /// An answer just made, with every queue's drain count read after it was made: returned when
    /// no drain was under way (send it now), otherwise kept until `release` finds those drains
    /// ended.
    public mutating func add(_ answer: Answer, to client: Client, key: String, drainCounts: [UInt32], now: Int64) -> Answer? {
        let busy = drainCounts.enumerated().compactMap { i, n in n & 1 == 1 ? (queue: i, count: n) : nil }
        guard !busy.isEmpty else { return answer }
        entries.append(Entry(answer: answer, client: client, key: key, drains: busy, since: now))
        return nil
    }

    /// A message to `client` about flow `key` sent unasked (a chunked response's end), which
    /// must not overtake an answer about that flow kept for `client`: kept behind it, to go
    /// with it. Returned (send it now) when none is kept.
    public mutating func addBehind(_ answer: Answer, to client: Client, key: String) -> Answer? {
        guard let e = entries.last(where: { $0.key == key && $0.client == client }) else { return answer }
        entries.append(Entry(answer: answer, client: client, key: key, drains: e.drains, since: e.since))
        return nil
    }

    /// The kept answer about flow `key`, taken out: a later request about the same flow is
    /// answered after it, so that each flow's answers keep their order.
    public mutating func take(key: String) -> (answer: Answer, client: Client)? {
        guard let i = entries.firstIndex(where: { $0.key == key }) else { return nil }
        let e = entries.remove(at: i)
        return (e.answer, e.client)
    }

    /// The answers whose drains have all ended (or that waited `bound` milliseconds: a drain is
    /// a bounded number of receives, the bound is a guard), taken out, in the order they came.
    public mutating func release(drainCounts: [UInt32], now: Int64, bound: Int64) -> [(answer: Answer, client: Client)] {
        var out: [(answer: Answer, client: Client)] = []
        entries.removeAll { e in
            let ended = e.drains.allSatisfy { $0.queue >= drainCounts.count || drainCounts[$0.queue] != $0.count }
            guard ended || now - e.since >= bound else { return false }
            out.append((e.answer, e.client))
            return true
        }
        return out
    }

    /// A client gone: its kept answers go with it.
    public mutating func drop(client: Client) {
        entries.removeAll { $0.client == client }
    }
}
