#if canImport(Glibc)
import Glibc
#endif
import CLinuxSupport
import Logging
import SpliceWire

/// The transparent relay: accepts connections TPROXY delivers, opens the upstream connection
/// from the client's own address and port (`IP_TRANSPARENT`), and moves bytes both ways with
/// splice(2) through a pipe per direction, pushing data as the receiving socket frees space
/// (seed 004's push model). Pipe capacity, the relay buffer, is the memory budget divided by
/// the number of active connections, between 64 KiB and 1 MiB. Half-closes are passed on in
/// order: a direction's FIN goes out after its last byte. One thread, one epoll set.
final class Relay {
    struct Settings {
        var listenPort: UInt16
        var memoryBudget: Int
        var ipv6: Bool
    }

    /// One direction of a connection: bytes from `source` to `destination` through a pipe.
    struct Direction {
        var source: Int32
        var destination: Int32
        var pipeRead: Int32
        var pipeWrite: Int32
        var capacity: Int
        var inPipe = 0
        var sourceDone = false
        var shutdownSent = false
        var bytes: UInt64 = 0
    }

    final class Connection {
        let id: Int
        let down: Int32
        let up: Int32
        let client: SocketAddress
        let server: SocketAddress
        var upConnected = false
        var toServer: Direction
        var toClient: Direction
        init(id: Int, down: Int32, up: Int32, client: SocketAddress, server: SocketAddress,
             toServer: Direction, toClient: Direction) {
            self.id = id
            self.down = down
            self.up = up
            self.client = client
            self.server = server
            self.toServer = toServer
            self.toClient = toClient
        }
    }

    let settings: Settings
    let logger: Logger
    let epoll: Int32
    var listeners: [Int32] = []
    var connections: [Int: Connection] = [:]
    /// fd → connection id
    var owners: [Int32: Int] = [:]
    var nextID = 1
    /// Called before the relay closes a socket on purpose (towardClient: the down socket).
    var announceClose: (Connection, Bool, Bool) -> Void = { _, _, _ in }
    var totalAccepted: UInt64 = 0

    static let minimumPipe = 64 * 1024
    static let maximumPipe = 1024 * 1024

