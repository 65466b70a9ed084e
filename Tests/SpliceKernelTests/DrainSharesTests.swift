import Testing
@testable import SpliceKernel

/// The reader's turn goes mostly to the fullest queue, so that no queue reaches the kernel's
/// bound while another holds much less.
@Suite struct DrainSharesTests {
    @Test func evenQueuesShareTheTurnEvenly() {
        #expect(DrainShares.receives(waiting: [40_000, 38_000], base: 32) == [32, 32])
        #expect(DrainShares.receives(waiting: [50_000], base: 32) == [32])
    }

    @Test func aSmallBacklogKeepsTheTurnsEven() {
        // Below the minimum backlog: even turns.
        #expect(DrainShares.receives(waiting: [DrainShares.minimumBacklog - 1, 0], base: 32) == [32, 32])
    }

    @Test func aModerateBacklogAlreadyGetsMoreOfTheTurn() {
        // The servers' queue holding 800 while the clients' holds 50: far from the kernel's
        // bound, but 800 packets are ~100 ms of waiting for a reader that cannot keep up.
        #expect(DrainShares.receives(waiting: [50, 800], base: 32) == [8, 56])
        // Level backlogs (within an eighth) keep the turns even.
        #expect(DrainShares.receives(waiting: [800, 750], base: 32) == [32, 32])
    }

    @Test func theFullestGetsWhatTheOthersGiveUp() {
        // The crowd's case: the ends' queue twice as full as the proxy's.
        #expect(DrainShares.receives(waiting: [33_000, 65_000], base: 32) == [8, 56])
        // Three queues: each other one keeps a quarter; the turn's total is unchanged.
        let r = DrainShares.receives(waiting: [30_000, 5_000, 26_000], base: 32)
        #expect(r == [80, 8, 8])
        #expect(r.reduce(0, +) == 96)
    }

    @Test func theKernelsCountsAreReadPerQueue() {
        // /proc/net/netfilter/nfnetlink_queue: number, port id, waiting, copy mode, range,
        // dropped, user dropped, last id, 1: the third column is what the shares weigh.
        let stats = KernelQueueStats.parse("""
                0  25142 61234 2 65535     0     0   287268  1
                1 3699906207   412 2 65535     0     0   317426  1
                3   9999  7 2 65535 12 0 5 1

            """)
        #expect(stats.map(\.queue) == [0, 1, 3])
        #expect(stats.map(\.queueTotal) == [61234, 412, 7])
    }
}
