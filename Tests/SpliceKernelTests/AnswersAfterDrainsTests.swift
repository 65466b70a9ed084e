import Testing
@testable import SpliceKernel

/// The answers to step-outs and joins wait for the readers' drains under way when they were
/// made (their verdicts sent), and keep each flow's order.
@Suite struct AnswersAfterDrainsTests {
    @Test func answeredAtOnceWhenNoReaderIsInADrain() {
        var a = AnswersAfterDrains<String, Int>()
        #expect(a.add("joined", to: 1, key: "f1", drainCounts: [4, 0], now: 0) == "joined")
        #expect(a.isEmpty)
    }

    @Test func keptUntilEachDrainUnderWayHasEnded() {
        var a = AnswersAfterDrains<String, Int>()
        // Queue 0 in its 3rd drain, queue 1 between drains.
        #expect(a.add("joined", to: 1, key: "f1", drainCounts: [5, 2], now: 0) == nil)
        #expect(a.count == 1)
        // Queue 1 starts a drain after the answer was made: not waited for; queue 0 still in its own.
        #expect(a.release(drainCounts: [5, 3], now: 1, bound: 20).isEmpty)
        // Queue 0's drain ended (its verdicts sent): the answer goes, even while queue 1 drains.
        let out = a.release(drainCounts: [6, 3], now: 2, bound: 20)
        #expect(out.map(\.answer) == ["joined"] && out.map(\.client) == [1])
        #expect(a.isEmpty)
    }

    @Test func aLaterDrainAlsoEndsTheWait() {
        var a = AnswersAfterDrains<String, Int>()
        #expect(a.add("spliced", to: 1, key: "f1", drainCounts: [7], now: 0) == nil)
        // The drain ended and the next one began before the control thread looked again.
        #expect(a.release(drainCounts: [9], now: 1, bound: 20).map(\.answer) == ["spliced"])
    }

    @Test func theBoundReleasesAStuckWait() {
        var a = AnswersAfterDrains<String, Int>()
        #expect(a.add("joined", to: 1, key: "f1", drainCounts: [1], now: 100) == nil)
        #expect(a.release(drainCounts: [1], now: 119, bound: 20).isEmpty)
        #expect(a.release(drainCounts: [1], now: 120, bound: 20).map(\.answer) == ["joined"])
    }

    @Test func releasedInTheOrderTheyCame() {
        var a = AnswersAfterDrains<String, Int>()
        _ = a.add("first", to: 1, key: "f1", drainCounts: [1], now: 0)
        _ = a.add("second", to: 2, key: "f2", drainCounts: [1], now: 0)
        #expect(a.release(drainCounts: [2], now: 1, bound: 20).map(\.answer) == ["first", "second"])
    }

    @Test func aLaterRequestAboutTheFlowTakesItsAnswerFirst() {
        var a = AnswersAfterDrains<String, Int>()
        _ = a.add("joined f1", to: 1, key: "f1", drainCounts: [1], now: 0)
        _ = a.add("joined f2", to: 1, key: "f2", drainCounts: [1], now: 0)
        #expect(a.take(key: "f3") == nil)
        let t = a.take(key: "f2")
        #expect(t?.answer == "joined f2" && t?.client == 1)
        #expect(a.count == 1)
    }

    @Test func aMessageSentUnaskedGoesBehindTheKeptAnswerAboutItsFlow() {
        var a = AnswersAfterDrains<String, Int>()
        _ = a.add("joined f1", to: 1, key: "f1", drainCounts: [1], now: 0)
        // About another flow, or to another client: sent now.
        #expect(a.addBehind("end f2", to: 1, key: "f2") == "end f2")
        #expect(a.addBehind("end f1", to: 2, key: "f1") == "end f1")
        // About the kept answer's flow, to its client: after it, released with it.
        #expect(a.addBehind("end f1", to: 1, key: "f1") == nil)
        #expect(a.release(drainCounts: [1], now: 1, bound: 20).isEmpty)
        #expect(a.release(drainCounts: [2], now: 2, bound: 20).map(\.answer) == ["joined f1", "end f1"])
        #expect(a.isEmpty)
    }

    @Test func aClientGoneTakesItsAnswersWithIt() {
        var a = AnswersAfterDrains<String, Int>()
        _ = a.add("to 1", to: 1, key: "f1", drainCounts: [1], now: 0)
        _ = a.add("to 2", to: 2, key: "f2", drainCounts: [1], now: 0)
        a.drop(client: 1)
        #expect(a.release(drainCounts: [2], now: 1, bound: 20).map(\.answer) == ["to 2"])
    }
}
