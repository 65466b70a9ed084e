#if canImport(Glibc)
import Glibc
#endif
import SpliceControlProtocol

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