    init(settings: Settings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw RelayError("epoll_create1: \(String(cString: strerror(errno)))") }
        try listen(family: AF_INET)
        if settings.ipv6 { try listen(family: AF_INET6) }
    }

    private func listen(family: Int32) throws {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RelayError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        try setTransparent(fd, family: family)
        if family == AF_INET6 {
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let any = SocketAddress(address: family == AF_INET ? IPAddress(ipv4: 0) : IPAddress(high: 0, low: 0),
                                port: settings.listenPort)
        let rc = any.withSockaddr { bind(fd, $0, $1) }
        guard rc == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw RelayError("binding the transparent listener to \(any): \(e)")
        }
        guard Glibc.listen(fd, 1024) == 0 else { throw RelayError("listen: \(String(cString: strerror(errno)))") }
        listeners.append(fd)
        watch(fd, events: UInt32(EPOLLIN.rawValue), add: true)
    }

    func setTransparent(_ fd: Int32, family: Int32) throws {
        var one: Int32 = 1
        let rc = family == AF_INET
            ? setsockopt(fd, Int32(IPPROTO_IP), TCPSPLICE_IP_TRANSPARENT, &one, socklen_t(MemoryLayout<Int32>.size))
            : setsockopt(fd, Int32(IPPROTO_IPV6), TCPSPLICE_IPV6_TRANSPARENT, &one, socklen_t(MemoryLayout<Int32>.size))
        guard rc == 0 else { throw RelayError("IP_TRANSPARENT: \(String(cString: strerror(errno))) (needs root / CAP_NET_ADMIN)") }
    }

    func watch(_ fd: Int32, events: UInt32, add: Bool = false) {
        var ev = epoll_event()
        ev.events = events
        ev.data.fd = fd
        _ = epoll_ctl(epoll, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev)
    }

    /// Waits for events up to `timeoutMilliseconds` and handles them. `extra` fds (the control
    /// socket) are reported back to the caller.
    func poll(timeoutMilliseconds: Int32, extra: (Int32) -> Void) {
        var events = [epoll_event](repeating: epoll_event(), count: 128)
        let n = epoll_wait(epoll, &events, Int32(events.count), timeoutMilliseconds)
        guard n > 0 else { return }
        for i in 0..<Int(n) {
            let fd = events[i].data.fd
            if listeners.contains(fd) {
                acceptAll(fd)
            } else if let id = owners[fd], let c = connections[id] {
                service(c, fd: fd, events: events[i].events)
            } else {
                extra(fd)
            }
        }
    }

    // MARK: Accepting

    private func acceptAll(_ listener: Int32) {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            totalAccepted += 1
            open(down: fd)
        }
    }

    private func pipeSize() -> Int {
        let share = settings.memoryBudget / max(1, 2 * (connections.count + 1))
        var size = min(Relay.maximumPipe, max(Relay.minimumPipe, share))
        size = (size + 4095) & ~4095
        return size
    }

    private func makePipe(capacity: Int) -> (Int32, Int32, Int)? {
        var fds: [Int32] = [0, 0]
        guard pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { return nil }
        let got = fcntl(fds[1], TCPSPLICE_F_SETPIPE_SZ, Int32(capacity))
        return (fds[0], fds[1], got > 0 ? Int(got) : 65536)
    }

    private func open(down: Int32) {
        // With TPROXY the accepted socket's local address is the server the client asked for.
        guard let server = SocketAddress.local(of: down), let client = SocketAddress.peer(of: down) else {
            close(down)
            return
        }
        let up = socket(client.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard up >= 0 else { abortSocket(down); return }
        var one: Int32 = 1
        setsockopt(up, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(down, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(up, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        do { try setTransparent(up, family: client.family) } catch {
            logger.error("\(error)")
            close(up); abortSocket(down); return
        }
        // The upstream connection leaves from the client's own address and port.
        guard client.withSockaddr({ bind(up, $0, $1) }) == 0 else {
            logger.warning("cannot bind upstream to \(client): \(String(cString: strerror(errno)))")
            close(up); abortSocket(down); return
        }
        let rc = server.withSockaddr { connect(up, $0, $1) }
        guard rc == 0 || errno == EINPROGRESS else {
            logger.warning("cannot connect \(client) -> \(server): \(String(cString: strerror(errno)))")
            close(up); abortSocket(down); return
        }
        let size = pipeSize()
        guard let (r1, w1, c1) = makePipe(capacity: size), let (r2, w2, c2) = makePipe(capacity: size) else {
            close(up); abortSocket(down); return
        }
        let id = nextID
        nextID += 1
        let c = Connection(id: id, down: down, up: up, client: client, server: server,
                           toServer: Direction(source: down, destination: up, pipeRead: r1, pipeWrite: w1, capacity: c1),
                           toClient: Direction(source: up, destination: down, pipeRead: r2, pipeWrite: w2, capacity: c2))
        c.upConnected = rc == 0
        connections[id] = c
        owners[down] = id
        owners[up] = id
        watch(down, events: interest(c, fd: down), add: true)
        watch(up, events: interest(c, fd: up), add: true)
        logger.debug("relaying \(client) -> \(server) (#\(id), pipes \(c1) bytes)")
    }

    // MARK: Moving bytes

    private func interest(_ c: Connection, fd: Int32) -> UInt32 {
        var ev = UInt32(EPOLLRDHUP.rawValue)
        if fd == c.down {
            if !c.toServer.sourceDone && c.toServer.inPipe < c.toServer.capacity { ev |= UInt32(EPOLLIN.rawValue) }
            if c.toClient.inPipe > 0 { ev |= UInt32(EPOLLOUT.rawValue) }
        } else {
            if !c.upConnected {
                return ev | UInt32(EPOLLOUT.rawValue)
            }
            if !c.toClient.sourceDone && c.toClient.inPipe < c.toClient.capacity { ev |= UInt32(EPOLLIN.rawValue) }
            if c.toServer.inPipe > 0 { ev |= UInt32(EPOLLOUT.rawValue) }
        }
        return ev
    }

    private func service(_ c: Connection, fd: Int32, events: UInt32) {
        if fd == c.up && !c.upConnected {
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(c.up, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 {
                logger.warning("upstream \(c.client) -> \(c.server) failed: \(String(cString: strerror(err)))")
                abort(c)
                return
            }
            if events & UInt32(EPOLLOUT.rawValue) == 0 { return }
            c.upConnected = true
        }
        var ok = pump(&c.toServer, connected: c.upConnected, connection: c)
        if ok { ok = pump(&c.toClient, connected: true, connection: c) }
        guard ok else {
            abort(c)
            return
        }
        if c.toServer.shutdownSent && c.toClient.shutdownSent {
            finish(c)
            return
        }
        watch(c.down, events: interest(c, fd: c.down))
        watch(c.up, events: interest(c, fd: c.up))
    }

    /// Moves what it can; false on a connection error.
    private func pump(_ d: inout Direction, connected: Bool, connection c: Connection) -> Bool {
        let flags = TCPSPLICE_SPLICE_F_MOVE | TCPSPLICE_SPLICE_F_NONBLOCK
        while true {
            if d.inPipe > 0 && connected {
                // No SPLICE_F_MORE: it sends with MSG_MORE, which corks a short segment (a
                // request) in the socket until a timer pushes it, ~200 ms later. The kernel
                // sets MSG_MORE itself between the buffers of one splice.
                let n = tcpsplice_splice(d.pipeRead, d.destination, d.inPipe, flags)
                if n > 0 {
                    d.inPipe -= n
                    d.bytes += UInt64(n)
                    continue
                }
                if n < 0 && (errno == EAGAIN || errno == EINTR) { break }
                return false
            }
            if d.sourceDone || d.inPipe >= d.capacity { break }
            let n = tcpsplice_splice(d.source, d.pipeWrite, d.capacity - d.inPipe, flags)
            if n > 0 {
                d.inPipe += n
                continue
            }
            if n == 0 {
                d.sourceDone = true
                continue
            }
            if errno == EAGAIN || errno == EINTR { break }
            return false
        }
        if d.sourceDone && d.inPipe == 0 && !d.shutdownSent && connected {
            // The direction's last byte is out: pass the half-close on (and say so first).
            announceClose(c, d.destination == c.down, false)
            shutdown(d.destination, Int32(SHUT_WR))
            d.shutdownSent = true
        }
        return true
    }

    // MARK: Closing

    private func finish(_ c: Connection) {
        logger.debug("done \(c.client) -> \(c.server): \(c.toServer.bytes) up, \(c.toClient.bytes) down")
        release(c)
    }

    /// Ends a connection abortively (RST both ways), announcing it to the engine first.
    func abort(_ c: Connection) {
        announceClose(c, true, true)
        announceClose(c, false, true)
        abortSocket(c.down)
        abortSocket(c.up, closeIt: false)
        release(c, closeSockets: false)
        close(c.up)
    }

    private func abortSocket(_ fd: Int32, closeIt: Bool = true) {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        if closeIt { close(fd) }
    }

    private func release(_ c: Connection, closeSockets: Bool = true) {
        connections[c.id] = nil
        owners[c.down] = nil
        owners[c.up] = nil
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, c.down, nil)
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, c.up, nil)
        for fd in [c.toServer.pipeRead, c.toServer.pipeWrite, c.toClient.pipeRead, c.toClient.pipeWrite] { close(fd) }
        if closeSockets {
            close(c.down)
            close(c.up)
        }
    }

    /// Drops every connection without a word on the wire (the engine is gone: our packets
    /// would be dropped anyway, and the ends go on in bypass).
    func dropAll() {
        for c in Array(connections.values) {
            abortSocket(c.down)
            abortSocket(c.up, closeIt: false)
            release(c, closeSockets: false)
            close(c.up)
        }
    }
}

struct RelayError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
