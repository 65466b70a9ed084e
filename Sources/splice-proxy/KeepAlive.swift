#if canImport(Glibc)
import Glibc
#endif
import CLinuxSupport
import SpliceControlProtocol
import SpliceKernel
import SpliceRules
import SpliceWire

// Keep-alive re-routing (seed 003: FIG. 14, FIN processing; Docs/balancer.md). A rule with
// `perRequest` decides each request of a connection on its own. The request (whole: its head,
// and its body when that fits in the held bytes) goes to the member its rules pick, on the kept
// backend connection when it is the same member; the proxy reads the response head and knows
// where the response ends. A response with more left than `--per-request-join-above` is joined
// for that response only: the engine forwards it, and the proxy's two sockets are taken over
// at once by new ones in repair mode, set where the connections will stand at the response's
// end (the client's: the response's last byte sent; the backend's: its last byte received),
// and silent until then (every packet of the pair is the engine's while joined). Once the
// client acknowledges the response's last byte, the engine hands the flow back: the client's
// next request reaches the proxy's new socket, and it all starts again. A smaller response is
// relayed to its end.

extension Relay {
    /// How far ahead of the old socket's clock a socket taking over a connection starts its
    /// timestamps: past the joined flow's translated clock (1,000 ticks ahead of the proxy's
    /// at the join, Engine.joinTimestampBias), so that no end sees an older timestamp (PAWS).
    static let handBackClockLead: UInt32 = 2000

    /// The receive window of a socket taking a backend connection over (bytes past the
    /// response's end): what the backend may send of its next response before the proxy reads.
    /// The engine bounds the windows it carries to the backend during the join by it
    /// (`returnWindow`), so that the backend's next response never overruns the new socket.
    /// At most 64 KiB, and half of a new socket's receive buffer (`tcp_rmem`'s default), so
    /// that the socket has the memory for it before the proxy reads.
    static let returnWindow: UInt32 = {
        var fallback: UInt32 = 131_072
        if let text = readSmallFile("/proc/sys/net/ipv4/tcp_rmem") {
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
            if fields.count >= 2, let v = UInt32(fields[1]) { fallback = v }
        }
        return min(65_535, max(4096, fallback / 2))
    }()

    /// A per-request rule decided: the request goes to a member (the kept backend connection
    /// when it is the same), and the response head is awaited; the client is not read meanwhile.
    func startPerRequest(_ c: Connection, pool: String, finProcess: Bool) {
        logger.debug("request of \(c.client): \(String(decoding: c.toServer.held.prefix { $0 != 0x0d }, as: UTF8.self)) (\(c.toServer.held.count) bytes, \(c.toServer.bytesRead) read from the client in all, handed back: \(c.handedBack)) (#\(c.id))")
        if case .complete(let h) = HTTPRequestHead.parse(c.toServer.held) { c.requestIsHead = h.method == "HEAD" }
        guard chooseBackend(c, pool: pool) else { return }
        c.perRequest = true
        c.finProcess = finProcess
        c.handedBack = false
        // The request may go at once: the join, if any, is for the response.
        c.joinReady = true
        c.toServer.stopInspecting()
        c.toServer.paused = true
        c.toClient.inspect = true
        c.toClient.held = []
        c.toClient.heldSent = 0
        c.toClient.paused = false
        c.toClient.readLimit = .max
        c.responseStart = c.toClient.bytesRead
        c.stage = .awaitingResponse
        refreshInterest(c)
        service(c, fd: -1, events: 0)
    }

