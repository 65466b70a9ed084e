#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import SpliceControlProtocol
import SpliceWire
import Synchronization

/// The balancer's health checks (Docs/balancer.md): a thread of its own checks every member of
/// every pool that has a check, each at its pool's interval, by a TCP connect or an HTTP
/// request; a member that fails `fall` checks in a row is down (the relay picks no member that
/// is down) until it passes `rise` in a row. The relay also reports a member whose connect was
/// refused: it is down at once (a passive check), and the active checks bring it back.
final class HealthChecker: Sendable {
    struct Member: Hashable, Sendable {
        var pool: String
        var key: String
    }

    private struct Record {
        var fails = 0
        var passes = 0
        var down = false
        var due = 0.0
    }

    private struct State {
        var pools: [Pool] = []
        var records: [Member: Record] = [:]
        /// Members the active checks took out since the relay last asked: their joined flows
        /// are to be reset.
        var newlyDown: [Backend] = []
    }

    private let state = Mutex(State())
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    /// The pools in force (pushed with the rules): members no longer in a pool are forgotten.
    func update(pools: [Pool]) {
        state.withLock { s in
            s.pools = pools
            var keep: Set<Member> = []
            for p in pools where p.check != nil { for b in p.backends { keep.insert(Member(pool: p.name, key: b.key)) } }
            s.records = s.records.filter { keep.contains($0.key) }
        }
    }

    /// The keys of `pool`'s members that are down.
    func down(pool: String) -> Set<String> {
        state.withLock { s in
            var out: Set<String> = []
            for (m, r) in s.records where m.pool == pool && r.down { out.insert(m.key) }
            return out
        }
    }

    /// The members the active checks took out since the last call (the relay asks the engine
    /// to reset the flows joined to them: a joined flow goes on past the proxy, and nothing
    /// else would end it while its backend does not answer).
    func takeNewlyDown() -> [Backend] {
        state.withLock { s in
            defer { s.newlyDown = [] }
            return s.newlyDown
        }
    }

    /// A connect to `key` was refused or failed: down at once, whatever the checks said.
    func failed(pool: String, key: String) {
        let changed = state.withLock { s -> Bool in
            let m = Member(pool: pool, key: key)
            var r = s.records[m] ?? Record()
            let was = r.down
            r.down = true
            r.passes = 0
            s.records[m] = r
            return !was
        }
        if changed { logger.warning("pool '\(pool)': member \(key) is down (a connection to it failed)") }
    }

    func start() {
        Thread.detachNewThread { [self] in run() }
    }

    private func run() {
        while true {
            let now = monotonicSeconds()
            // The checks due now, taken under the lock, run outside it.
            let due: [(Member, Backend, HealthCheck)] = state.withLock { s in
                var out: [(Member, Backend, HealthCheck)] = []
                for p in s.pools {
                    guard let c = p.check else { continue }
                    for b in p.backends {
                        let m = Member(pool: p.name, key: b.key)
                        var r = s.records[m] ?? Record()
                        if r.due <= now {
                            r.due = now + Double(c.intervalMilliseconds) / 1000
                            out.append((m, b, c))
                        }
                        s.records[m] = r
                    }
                }
                return out
            }
            for (m, b, c) in due {
                let ok = HealthChecker.check(b, c)
                let transition = state.withLock { s -> String? in
                    guard var r = s.records[m] else { return nil }
                    defer { s.records[m] = r }
                    if ok {
                        r.fails = 0
                        r.passes += 1
                        if r.down && r.passes >= c.rise { r.down = false; return "up" }
                    } else {
                        r.passes = 0
                        r.fails += 1
                        if !r.down && r.fails >= c.fall {
                            r.down = true
                            if !s.newlyDown.contains(where: { $0.key == b.key }) { s.newlyDown.append(b) }
                            return "down"
                        }
                    }
                    return nil
                }
                if let t = transition {
                    logger.warning("pool '\(m.pool)': member \(m.key) is \(t) (\(c.kind.rawValue) check)")
                }
            }
            usleep(20_000)
        }
    }

    /// One check of one member: true when it passed.
    static func check(_ b: Backend, _ c: HealthCheck) -> Bool {
        guard let address = IPAddress(b.address) else { return false }
        let target = SocketAddress(address: address, port: b.port)
        let fd = newStreamSocket(family: target.family)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let deadline = monotonicSeconds() + Double(c.timeoutMilliseconds) / 1000
        func wait(_ events: Int16) -> Bool {
            let left = Int32(max(0, (deadline - monotonicSeconds()) * 1000))
            var p = pollfd(fd: fd, events: events, revents: 0)
            return poll(&p, 1, left) == 1 && p.revents & events != 0
        }
        let rc = target.withSockaddr { connect(fd, $0, $1) }
        guard rc == 0 || errno == EINPROGRESS else { return false }
        guard wait(Int16(POLLOUT)) else { return false }
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
        guard err == 0 else { return false }
        guard c.kind == .http else { return true }
        let request = "GET \(c.path ?? "/") HTTP/1.0\r\nHost: \(target)\r\nUser-Agent: tcpsplice-health-check\r\nConnection: close\r\n\r\n"
        let sent = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        guard sent == request.utf8.count else { return false }
        // The status line, "HTTP/1.x NNN ...", as many reads as it takes (a segment may end
        // inside it).
        var head: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while head.count < 12 || (!head.contains(UInt8(ascii: "\n")) && head.count < 64) {
            guard wait(Int16(POLLIN)) else { return false }
            let n = recv(fd, &buf, buf.count, 0)
            guard n > 0 else { return false }
            head.append(contentsOf: buf[0..<n])
        }
        let line = String(decoding: head.prefix(64), as: UTF8.self)
        guard line.hasPrefix("HTTP/"), let space = line.firstIndex(of: " ") else { return false }
        let status = Int(line[line.index(after: space)...].prefix(3))
        // The rest of the answer read to its end (the server closes: "Connection: close"),
        // within the check's time and `drainLimit` bytes: closed with bytes unread, the socket
        // would reset the server as it writes, an error in its log for every check.
        var left = drainLimit - head.count
        while left > 0, wait(Int16(POLLIN)) {
            let n = recv(fd, &buf, buf.count, 0)
            guard n > 0 else { break }
            left -= n
        }
        return status == (c.expectStatus ?? 200)
    }

    /// At most this much of an answer is read before the check's socket is closed.
    static let drainLimit = 64 << 10
}
