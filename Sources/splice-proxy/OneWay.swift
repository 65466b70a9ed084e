#if canImport(Glibc)
import Glibc
#endif
import CLinuxSupport
import SpliceControlProtocol
import SpliceKernel
import SpliceWire

// One-way joins (seed 003: unidirectional splices; Docs/balancer.md). A splice rule with
// `oneWay` joins one direction of a balancer connection: `to-client` (the backend's bytes: a
// large response) or `to-server` (the client's: a large upload). The join is made as a join
// both ways (prepared, drained), but the proxy keeps its two sockets and goes on relaying the
// other direction through them; the engine rewrites what those sockets send and receive so
// that both ends see one connection each. When the relayed direction is over (its FIN passed
// on and acknowledged, nothing left in the proxy), the proxy asks to join again with its
// counts: the engine joins that direction too, and the proxy's sockets close without a packet.

extension Relay {
    /// How often a one-way join whose relayed direction ended looks whether it drained, and
    /// how long it waits for that at most.
    static let oneWayRecheck = 0.01
    static let oneWayCompletionBound = 120.0

    /// The socket facing the far end that sends the joined direction: it receives none of
    /// that end's bytes (the proxy only writes the relayed direction to it).
    func oneWaySenderSocket(_ c: Connection) -> Int32 {
        c.oneWay == .toClient ? c.up : c.down
    }

    /// The joined direction's sender socket has nothing to read: a spurious wake-up. Anything
    /// else (bytes, a FIN, a reset or error) means the join broke: the connection is aborted.
    func oneWaySocketQuiet(_ c: Connection) -> Bool {
        var byte: UInt8 = 0
        let n = recv(oneWaySenderSocket(c), &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        if n < 0 && (errno == EAGAIN || errno == EINTR) { return true }
        let what = n < 0 ? "failed: \(String(cString: strerror(errno)))" : n == 0 ? "got a FIN" : "got bytes"
        logger.debug("one-way join of \(c.client) -> \(c.server): the socket facing the joined direction's sender \(what) (#\(c.id))")
        return false
    }

    /// The engine joined one direction: the proxy relays the other on its sockets. Closed
    /// by anything but the join's end (the process dies, say), they reset rather than send a
    /// FIN: a FIN would tell the relayed direction's receiver that all its bytes came (a cut
    /// body would look whole), and the socket facing the joined direction's receiver is out of
    /// step with it. (At the join's end they close in repair mode: no packet.)
    func enterOneWay(_ c: Connection) {
        var l = linger(l_onoff: 1, l_linger: 0)
        for fd in [c.down, c.up] {
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        }
        c.oneWayJoined = true
        c.joinPrepared = false
        pendingSplices.remove(c.id)
        c.stage = .relaying
        c.joinReady = true
        if c.oneWay == .toClient {
            c.toClient.paused = true
            c.toServer.paused = false
        } else {
            c.toServer.paused = true
            c.toClient.paused = false
        }
        spliceCounts.oneWay += 1
        logger.debug("\(c.client) -> \(c.server): joined \(c.oneWay?.rawValue ?? "?") with \(c.backend.map { "\($0)" } ?? "?"), the other direction relayed (#\(c.id))")
        refreshInterest(c)
        service(c, fd: -1, events: 0)
    }

    /// The relayed direction is over: the other join is asked for once nothing of it is in
    /// flight (the timers ask, `joinTimer`).
    func completeOneWay(_ c: Connection) {
        c.stage = .pendingSplice
        c.joinPrepared = true
        c.spliceSince = monotonicSeconds()
        c.nextAsk = c.spliceSince
        pendingSplices.insert(c.id)
    }
}

// MARK: The engine's death in a one-way join

/// A one-way join whose engine died: its sockets follow the ends only through the engine's
/// rewriting, so the connection ends, both ends reset. In two steps:
/// 1. after `leftoverResetDelay`, the sockets are closed with a reset each. Not at once: a
///    packet the proxy sends while the dead engine's queue is still bound (its process being
///    torn down) is queued, then dropped with the queue; once it is gone the rules let the
///    proxy's packets by (fail-open). (Seen: resets sent at once lost in 3 runs of 10.)
/// 2. `tickleDelay` later, a tickle to each far end: one byte at sequence 0 from the closed
///    socket's address and port, out of the end's window, which it answers with an ACK of
///    where it is, which draws a reset from the closed port at exactly that place. The
///    sockets' resets carry their own sequence numbers: exact for the relayed direction's
///    receiver only if it had all the proxy sent (bytes queued to the dying engine are lost
///    with it), else in its window and answered with a challenge ACK, which Linux sends at
///    most every 500 ms per connection (`tcp_invalid_ratelimit`), and the far end had just
///    answered the sockets' own out-of-step packets: skipped (seen: a backend that only read
///    the body left waiting). The tickle carries a byte because that limit is for pure ACKs
///    only: a segment with data out of the window is always answered. An end already reset
///    answers the tickle with a reset of its own (no connection), which the closed port
///    ignores.
struct OneWayLeftover {
    var at: Double
    let down: Int32
    let up: Int32
    /// (closed socket's address, its far end) for the tickles: the client's side, the backend's.
    let ends: [(SocketAddress, SocketAddress)]
    var socketsClosed = false

    init(_ c: Relay.Connection, at: Double) {
        self.at = at
        down = c.down
        up = c.up
        var ends = [(c.server, c.client)]
        if let local = c.local, let backend = c.backend { ends.append((local, backend)) }
        self.ends = ends
    }
}

extension Relay {
    static let leftoverResetDelay = 0.25
    static let tickleDelay = 0.1

    /// Takes the leftovers' steps that are due; returns how soon the next one is.
    func resetLeftovers(now: Double) -> Double? {
        guard !leftovers.isEmpty else { return nil }
        for i in leftovers.indices where now >= leftovers[i].at {
            if !leftovers[i].socketsClosed {
                abortSocket(leftovers[i].down)
                abortSocket(leftovers[i].up)
                leftovers[i].socketsClosed = true
                leftovers[i].at = now + Relay.tickleDelay
            } else {
                for (from, to) in leftovers[i].ends { tickle(from: from, to: to) }
                leftovers[i].at = .infinity
            }
        }
        leftovers.removeAll { $0.at == .infinity }
        return leftovers.map { $0.at - now }.min()
    }

    /// One byte at sequence and acknowledgement 0 from `from` to `to` (the balancer mark: never
    /// translated by an engine, queued fail-open).
    func tickle(from: SocketAddress, to: SocketAddress) {
        guard let tickler else { return }
        let packet = TCPPacketSpec(source: from.address, destination: to.address, sourcePort: from.port, destinationPort: to.port,
                                   sequenceNumber: SeqNumber(0), flags: .ack, window: 0, payload: [0]).bytes()
        do {
            try packet.withUnsafeBytes { try tickler.send($0, to: to.address) }
        } catch {
            logger.warning("tickle to \(to): \(error)")
        }
    }
}
