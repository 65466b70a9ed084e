import SpliceRules
import SpliceWire

// A join for one chunked response (Docs/balancer.md, "Chunked responses"). A response without
// a Content-Length ends where its framing says (RFC 9112 7.1: a chunk of size 0, the trailer
// section, an empty line), which the proxy cannot see once the flow is joined. So the engine
// follows the framing itself, through the backend's bytes as it translates them: chunk data
// is skipped by count (a few comparisons a segment, in any order), size lines and trailers
// read byte by byte, in order: a segment that begins past framing bytes not seen yet
// (reordered, or after a loss) is dropped, and the backend sends it again once the client's
// acknowledgements show the hole. When the framing ends, the end is where the return
// happens, as with a Content-Length, and the proxy is told where that is (`chunkEnds`,
// pushed; `chunkedEnd`, on its asking) so that it can take its sockets over there and arm
// the return.

/// What became of a joined chunked response, for the proxy.
public struct ChunkEnd: Sendable, Equatable {
    /// The join's two connections (the tuple of a join request; counts unset).
    public var request: JoinRequest
    /// The response's bytes from where the proxy stopped reading to its end; nil: the framing
    /// was lost, the flow is joined for the connection's life.
    public var rest: UInt64?
}

extension Engine {
    enum ChunkStep { case follows, gap, ended, lost }

    /// At most this many ends wait for the control thread; past it the oldest are dropped
    /// (the proxy also asks, `chunkedEnd`).
    static let chunkEndsBound = 4096

    /// A backend segment of a joined chunked response whose end is not known yet: the framing
    /// followed through its bytes not seen before. A chunk's data needs no look: a segment
    /// that lies within it passes in any order (a reordered or retransmitted one, a hole
    /// before it); only the bytes from the data's end on (the CRLF, the next size line, the
    /// trailer) are read, in order.
    func followChunks(_ tcp: TCPHeader, block b: UnsafeMutablePointer<ConnectionBlock>) -> ChunkStep {
        let j = b.pointee.join
        var framing = j.framing
        var followed = j.chunkStart + UInt32(truncatingIfNeeded: j.chunkBytes)
        let seq = tcp.sequenceNumber
        let length = tcp.payloadLength
        let end = seq + UInt32(length)
        let fin = tcp.flags.contains(.fin)
        // How far past `followed` the segment reaches (negative: bytes followed already).
        let reach = Int64(Int32(bitPattern: end.rawValue &- followed.rawValue))
        let left = framing.dataLeft
        if reach <= 0 || (left > 0 && UInt64(reach) <= left) {
            // Bytes followed already, or chunk data: as they are, unless the backend closes
            // before the last chunk (the response cut short).
            if fin && (reach >= 0 || left > 0) { return loseChunks(b) }
            return .follows
        }
        if left > 0 {
            // The segment reaches past the chunk's data: the data is skipped unseen.
            framing.skip(left)
            followed = followed + UInt32(truncatingIfNeeded: left)
            b.pointee.join.chunkBytes &+= left
        }
        if followed < seq {
            b.pointee.join.framing = framing
            return .gap
        }
        let payload = UnsafeRawBufferPointer(tcp.payload)
        let offset = Int(followed.rawValue &- seq.rawValue)
        let taken = framing.consume(payload[offset...])
        b.pointee.join.framing = framing
        b.pointee.join.chunkBytes &+= UInt64(taken)
        switch framing.state {
        case .invalid:
            return loseChunks(b)
        case .done:
            // Bytes after the response's end before the client asked again: not keep-alive
            // HTTP (the proxy relays such a connection for its life; so does the engine).
            if offset + taken < length { return loseChunks(b) }
            chunkEnded(b)
            return .ended
        default:
            return fin ? loseChunks(b) : .follows
        }
    }

    /// The framing said where the response ends: the return is set there, on both
    /// connections, and the proxy is told.
    func chunkEnded(_ b: UnsafeMutablePointer<ConnectionBlock>) {
        let j = b.pointee.join
        let end = j.chunkStart + UInt32(truncatingIfNeeded: j.chunkBytes)
        b.pointee.join.returnAt = end
        if let cb = table.block(j.peer), cb.pointee.serial == j.peerSerial {
            cb.pointee.join.returnAck = end + j.seqDelta
            cb.pointee.join.returnWindow = j.chunkReturnWindow
        }
        counters.balancer.chunkedEnds &+= 1
        announceChunkEnd(b, rest: j.chunkBytes)
    }

    /// The framing cannot be followed (not chunked after all, bytes after its end, the
    /// backend closing before its last chunk): the flow stays joined for its life, as the
    /// proxy keeps a connection whose response it cannot delimit.
    func loseChunks(_ b: UnsafeMutablePointer<ConnectionBlock>) -> ChunkStep {
        b.pointee.join.returns = false
        b.pointee.join.followsChunks = false
        let j = b.pointee.join
        if let cb = table.block(j.peer), cb.pointee.serial == j.peerSerial {
            cb.pointee.join.returns = false
            cb.pointee.join.armed = false
        }
        counters.balancer.chunkedLost &+= 1
        announceChunkEnd(b, rest: nil)
        return .lost
    }

    /// Queues what became of a chunked join for the control thread, which tells the proxy.
    func announceChunkEnd(_ b: UnsafeMutablePointer<ConnectionBlock>, rest: UInt64?) {
        let j = b.pointee.join
        guard let cb = table.block(j.peer), cb.pointee.serial == j.peerSerial else { return }
        let k = b.pointee.owner, c = j.peer
        let client = table[c], backend = table[k]
        let r = JoinRequest(client: client.addressA, clientPort: client.portA, service: client.addressB, servicePort: client.portB,
                            local: backend.addressA, localPort: backend.portA, backend: backend.addressB, backendPort: backend.portB)
        if chunkEnds.count >= Engine.chunkEndsBound { chunkEnds.removeFirst(chunkEnds.count / 2) }
        chunkEnds.append(ChunkEnd(request: r, rest: rest))
    }

    /// Takes the ends waiting for the proxy (control thread).
    public func takeChunkEnds() -> [ChunkEnd] {
        chunkEndsWoken = false
        guard !chunkEnds.isEmpty else { return [] }
        defer { chunkEnds.removeAll(keepingCapacity: true) }
        return chunkEnds
    }

    public enum ChunkedEndOutcome: Equatable, Sendable {
        /// The response ends this many bytes after where the proxy stopped reading.
        case ended(UInt64)
        /// Its last chunk has not gone by yet.
        case open
        /// The framing was lost: joined for the connection's life.
        case joinedForLife
        case refused(String)
    }

    /// The proxy asks where a joined chunked response ends (it is also told unasked).
    public func chunkedEnd(_ r: JoinRequest) -> ChunkedEndOutcome {
        guard let (c, cb) = clientConnection(r) else { return .refused("the client's connection is unknown") }
        guard table[c].mode == .joined, !table[c].state.isClosed else {
            return .refused("the connection is \(table[c].state.isClosed ? "over" : "not joined")")
        }
        let j = cb.pointee.join
        guard j.returns else { return .joinedForLife }
        guard let kb = table.block(j.peer), kb.pointee.serial == j.peerSerial, kb.pointee.join.followsChunks else {
            return .refused("the connection is not joined for one chunked response")
        }
        let k = kb.pointee.join
        return k.framing.state == .done ? .ended(k.chunkBytes) : .open
    }
}
