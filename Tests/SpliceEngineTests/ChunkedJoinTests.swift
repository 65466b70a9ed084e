import Testing
import SpliceWire
@testable import SpliceEngine

/// A join for one chunked response (Splice/ChunkedJoin.swift): the engine follows the framing
/// through the backend's bytes, in order, finds where the response ends, tells the proxy, and
/// returns the flow there; a framing it cannot follow leaves the flow joined for its life.
extension JoinTests {
    /// Joined from inside a chunk with `left` bytes of its data still to come.
    func joinedForChunks(left: UInt64) -> (Engine, JoinRequest) {
        var (e, inj, r) = setUp()
        r.chunkLeft = left
        r.returnWindow = 65535
        joinDrained(e, r)
        inj.packets.removeAll()
        return (e, r)
    }

    /// The backend's bytes `data` at `offset` into the response's rest.
    @discardableResult
    func fromBackend(_ e: Engine, at offset: Int, _ data: [UInt8], fin: Bool = false) -> Sent {
        feed(e, from: backend, 80, to: local, 61000, flags: fin ? [.ack, .psh, .fin] : [.ack, .psh],
             seq: bISN + 1 + UInt32(offset), ack: p2ISN + 121, window: 100,
             ts: TCPTimestamps(value: 77010 + UInt32(offset), echo: 502), data: data)
    }

    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test func theEngineFindsAChunkedResponsesEndFollowingItsFramingInOrder() {
        let (e, r) = joinedForChunks(left: 300)
        #expect(e.counters.balancer.chunkedJoins == 1)
        let rest = [UInt8](repeating: 0x61, count: 300) + bytes("\r\n5;x=y\r\nhello\r\n") + bytes("0\r\nT: 1\r\n\r\n")
        func send(_ range: Range<Int>) -> Verdict { fromBackend(e, at: range.lowerBound, Array(rest[range])).verdict }
        // Chunk data passes in any order, a hole before it or not: nothing in it is read.
        #expect(send(0..<100).rewrittenLength != nil)
        #expect(send(150..<250).rewrittenLength != nil)
        #expect(e.chunkedEnd(r) == .open)
        // A segment past framing bytes not seen yet (the CRLF and the size line from 300 on):
        // dropped (the framing is read in order).
        #expect(send(310..<rest.count) == .drop)
        #expect(e.counters.balancer.chunkGaps == 1)
        // The client's next request meanwhile: kept from the backend.
        let early = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 101, ack: p1ISN + 201,
                         ts: TCPTimestamps(value: 121, echo: 10_000), payload: 80)
        #expect(early.verdict == .drop)
        // The hole in the data filled, the data's end and the framing after it, a
        // retransmission, then the rest: the end found.
        #expect(send(100..<150).rewrittenLength != nil)
        #expect(send(250..<310).rewrittenLength != nil)
        #expect(send(0..<100).rewrittenLength != nil)
        #expect(e.chunkedEnd(r) == .open)
        #expect(e.takeChunkEnds().isEmpty)
        #expect(send(310..<rest.count).rewrittenLength != nil)
        #expect(e.counters.balancer.chunkedEnds == 1)
        #expect(e.chunkedEnd(r) == .ended(UInt64(rest.count)))
        var told = r
        told.readFromClient = 0
        told.writtenToBackend = 0
        told.ruleID = 0
        told.chunkLeft = nil
        told.returnWindow = nil
        #expect(e.takeChunkEnds() == [ChunkEnd(request: told, rest: UInt64(rest.count))])
        #expect(e.takeChunkEnds().isEmpty)
        // The proxy arms: the client acknowledged the response's last byte, the flow returns.
        feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 1 + UInt32(rest.count),
             ts: TCPTimestamps(value: 122, echo: 10_000))
        #expect(e.armReturn(r) == .returned)
        #expect(modes(e) == [.balanced, .balanced])
    }

    @Test func theResponsesEndIsWhereTheClientAcknowledgesIt() {
        let (e, r) = joinedForChunks(left: 10)
        fromBackend(e, at: 0, [UInt8](repeating: 0x61, count: 10) + bytes("\r\n0\r\n\r\n"))
        #expect(e.chunkedEnd(r) == .ended(17))
        // An acknowledgement short of the end: armed, not returned; then the last byte's.
        feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 17,
             ts: TCPTimestamps(value: 122, echo: 10_000))
        #expect(e.armReturn(r) == .armed)
        feed(e, from: client, 40000, to: vip, 80, flags: .ack, seq: cISN + 101, ack: p1ISN + 18,
             ts: TCPTimestamps(value: 123, echo: 10_000))
        #expect(modes(e) == [.balanced, .balanced])
    }

    @Test func aFramingThatCannotBeFollowedLeavesTheFlowJoinedForLife() {
        // Not chunked after all (no CRLF after a chunk's data); the backend closing before the
        // last chunk; bytes after the last chunk in the same segment.
        let cases: [(data: [UInt8], fin: Bool)] = [
            ([UInt8](repeating: 0x61, count: 10) + bytes("zz\r\n"), false),
            ([UInt8](repeating: 0x61, count: 8), true),
            ([UInt8](repeating: 0x61, count: 10) + bytes("\r\n0\r\n\r\nHTTP/1.1"), false),
        ]
        for (data, fin) in cases {
            let (e, r) = joinedForChunks(left: 10)
            let sent = fromBackend(e, at: 0, data, fin: fin)
            #expect(sent.verdict.rewrittenLength != nil)
            var b = sent.bytes
            b.withUnsafeMutableBytes { buf in
                guard let p = TCPPacket(buf) else { Issue.record("unparsable"); return }
                #expect(p.destination == client && p.tcp.flags.contains(.fin) == fin && p.checksumIsValid)
            }
            #expect(e.counters.balancer.chunkedLost == 1)
            #expect(e.chunkedEnd(r) == .joinedForLife)
            #expect(e.takeChunkEnds().map(\.rest) == [nil])
            // The client's next bytes go on to the backend.
            let next = feed(e, from: client, 40000, to: vip, 80, flags: [.ack, .psh], seq: cISN + 101, ack: p1ISN + 1,
                            ts: TCPTimestamps(value: 121, echo: 10_000), payload: 80)
            #expect(next.verdict.rewrittenLength != nil)
            #expect(e.armReturn(r) != .returned)
        }
    }

    @Test func aJoinEndsAfterSoManyBytesOrWhereItsChunksEndNotBoth() {
        var (e, _, r) = setUp()
        r.chunkLeft = 10
        r.returnAfter = 100
        #expect(e.prepareJoin(r) == .accepted)
        if case .refused(let why) = e.join(r, now: .seconds(1)) { #expect(why.contains("not both")) } else {
            Issue.record("a join with returnAfter and chunkLeft was not refused")
        }
    }
}
