import Testing
@testable import SpliceKernel

/// The queue's waits, from the kernel's stamps to the reader's receive.
@Suite struct QueueDelayTests {
    @Test func waitsFallIntoTheirBuckets() {
        var d = QueueDelay()
        let t: UInt64 = 1_765_000_000_000_000
        for wait: UInt64 in [0, 1_000, 1_001, 5_000, 19_999, 100_000, 400_000, 500_001, 2_000_000] {
            d.record(queuedAt: t - wait, receivedAt: t)
        }
        #expect(d.buckets == [2, 2, 1, 1, 1, 2])
        #expect(d.samples == 9)
        #expect(d.maxMicroseconds == 2_000_000)
        #expect(d.totalMicroseconds == 0 + 1_000 + 1_001 + 5_000 + 19_999 + 100_000 + 400_000 + 500_001 + 2_000_000)
        #expect(d.unusable == 0)
    }

    @Test func stampsOfAnotherClockAreNotWaits() {
        var d = QueueDelay()
        let now: UInt64 = 1_765_000_000_000_000
        d.record(queuedAt: now + 500, receivedAt: now)          // read order: no wait
        d.record(queuedAt: now + 5_000_000, receivedAt: now)    // ahead: another clock
        d.record(queuedAt: 12_345_678, receivedAt: now)         // a monotonic clock's reading
        #expect(d.samples == 1)
        #expect(d.buckets[0] == 1)
        #expect(d.unusable == 2)
        #expect(d.maxMicroseconds == 0)
    }

    @Test func theBoundsMatchTheBuckets() {
        #expect(QueueDelay.boundsMicroseconds.count + 1 == QueueDelay().buckets.count)
        // The reported bounds are those `bucket` places waits by.
        for (i, bound) in QueueDelay.boundsMicroseconds.enumerated() {
            #expect(QueueDelay.bucket(bound) == i)
            #expect(QueueDelay.bucket(bound + 1) == i + 1)
        }
    }
}