    /// The response head of a per-request connection: joined for this response (with its end),
    /// or relayed to its end; a chunked one is relayed, its end found from its framing; a
    /// response delimited by the close is joined for the connection's life, as is one after
    /// which the backend closes when the rule propagates the FIN (or, chunked, at all). With
    /// `fin process`, the head is given to the client as one that keeps the connection (its
    /// `Connection: close` taken out) and the backend's FIN is left to the proxy's socket.
    func perRequestResponse(_ c: Connection, timedOut: Bool) {
        let held = c.toClient.held
        let head: HTTPResponseHead
        switch HTTPResponseHead.parse(held) {
        case .complete(let h): head = h
        case .incomplete where !timedOut && !c.toClient.sourceDone && held.count < maxPeekLength: return
        default:
            logger.debug("no response head for \(c.client) from \(c.backend.map { "\($0)" } ?? "?"): relayed as it is")
            perRequestEnds(c, join: false)
            return
        }
        let closes = head.closesConnection
        let body: Int
        switch head.body(method: c.requestIsHead ? "HEAD" : "GET") {
        case .length(let n):
            body = n
        case .chunked where !closes:
            relayChunked(c, bodyAt: head.headLength)
            return
        case .chunked, .untilClose:
            perRequestEnds(c, join: true)
            return
        }
        if closes && !c.finProcess {
            perRequestEnds(c, join: true)
            return
        }
        let total = UInt64(head.headLength + body)
        guard c.toClient.bytesRead - c.responseStart <= total else {
            // More than the response came: not the HTTP the head promised.
            perRequestEnds(c, join: false)
            return
        }
        if closes {
            c.toClient.held = HTTPResponseHead.keepingAlive(held[0..<head.headLength]) + held[head.headLength...]
            c.backendClosing = true
        }
        c.responseEnd = c.responseStart + total
        c.toClient.readLimit = c.responseEnd
        c.toClient.stopInspecting()
        logger.debug("response for \(c.client) from \(c.backend.map { "\($0)" } ?? "?"): \(total) bytes, \(c.responseEnd - c.toClient.bytesRead) left: \(c.responseEnd - c.toClient.bytesRead > settings.perRequestJoinAbove ? "joined" : "relayed")\(closes ? ", the backend's FIN processed" : "") (#\(c.id))")
        carryOn(c, join: c.responseEnd - c.toClient.bytesRead > settings.perRequestJoinAbove, else: .relayingResponse)
    }

    /// A chunked response: relayed by the proxy (not joined: its end is known only from the
    /// framing, which the engine does not read), the framing followed as it goes (size lines
    /// and trailers read through userspace, each chunk's data through the pipe up to its end),
    /// and after its last byte the connection waits for its next request as after any relayed
    /// response. Framing that is not chunked, or bytes after the response, end per-request
    /// routing (the connection is relayed for its life).
    func relayChunked(_ c: Connection, bodyAt start: Int) {
        c.chunked = ChunkedBody()
        c.chunkParsed = start
        c.toClient.readLimit = .max
        c.stage = .relayingChunked
        logger.debug("chunked response for \(c.client) from \(c.backend.map { "\($0)" } ?? "?"): relayed, its end from its framing (#\(c.id))")
        refreshInterest(c)
        service(c, fd: -1, events: 0)
    }

    /// A chunked response relayed (`relayingChunked`) after a pump: the framing read on.
    /// Returns whether the relay should pump again at once (the way bytes are read changed).
    func chunkedProgress(_ c: Connection) -> Bool {
        if c.toClient.inspect {
            c.chunkParsed += c.chunked.consume(c.toClient.held[c.chunkParsed...])
            switch c.chunked.state {
            case .done:
                guard c.chunkParsed == c.toClient.held.count else {
                    logger.debug("\(c.client): bytes after a chunked response (#\(c.id))")
                    perRequestEnds(c, join: false)
                    return false
                }
                // Everything read is the response: it ends here.
                c.responseEnd = c.toClient.bytesRead
                c.toClient.readLimit = c.responseEnd
                c.toClient.stopInspecting()
                c.stage = .relayingResponse
                return true
            case .invalid:
                logger.debug("\(c.client): a response said chunked is not (#\(c.id))")
                perRequestEnds(c, join: false)
                return false
            case .data(let left) where c.chunkParsed == c.toClient.held.count:
                // The rest of this chunk is not read yet: through the pipe, up to its end
                // (what is held goes first); or, past the join threshold, joined from here:
                // the engine follows the framing on and says where the response ends.
                c.chunked.skip(left)
                c.toClient.readLimit = c.toClient.bytesRead + left
                c.toClient.inspect = false
                // (What the backend's socket holds already is read at once: it does not count.)
                let queued = UInt64(max(0, tcpsplice_inq(c.up)))
                if left > queued && left - queued > settings.perRequestJoinAbove && engineConnected {
                    logger.debug("chunked response for \(c.client) from \(c.backend.map { "\($0)" } ?? "?"): a chunk with \(left) bytes left: joined, its end found by the engine (#\(c.id))")
                    c.chunkJoin = true
                    awaitJoin(c)
                    backendConnected(c)
                    return false
                }
                return true
            default:
                // More of a size line or of the trailer is needed: read on, letting go of
                // what is written already.
                if c.toClient.heldSent == c.toClient.held.count {
                    c.toClient.held = []
                    c.toClient.heldSent = 0
                    c.chunkParsed = 0
                }
                return false
            }
        }
        // A chunk's data went through the pipe: once it is all read and written, the next
        // size line is read through userspace.
        if c.toClient.bytesRead == c.toClient.readLimit && c.toClient.empty {
            c.toClient.inspect = true
            c.toClient.held = []
            c.toClient.heldSent = 0
            c.chunkParsed = 0
            c.toClient.readLimit = .max
            return true
        }
        return false
    }

    /// The join is asked for now (the backend connection is up), or the connection goes on in
    /// stage `relay`.
    private func carryOn(_ c: Connection, join: Bool, else relay: Stage) {
        if join {
            awaitJoin(c)
            backendConnected(c)
        } else {
            c.stage = relay
        }
        refreshInterest(c)
        service(c, fd: -1, events: 0)
    }

    /// The connection leaves keep-alive re-routing: relayed, or joined, for the rest of its life.
    private func perRequestEnds(_ c: Connection, join: Bool) {
        logger.debug("\(c.client) -> \(c.server) leaves per-request routing: \(join ? "joined" : "relayed") for its life (#\(c.id))")
        leavePerRequest(c)
        carryOn(c, join: join && engineConnected, else: .relaying)
    }

    /// Per-request routing is over for the connection (or never began): both directions are
    /// read freely, through pipes.
    func leavePerRequest(_ c: Connection) {
        c.perRequest = false
        c.toServer.paused = false
        c.toClient.paused = false
        c.toClient.readLimit = .max
        c.toClient.stopInspecting()
    }

    /// Joined for one response: the proxy's sockets are taken over by new ones standing where
    /// the connections will be at the response's end, and the engine is told it may hand the
    /// flow back (`arm`).
    func handBack(_ c: Connection) {
        // (Nothing was read since the join was asked for: the connection stood still.)
        let rest = c.responseEnd - c.toClient.bytesRead
        var sd = tcpsplice_tcp_state(), su = tcpsplice_tcp_state()
        guard let backend = c.backend, let local = c.local,
              tcpsplice_repair_read(c.down, &sd) == 0, tcpsplice_repair_read(c.up, &su) == 0 else {
            giveUpReturn(c, String(cString: strerror(errno)))
            return
        }
        let r = UInt32(truncatingIfNeeded: rest)
        // The backend's next response goes to the new socket: its window is the one the
        // engine bounded the joined flow's by.
        su.rcv_wnd = Relay.returnWindow
        guard takeOver(c.down, local: c.server, peer: c.client, state: sd, send: sd.snd_seq &+ r, receive: sd.rcv_seq),
              takeOver(c.up, local: local, peer: backend, state: su, send: su.snd_seq, receive: su.rcv_seq &+ r) else {
            giveUpReturn(c, String(cString: strerror(errno)))
            return
        }
        c.downInterest = 0
        c.upInterest = 0
        // The response's bytes the engine carries count as read from the backend and written
        // to the client: the next join's counts stay in each connection's sequence space.
        c.toClient.bytes += rest
        c.toClient.bytesRead += rest
        c.joinPrepared = false
        pendingSplices.remove(c.id)
        spliceCounts.handedBack += 1
        logger.debug("\(c.client) -> \(c.server): sockets taken over, \(rest) response bytes joined (#\(c.id))")
        sendJoin(c, .arm)
        nextRequest(c)
    }

    /// Joined for one chunked response: its end is the engine's to find. The sockets stay as
    /// the join left them (nothing reaches them: the engine translates the ends' packets onto
    /// each other), out of the loop, until the engine says where the response ends.
    func awaitChunkEnd(_ c: Connection) {
        c.stage = .chunkJoined
        c.nextAsk = monotonicSeconds() + Relay.chunkEndPoll
        rewatch(c.down, from: c.downInterest, to: 0)
        rewatch(c.up, from: c.upInterest, to: 0)
        c.downInterest = 0
        c.upInterest = 0
        logger.debug("\(c.client) -> \(c.server): joined from inside a chunk, \(c.toClient.readLimit - c.toClient.bytesRead) bytes of it left; waiting for the engine to find the response's end (#\(c.id))")
    }

    /// The engine's word on a joined chunked response: where it ends (the sockets are taken
    /// over there and the return armed, as after a join for a response of known length), or
    /// its framing lost and the flow joined for the connection's life (the proxy steps out),
    /// or not yet (asked again later), or the connection is over (the proxy steps out).
    func chunkEndAnswered(_ c: Connection, _ r: ControlResponse) {
        guard c.stage == .chunkJoined else { return }
        if r.ok, r.outcome == "end", let rest = r.join?.returnAfter {
            c.chunkJoin = false
            c.chunked = ChunkedBody()
            c.responseEnd = c.toClient.bytesRead + rest
            logger.debug("\(c.client) -> \(c.server): the engine found the chunked response's end \(rest) bytes on (#\(c.id))")
            handBack(c)
        } else if !r.ok && r.outcome == "open" {
            return
        } else {
            logger.debug("\(c.client) -> \(c.server): the joined chunked response \(r.ok ? "could not be delimited; joined for the connection's life" : "is over: \(r.error ?? "?")") (#\(c.id))")
            stepOut(c)
        }
    }

    /// A new socket takes over connection `fd` (repair mode): bound to `local`, connected to
    /// `peer` without a packet, its next sequence numbers `send` and `receive`, the old
    /// socket's options and windows, its clock ahead (`handBackClockLead`). The old socket
    /// goes silently (it is in repair mode) when the new one takes its descriptor.
    private func takeOver(_ fd: Int32, local: SocketAddress, peer: SocketAddress, state: tcpsplice_tcp_state,
                          send: UInt32, receive: UInt32) -> Bool {
        let fresh = Relay.streamSocket(peer.family)
        guard fresh >= 0 else { return false }
        guard (try? setBalancerMark(fresh)) != nil else { close(fresh); return false }
        var one: Int32 = 1
        setsockopt(fresh, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var st = state
        guard local.withSockaddr({ tcpsplice_repair_prepare(fresh, $0, $1, &st, send, receive) }) == 0 else {
            logger.error("taking over \(local) -> \(peer): \(String(cString: strerror(errno)))")
            close(fresh)
            return false
        }
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nil)
        guard dup2(fresh, fd) == fd else { close(fresh); return false }
        close(fresh)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let clock = state.ts_clock &+ Relay.handBackClockLead
        guard peer.withSockaddr({ tcpsplice_repair_finish(fd, $0, $1, &st, receive, clock) }) == 0 else {
            logger.error("taking over \(local) -> \(peer) (connect in repair mode): \(String(cString: strerror(errno)))")
            return false
        }
        // Leaving repair mode took the address's reuse away (SK_NO_REUSE): the socket, bound
        // to a service address, would then keep any later bind of it (a proxy restarted, or
        // another program) out while it lingers after its close (FIN_WAIT, TIME_WAIT).
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        return true
    }

    /// The sockets could not be taken over: the flow stays joined for its life (`release`),
    /// and the proxy's sockets go without a packet.
    private func giveUpReturn(_ c: Connection, _ why: String) {
        logger.error("keep-alive hand-back of \(c.client) -> \(c.server): \(why); the connection stays joined to \(c.backend.map { "\($0)" } ?? "?")")
        sendJoin(c, .release)
        _ = tcpsplice_repair_on(c.down)
        _ = tcpsplice_repair_on(c.up)
        release(c)
    }

    /// A per-request connection's response is out (joined or relayed): its next request is
    /// read and decided; the backend is not read meanwhile, nor is anything written to it.
    func nextRequest(_ c: Connection) {
        c.stage = .deciding
        c.handedBack = true
        c.action = nil
        c.rule = nil
        c.toServer.paused = false
        c.toServer.inspect = true
        c.toServer.held = []
        c.toServer.heldSent = 0
        c.toServer.gathering = false
        c.toClient.paused = true
        c.pausedForPrepare = false
        c.deadline = monotonicSeconds() + settings.keepAliveTimeout
        deciding.insert(c.id)
        refreshInterest(c)
        service(c, fd: -1, events: 0)
    }

    /// A keep-alive connection with no request: closed when the client closed it; after the
    /// keep-alive wait, closed once the engine says the flow came back (a response still
    /// joined, a long download, keeps it waiting).
    func closeKeepAlive(_ c: Connection) {
        if c.toServer.sourceDone || !engineConnected || c.backend == nil {
            release(c)
            return
        }
        c.idleCheck = true
        c.deadline = monotonicSeconds() + settings.keepAliveTimeout
        sendJoin(c, .arm)
    }

    /// The engine's answer to an `arm`: after the keep-alive wait, a flow that came back (or
    /// that the engine no longer knows) is closed.
    func armAnswered(_ c: Connection, _ r: ControlResponse) {
        if !r.ok { logger.debug("arming the return of \(c.client) refused: \(r.error ?? "?")") }
        guard c.idleCheck else { return }
        c.idleCheck = false
        if (!r.ok || r.outcome == "returned") && c.stage == .deciding && c.toServer.held.isEmpty {
            release(c)
        }
    }
}
