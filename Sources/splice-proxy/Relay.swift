#if canImport(Glibc)
import Glibc
#endif
import CLinuxSupport
import Logging
import SpliceRules
import SpliceControlProtocol
import SpliceWire
import SpliceKernel

/// The transparent relay: accepts connections TPROXY delivers, opens the upstream connection
/// from the client's own address and port (`IP_TRANSPARENT`), and moves bytes both ways with
/// splice(2) through a pipe, pushing data as the receiving socket frees space (seed 004's push
/// model). A direction holds a pipe only while bytes are in it: pipes come from a shared pool,
/// so a connection costs two descriptors, not six, and thousands fit under the descriptor
/// limit. A pipe's capacity, the relay buffer, is the memory budget divided by the number of
/// active connections, between 64 KiB and 1 MiB. At the descriptor budget the relay stops
/// accepting (clients wait in the listener's queue, as with a busy server) and a direction
/// that finds no pipe waits for one. Half-closes are passed on in order: a direction's FIN
/// goes out after its last byte. One thread, one epoll set.
final class Relay {
    struct Settings {
        var listenPort: UInt16
        var memoryBudget: Int
        var ipv6: Bool
        /// How long a splice may take to drain before the proxy steps out anyway (the senders
        /// then resend what the relay held: the engine never acknowledged it to them).
        var drainBound = 2.0
        /// How long every splice stays pending at least (tests that need splices caught
        /// pending; 0 in service).
        var minimumPending = 0.0
        /// The balancer's service addresses (Balancer.swift), each with the pool its
        /// connections go to when the deciding rule names none.
        var services: [Service] = []
        /// The local ports the connections to backends leave from (the rules queue their
        /// answers), and the mark their sockets carry (the rules queue their packets).
        var balancerPorts: ClosedRange<UInt16> = 61000...65535
        var balancerMark: UInt32 = 0x5a5e
        /// The mark a connection's two sockets take once the proxy knows it relays the
        /// connection to its end (no join can come): the rules queue none of their packets
        /// then (`Relay.leaveQueue`). Nil: relayed connections stay queued, watched by the
        /// engine to their end.
        var relayMark: UInt32? = 0x5a5f
        /// A connection relayed to its end leaves the queue once this many bytes went through
        /// it: a short one is cheaper left in the queue (measured: on two cores, the queue's
        /// work is done by spliced's thread beside the proxy's; out of the queue the proxy's
        /// own writes do it, 10% fewer short requests a second), a long one gains (a relayed
        /// 64 MiB download ~1.5x faster; Docs/benchmarks.md).
        var relayLeaveAfter: UInt64 = 65_536
        /// Add `X-Forwarded-For: <client>` to the requests it balances (the bytes added
        /// become a sequence delta the join accounts for).
        var forwardedFor = false
        /// The MSS the service listeners advertise (nil: the route's).
        var serviceMSS: Int?
        /// Per-request rules: responses with more bytes than this left after their head are
        /// joined, smaller ones relayed; and how long a connection back from a response waits
        /// for its next request.
        var perRequestJoinAbove: UInt64 = 16384
        var keepAliveTimeout = 30.0
    }

    /// One direction of a connection: bytes from `source` to `destination` through a pipe,
    /// held only while bytes are in it (`pipe` nil otherwise).
    struct Direction {
        var source: Int32
        var destination: Int32
        var pipe: Pipe?
        var inPipe = 0
        /// No pipe was free: the source is not read until one is.
        var waitingForPipe = false
        var capacity: Int { pipe?.capacity ?? Relay.minimumPipe }
        var sourceDone = false
        var shutdownSent = false
        var bytes: UInt64 = 0
        /// Bytes read from the source (a balancer join's accounting: a proxy may write more or
        /// fewer than it read).
        var bytesRead: UInt64 = 0
        /// Read through userspace rather than a pipe, so that the splice rules can look at the
        /// first bytes (the request, the response head): `held` keeps every byte read so (up
        /// to `maxPeekLength`), and its bytes from `heldSent` on are written on before any pipe
        /// byte.
        var inspect = false
        var held: [UInt8] = []
        var heldSent = 0
        /// Not read for now (a per-request connection: the client's next request waits for
        /// the response; the backend is not read between responses).
        var paused = false
        /// Read no further than this many bytes in all (a per-request connection: the end of
        /// the response).
        var readLimit: UInt64 = .max
        /// How many bytes may still be read (0: none for now).
        var readRoom: Int { paused ? 0 : Int(min(UInt64(Int.max), readLimit &- min(readLimit, bytesRead))) }
        /// Nothing held by the relay in this direction (nothing unsent, nothing in a pipe).
        var empty: Bool { heldSent == held.count && inPipe == 0 }
        /// The source may be read into the pipe now: not at its end, room in the pipe and in
        /// what may be read, a pipe to be had.
        var pipeReadable: Bool { !sourceDone && inPipe < capacity && !waitingForPipe && readRoom > 0 }

        /// The rules decided on the held bytes, but wait for more of them (a per-request
        /// connection's request body) before they may go: read on meanwhile.
        var gathering = false

        /// The rules have seen what they need: later bytes go through a pipe again, and the
        /// held ones are let go once written.
        mutating func stopInspecting() {
            inspect = false
            gathering = false
            if heldSent == held.count { held = []; heldSent = 0 }
        }
    }

    struct Pipe {
        var read: Int32
        var write: Int32
        var capacity: Int
    }

    final class Connection {
        let id: Int
        let down: Int32
        let up: Int32
        let client: SocketAddress
        let server: SocketAddress
        var upConnected = false
        /// The epoll interest last set for each socket (set again only when it changes).
        var downInterest: UInt32 = 0
        var upInterest: UInt32 = 0
        var toServer: Direction
        var toClient: Direction
        /// Where the connection stands with its splice rules (Decisions.swift).
        var stage = Stage.relaying
        /// The action decided and the rule that gave it (nil: the default action).
        var action: RuleAction?
        var rule: Int?
        /// Rules whose request part matched and which wait for the response head, and what
        /// applies if none of them matches it.
        var candidates: [Int] = []
        var fallback = RuleAction.proxy
        var fallbackRule: Int?
        /// When the first bytes are given up on; when the splice was asked for; when the
        /// engine may next be asked to step out.
        var deadline = 0.0
        var spliceSince = 0.0
        var nextAsk = 0.0
        /// A balancer connection (Balancer.swift): the service it came to, whether its up
        /// socket was connected yet (it is, once the backend is picked), the backend, the
        /// up socket's local address, the pool.
        var service: Int?
        var upStarted = true
        var backend: SocketAddress?
        var local: SocketAddress?
        var pool: String?
        var joinPrepared = false
        /// Members tried again after a failed connect.
        var retries = 0
        /// Connects to the same member refused (ECONNREFUSED), each retried from another port.
        var portRetries = 0
        /// The engine has shut the windows for the join (or refused it): the request may go to
        /// the backend now. Written before, the backend could answer at once and close, and
        /// the join would come too late.
        var joinReady = false
        /// The response is not read until the engine answers `prepare` (`backendConnected`).
        var pausedForPrepare = false
        /// Keep-alive re-routing (Balancer.swift): this connection's requests are decided one
        /// by one (its rule said `perRequest`), the backend's FIN after a response is processed
        /// (`fin process`), the response's end in the bytes read from the backend, the bytes
        /// the connection came back from a join, the backend will close (or closed) its
        /// connection.
        var perRequest = false
        var finProcess = false
        var requestIsHead = false
        var idleCheck = false
        var responseStart: UInt64 = 0
        var responseEnd: UInt64 = 0
        /// A chunked response being relayed (`relayingChunked`): its framing, and how far into
        /// `toClient.held` the framing has been read.
        var chunked = ChunkedBody()
        var chunkParsed = 0
        /// The join asked for (or made) is for the rest of a chunked response, from inside a
        /// chunk up to `toClient.readLimit` (`chunkJoined` once made).
        var chunkJoin = false
        /// A keep-alive connection's idle backend connections to other members than its
        /// current one, by member ("address:port"): taken again when a request goes there.
        var parked: [String: ParkedBackend] = [:]
        var handedBack = false
        var backendClosing = false
        /// A one-way join (OneWay.swift): the direction its rule joins, and whether it is
        /// joined (the proxy then relays the other direction only).
        var oneWay: OneWay?
        var oneWayJoined = false
        /// Relayed to its end and out of the queue (`leaveQueue`): its sockets are
        /// transparent and carry the relay mark.
        var leftQueue = false
        /// The next request is held back until its backend is chosen; the response head is held
        /// back until it is looked at.
        var holdUp: Bool { handedBack && stage == .deciding }
        var holdResponse: Bool { perRequest && stage == .awaitingResponse }
        /// Bytes may be written to the up socket.
        var mayWriteUp: Bool { upConnected && !holdUp && (service == nil || action != .splice || joinReady) }
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
    /// The splice rules spliced pushed (Decisions.swift), how to send it a message, and the
    /// connections waiting for their first bytes or for their splice to drain.
    var rules = RuleSet.empty
    var sendToEngine: (ControlRequest) -> Void = { _ in }
    var deciding = Set<Int>()
    var pendingSplices = Set<Int>()
    /// One-way joins the engine's death left, whose ends are reset a moment later (OneWay.swift,
    /// `resetLeftovers`), and the raw socket their tickles go through (nil: none could be opened).
    var leftovers: [OneWayLeftover] = []
    var tickler: RawInjector?
    /// Connections by their tuple, for the engine's answers.
    var byTuple: [TupleKey: Int] = [:]
    var spliceCounts = SpliceTally()
    var listeners: [Int32] = []
    var connections: [Int: Connection] = [:]
    /// fd → connection id
    var owners: [Int32: Int] = [:]
    var nextID = 1
    /// Empty pipes ready for any direction.
    var pipePool: [Pipe] = []
    var pipesOpen = 0
    /// Backend connections parked by keep-alive connections (Balancer.swift, `park`).
    var parkedOpen = 0
    /// Connections with a direction waiting for a pipe, served as pipes come back.
    var pipeWaiters: [Int] = []
    /// Where an inspected direction's bytes are read before they join its `held` bytes (one
    /// buffer for all: read, then copied, in one turn; `held` grows by what came only).
    let peekBuffer = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: maxPeekLength)
    /// The descriptor limit, and what is kept aside for everything but connections and pipes.
    let descriptorLimit: Int
    static let reservedDescriptors = 64
    /// Accepting paused at the descriptor budget.
    var acceptPaused = false
    /// Called before the relay closes a socket on purpose (towardClient: the down socket).
    var announceClose: (Connection, Bool, Bool) -> Void = { _, _, _ in }
    var totalAccepted: UInt64 = 0
    /// The balancer's listeners (fd -> service index), member picking, open connections per
    /// backend, the next local port to try.
    var serviceListeners: [Int32: Int] = [:]
    var balancer = Balancer()
    var health: HealthChecker?
    /// spliced is on the control channel (joins can be asked for).
    var engineConnected = false
    var activeByBackend: [String: Int] = [:]
    var nextLocalPort: UInt16 = 0

    static let minimumPipe = 64 * 1024
    static let backlog: Int32 = 65535
    static let maximumPooledPipes = 1024
    static let maximumAcceptsPerRound = 64

    /// Raises the descriptor limit as far as the kernel allows (root with CAP_SYS_RESOURCE may
    /// raise the hard limit up to fs.nr_open; otherwise the soft limit goes up to the hard
    /// one). Returns the limit in force.
    @discardableResult
    static func raiseDescriptorLimit() -> Int {
        var lim = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim)
        var want = rlim_t(1 << 20)
        let fd = Glibc.open("/proc/sys/fs/nr_open", O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            var text = [UInt8](repeating: 0, count: 32)
            let n = read(fd, &text, text.count)
            close(fd)
            var v: rlim_t = 0
            for c in text.prefix(max(0, n)) where c >= 0x30 && c <= 0x39 { v = v * 10 + rlim_t(c - 0x30) }
            if v > 0 { want = v }
        }
        if lim.rlim_cur < want {
            var raised = rlimit(rlim_cur: want, rlim_max: max(want, lim.rlim_max))
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) != 0 {
                raised = rlimit(rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max)
                _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised)
            }
            getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim)
        }
        return Int(lim.rlim_cur)
    }
    static let maximumPipe = 1024 * 1024

    init(settings: Settings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        descriptorLimit = Relay.raiseDescriptorLimit()
        logger.info("descriptor limit \(descriptorLimit): up to about \((descriptorLimit - Relay.reservedDescriptors) / 2) connections at once (two sockets each, pipes while data is in flight)")
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw RelayError("epoll_create1: \(String(cString: strerror(errno)))") }
        try listen(family: AF_INET)
        if settings.ipv6 { try listen(family: AF_INET6) }
        for (i, s) in settings.services.enumerated() { try listenService(s, index: i) }
    }

    deinit { peekBuffer.deallocate() }

    private func listen(family: Int32) throws {
        let fd = Relay.streamSocket(family)
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
        // The kernel caps the backlog at net.core.somaxconn (Docs/deploy.md): a crowd of
        // clients whose handshakes complete at once must not overflow the accept queue.
        guard Glibc.listen(fd, Relay.backlog) == 0 else { throw RelayError("listen: \(String(cString: strerror(errno)))") }
        listeners.append(fd)
        watch(fd, events: UInt32(EPOLLIN.rawValue), add: true)
    }

    /// A non-blocking stream socket for a listener or a connection of the relay, with urgent
    /// data kept in line (SO_OOBINLINE; an accepted socket takes it from its listener): without
    /// it the kernel takes an urgent byte out of the stream and the relay would lose it. Where
    /// splice(2) stops before such a byte, `pump` reads it as an ordinary one.
    static func streamSocket(_ family: Int32) -> Int32 {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd >= 0 {
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        return fd
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
        defer { wakePipeWaiters() }
        for i in 0..<Int(n) {
            let fd = events[i].data.fd
            if listeners.contains(fd) {
                acceptAll(fd, service: serviceListeners[fd])
            } else if let id = owners[fd], let c = connections[id] {
                service(c, fd: fd, events: events[i].events)
            } else {
                extra(fd)
            }
        }
    }

    // MARK: Accepting

    /// Descriptors in use by connections, pipes and parked backend connections.
    var descriptorsInUse: Int { 2 * connections.count + 2 * pipesOpen + parkedOpen }

    /// Room for one more connection (its two sockets and, at need, a pipe pair)?
    var canAccept: Bool { descriptorsInUse + 6 + Relay.reservedDescriptors <= descriptorLimit }

    /// Room for one more pipe (two descriptors)?
    var roomForPipe: Bool { descriptorsInUse + 2 + Relay.reservedDescriptors <= descriptorLimit }

    /// Accepts at most `maximumAcceptsPerRound` connections, then serves the others: a crowd
    /// arriving at once is taken in steps (the listener stays readable, epoll reports it
    /// again), so that the connections already open move their bytes meanwhile rather than
    /// wait behind thousands of accepts (HAProxy's `tune.maxaccept` does the same). No gain
    /// was measurable in the 10,000-connection crowd, whose times swing with the engine's
    /// queue (Docs/benchmarks.md); kept for the fairness.
    private func acceptAll(_ listener: Int32, service: Int?) {
        for _ in 0..<Relay.maximumAcceptsPerRound {
            guard canAccept else {
                pauseAccepting()
                return
            }
            // Non-blocking and close-on-exec from the start, the client's address with it (no
            // fcntl, no getpeername: three system calls a connection fewer).
            var peerStorage = sockaddr_storage()
            var peerLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &peerStorage) {
                tcpsplice_accept4(listener, $0, &peerLength, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            }
            if fd < 0 {
                if errno == EMFILE || errno == ENFILE { pauseAccepting() }
                return
            }
            totalAccepted += 1
            guard let client = SocketAddress(peerStorage) else {
                close(fd)
                continue
            }
            if let service { openService(down: fd, client: client, service: service) } else { open(down: fd, client: client) }
        }
    }

    /// At the descriptor budget: the listeners are not watched until a connection ends; the
    /// clients wait in their accept queues (their handshakes are done, their data is kept).
    private func pauseAccepting() {
        guard !acceptPaused else { return }
        acceptPaused = true
        for l in listeners { watch(l, events: 0) }
        logger.warning("descriptor budget reached (\(connections.count) connections, \(pipesOpen) pipes, limit \(descriptorLimit)): not accepting until connections end")
    }

    private func resumeAcceptingIfRoom() {
        guard acceptPaused, canAccept else { return }
        acceptPaused = false
        for l in listeners { watch(l, events: UInt32(EPOLLIN.rawValue)) }
        logger.info("accepting again (\(connections.count) connections)")
    }

    /// The pipe size for a new transfer: the connection's share of the memory budget, within
    /// `minimumPipe...maximumPipe`, rounded up to a power of two pages as the kernel rounds
    /// `F_SETPIPE_SZ` (so that a pooled pipe of that size is taken as it is: compared with the
    /// unrounded share, nearly every pooled pipe was resized, a ring allocated and freed per
    /// connection).
    private func pipeSize() -> Int {
        let share = settings.memoryBudget / max(1, 2 * (connections.count + 1))
        let size = min(Relay.maximumPipe, max(Relay.minimumPipe, share))
        var pages = 1
        while pages * Relay.pageSize < size { pages <<= 1 }
        return pages * Relay.pageSize
    }
    static let pageSize = max(4096, Int(sysconf(Int32(_SC_PAGESIZE))))

    /// A pipe for `d`, from the pool or new while the descriptor budget allows; sized to the
    /// current share of the memory budget.
    private func acquirePipe(_ d: inout Direction) -> Bool {
        let want = pipeSize()
        var p: Pipe
        if let pooled = pipePool.popLast() {
            p = pooled
        } else {
            guard roomForPipe else { return false }
            var fds: [Int32] = [0, 0]
            guard pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { return false }
            pipesOpen += 1
            p = Pipe(read: fds[0], write: fds[1], capacity: 65536)
        }
        if p.capacity != want {
            let got = fcntl(p.write, TCPSPLICE_F_SETPIPE_SZ, Int32(want))
            if got > 0 { p.capacity = Int(got) }
        }
        d.pipe = p
        return true
    }

    /// Gives an empty pipe back (to the pool, or closes it when the pool is full).
    private func releasePipe(_ d: inout Direction) {
        guard let p = d.pipe else { return }
        d.pipe = nil
        if d.inPipe == 0 && pipePool.count < Relay.maximumPooledPipes {
            pipePool.append(p)
        } else {
            close(p.read)
            close(p.write)
            pipesOpen -= 1
        }
    }

    /// Serves the connections that waited for a pipe, while pipes can be had.
    private func wakePipeWaiters() {
        // In arrival order; served ones are cut off the front at once (not one removeFirst
        // each: thousands may wait). One that finds no pipe again joins the back.
        var served = 0
        while served < pipeWaiters.count && (!pipePool.isEmpty || roomForPipe) {
            let id = pipeWaiters[served]
            served += 1
            guard let c = connections[id] else { continue }
            c.toServer.waitingForPipe = false
            c.toClient.waitingForPipe = false
            service(c, fd: -1, events: 0)
        }
        if served > 0 { pipeWaiters.removeFirst(served) }
        resumeAcceptingIfRoom()
    }

    private func open(down: Int32, client: SocketAddress) {
        // With TPROXY the accepted socket's local address is the server the client asked for.
        guard let server = SocketAddress.local(of: down) else {
            close(down)
            return
        }
        let up = Relay.streamSocket(client.family)
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
        let id = nextID
        nextID += 1
        let c = Connection(id: id, down: down, up: up, client: client, server: server,
                           toServer: Direction(source: down, destination: up),
                           toClient: Direction(source: up, destination: down))
        c.upConnected = rc == 0
        connections[id] = c
        owners[down] = id
        owners[up] = id
        byTuple[tupleKey(c)] = id
        opened(c)
        c.downInterest = interest(c, fd: down)
        c.upInterest = interest(c, fd: up)
        rewatch(down, from: 0, to: c.downInterest)
        rewatch(up, from: 0, to: c.upInterest)
        logger.debug("relaying \(client) -> \(server) (#\(id))")
    }

    // MARK: Moving bytes

    func interest(_ c: Connection, fd: Int32) -> UInt32 {
        // No EPOLLRDHUP: a peer's FIN shows as readable (a read of 0) while the direction
        // reads, and once it is read the socket must go quiet. Level-triggered, RDHUP fired
        // on every wait for each socket whose peer had closed while its other half still
        // ran (nginx's FIN while the client read the answer): thousands of such sockets
        // kept the relay busy doing nothing, at three times HAProxy's CPU in a crowd.
        var ev: UInt32 = 0
        // Stepping out: nothing is read or written until the engine answers.
        if c.stage == .steppingOut { return 0 }
        // One-way joined: the socket facing the joined direction's sender gets none of its
        // bytes; readable means reset (or a fault): watched for that.
        if c.oneWayJoined && fd == oneWaySenderSocket(c) { ev |= UInt32(EPOLLIN.rawValue) }
        if fd == c.up && !c.upStarted { return 0 }
        if fd == c.down {
            if Relay.wantsToRead(c.toServer) { ev |= UInt32(EPOLLIN.rawValue) }
            if !c.toClient.empty { ev |= UInt32(EPOLLOUT.rawValue) }
        } else {
            if !c.upConnected {
                return ev | UInt32(EPOLLOUT.rawValue)
            }
            if Relay.wantsToRead(c.toClient) { ev |= UInt32(EPOLLIN.rawValue) }
            if !c.toServer.empty && c.mayWriteUp { ev |= UInt32(EPOLLOUT.rawValue) }
        }
        return ev
    }

    private static func wantsToRead(_ d: Direction) -> Bool {
        if d.sourceDone || d.waitingForPipe || d.readRoom == 0 { return false }
        return d.inspect ? d.held.count < maxPeekLength : d.inPipe < d.capacity
    }

    func service(_ c: Connection, fd: Int32, events: UInt32) {
        // A connect under way: its failure is looked at whichever socket woke the loop (the
        // client's request may come first; reading the up socket would then take its error
        // as the connection's and abort it, where a refused connect is tried again).
        if !c.upConnected && (fd == c.up || c.upStarted) {
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(c.up, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 {
                if c.service != nil && err == ECONNREFUSED && retryFromAnotherPort(c) { return }
                logger.warning("upstream \(c.client) -> \(c.backend ?? c.server) failed: \(String(cString: strerror(err)))")
                if c.service != nil && retryBackend(c) { return }
                abort(c)
                return
            }
            if fd == c.up {
                if events & UInt32(EPOLLOUT.rawValue) == 0 { return }
                c.upConnected = true
                if c.service != nil { backendConnected(c) }
            }
        }
        guard c.stage != .steppingOut else { return }
        if leavesQueue(c) { leaveQueue(c) }
        if c.oneWayJoined && fd == oneWaySenderSocket(c) && events & UInt32(EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0
            && !oneWaySocketQuiet(c) {
            abort(c)
            return
        }
        var ok = pump(&c.toServer, connected: c.mayWriteUp, connection: c)
        if ok && c.upStarted && c.upConnected { ok = pump(&c.toClient, connected: !c.holdResponse, connection: c) }
        guard ok else {
            abort(c)
            return
        }
        if c.stage == .deciding || c.stage == .awaitingResponse { inspected(c) }
        guard connections[c.id] != nil else { return }
        while c.stage == .relayingChunked && chunkedProgress(c) {
            // The framing moved on (a chunk's data to pipe, a size line to read, the end):
            // the relay goes on with it at once.
            guard pump(&c.toClient, connected: !c.holdResponse, connection: c) else {
                abort(c)
                return
            }
        }
        guard connections[c.id] != nil else { return }
        if c.stage == .relayingResponse && c.toClient.bytesRead == c.responseEnd && c.toClient.empty {
            // A relayed response is out: the connection waits for its next request.
            nextRequest(c)
        }
        if c.oneWayJoined && c.stage == .relaying && (c.oneWay == .toClient ? c.toServer : c.toClient).shutdownSent {
            // The relayed direction is over: the rest of the flow is the engine's.
            completeOneWay(c)
        }
        guard connections[c.id] != nil else { return }
        if c.toServer.shutdownSent && c.toClient.shutdownSent {
            finish(c)
            return
        }
        let d = interest(c, fd: c.down), u = interest(c, fd: c.up)
        if d != c.downInterest { rewatch(c.down, from: c.downInterest, to: d); c.downInterest = d }
        if u != c.upInterest { rewatch(c.up, from: c.upInterest, to: u); c.upInterest = u }
    }

    /// Changes a socket's epoll interest. A socket that wants nothing leaves the set: hang-ups
    /// and errors are reported whatever the interest, so one whose both halves are shut (its
    /// work done, the other socket still writing) would otherwise be reported on every wait.
    func rewatch(_ fd: Int32, from old: UInt32, to new: UInt32) {
        if new == 0 {
            _ = epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nil)
        } else {
            watch(fd, events: new, add: old == 0)
        }
    }

    /// What a read from a direction's source (or a write to its destination) of `n` bytes
    /// means for the pump's loop: go on, wait for the socket, or a connection error. A read of
    /// 0 is the source's FIN.
    private enum Step { case again, wait, failed }
    private static func step(_ n: Int, read: Bool, _ d: inout Direction) -> Step {
        if n > 0 { return .again }
        if n == 0 && read {
            d.sourceDone = true
            return .again
        }
        return n < 0 && (errno == EAGAIN || errno == EINTR) ? .wait : .failed
    }

    /// Copies the urgent byte the socket is at (in line) into the pipe behind what it holds,
    /// and only then takes it from the socket: 1; 0 at the stream's end; -1 with errno set
    /// (EAGAIN: the pipe has no slot left, the byte stays in the socket until it drains).
    static func urgentByteToPipe(_ source: Int32, _ pipe: Int32) -> Int {
        var byte: UInt8 = 0
        let r = recv(source, &byte, 1, Int32(MSG_DONTWAIT | MSG_PEEK))
        guard r == 1 else { return r < 0 ? -1 : 0 }
        guard write(pipe, &byte, 1) == 1 else { return -1 }
        return recv(source, &byte, 1, Int32(MSG_DONTWAIT))
    }

    /// Moves what it can; false on a connection error.
    private func pump(_ d: inout Direction, connected: Bool, connection c: Connection) -> Bool {
        let flags = TCPSPLICE_SPLICE_F_MOVE | TCPSPLICE_SPLICE_F_NONBLOCK
        defer { if d.inPipe == 0 { releasePipe(&d) } }
        // The pipe is filled until the source has nothing more (or the pipe no room) before it
        // is written out, so that a source's FIN that came with its last bytes is known before
        // they go: they then go corked (SPLICE_F_MORE) and the shutdown right after puts the
        // FIN on their segment, one packet instead of two (each one a trip through the
        // engine's queue, and one acknowledgement fewer from the far end).
        var sourceIdle = false
        pumping: while true {
            let n: Int, read: Bool
            if d.heldSent < d.held.count && (connected || !d.gathering) {
                // Bytes the rules looked at go first, before any pipe byte. (While they cannot
                // go yet and more of them is awaited, more is read: a request's body.)
                guard connected else { break }
                n = d.held.withUnsafeBytes {
                    send(d.destination, $0.baseAddress! + d.heldSent, $0.count - d.heldSent, Int32(MSG_NOSIGNAL))
                }
                read = false
                if n > 0 {
                    d.heldSent += n
                    d.bytes += UInt64(n)
                    if !d.inspect && d.heldSent == d.held.count { d.stopInspecting() }
                }
            } else if d.inspect {
                if d.sourceDone || d.held.count >= maxPeekLength || d.readRoom == 0 { break }
                // Read into the peek buffer, then onto the end of `held` (at most up to
                // maxPeekLength in all).
                n = recv(d.source, peekBuffer.baseAddress!, min(maxPeekLength - d.held.count, d.readRoom), 0)
                if n > 0 {
                    d.held.append(contentsOf: UnsafeBufferPointer(rebasing: peekBuffer[0..<n]))
                }
                read = true
                if n > 0 { d.bytesRead += UInt64(n) }
            } else if d.inPipe > 0 && connected && (sourceIdle || !d.pipeReadable), let p = d.pipe {
                // SPLICE_F_MORE only for the last bytes, the shutdown following at once: it
                // sends with MSG_MORE, which corks a short segment in the socket until a timer
                // pushes it, ~200 ms later. (The kernel sets MSG_MORE itself between the
                // buffers of one splice.)
                n = tcpsplice_splice(p.read, d.destination, d.inPipe, flags | (d.sourceDone ? TCPSPLICE_SPLICE_F_MORE : 0))
                read = false
                if n > 0 {
                    d.inPipe -= n
                    d.bytes += UInt64(n)
                }
            } else {
                if sourceIdle || !d.pipeReadable { break }
                if d.pipe == nil && !acquirePipe(&d) {
                    d.waitingForPipe = true
                    pipeWaiters.append(c.id)
                    break
                }
                guard let p = d.pipe else { break }
                var got = tcpsplice_splice(d.source, p.write, min(p.capacity - d.inPipe, d.readRoom), flags)
                if got <= 0 && (got == 0 || errno == EAGAIN) && tcpsplice_at_mark(d.source) == 1 {
                    // Neither the end nor nothing to read: splice stops before an urgent byte
                    // (in line, SO_OOBINLINE) and says EAGAIN, or 0 when blocking, while the
                    // socket stays readable. The byte joins the stream behind what the pipe
                    // holds, as an ordinary one (a full pipe drains first, below).
                    got = Relay.urgentByteToPipe(d.source, p.write)
                    if got > 0 { logger.debug("urgent byte relayed in line (#\(c.id))") }
                }
                n = got
                read = true
                if n > 0 { d.inPipe += n; d.bytesRead += UInt64(n) }
                if n < 0 && errno == EAGAIN && d.inPipe > 0 {
                    // Nothing more now: what the pipe holds goes out.
                    sourceIdle = true
                    continue pumping
                }
            }
            switch Relay.step(n, read: read, &d) {
            case .again: continue pumping
            case .wait: break pumping
            case .failed: return false
            }
        }
        if d.sourceDone && d.empty && !d.shutdownSent && connected {
            // The direction's last byte is out: pass the half-close on. Not announced: it
            // relays the other end's FIN at the same place in the stream, which the engine
            // lets through as it is (Docs/resilient.md); announcing it cost two control
            // messages per short connection.
            shutdown(d.destination, Int32(SHUT_WR))
            d.shutdownSent = true
        }
        return true
    }

    // MARK: Closing

    private func finish(_ c: Connection) {
        logger.debug("done \(c.client) -> \(c.server): \(c.toServer.bytes) up, \(c.toClient.bytes) down")
        if c.stage == .pendingSplice {
            // Both halves closed before the splice drained: nothing is left to splice.
            cancelSplice(c)
        }
        release(c)
    }

    /// Ends a connection abortively (RST both ways), announcing it to the engine first.
    func abort(_ c: Connection) {
        logger.debug("aborting \(c.client) -> \(c.server) (#\(c.id))")
        if c.stage == .pendingSplice || c.stage == .steppingOut { cancelSplice(c) }
        announceClose(c, true, true)
        announceClose(c, false, true)
        abortSocket(c.down)
        abortSocket(c.up, closeIt: false)
        release(c, closeSockets: false)
        close(c.up)
    }

    func abortSocket(_ fd: Int32, closeIt: Bool = true) {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        if closeIt { close(fd) }
    }

    func release(_ c: Connection, closeSockets: Bool = true) {
        if let b = c.backend { activeByBackend[b.description, default: 1] -= 1 }
        for p in c.parked.values { close(p.fd) }
        parkedOpen -= c.parked.count
        c.parked.removeAll()
        connections[c.id] = nil
        deciding.remove(c.id)
        pendingSplices.remove(c.id)
        if byTuple[tupleKey(c)] == c.id { byTuple[tupleKey(c)] = nil }
        owners[c.down] = nil
        owners[c.up] = nil
        // A pipe with bytes still in it is closed, not pooled.
        releasePipe(&c.toServer)
        releasePipe(&c.toClient)
        if closeSockets {
            // Closing takes a socket out of the epoll set (no descriptor of ours shares it).
            close(c.down)
            close(c.up)
        } else {
            _ = epoll_ctl(epoll, EPOLL_CTL_DEL, c.down, nil)
            _ = epoll_ctl(epoll, EPOLL_CTL_DEL, c.up, nil)
        }
        resumeAcceptingIfRoom()
    }

    /// The engine is gone: drops every resilient connection without a word on the wire (our
    /// packets would be dropped anyway, and the ends go on in bypass), relays the balancer's
    /// connections not joined on, and resets those joined one way (a moment later).
    func dropAll() {
        engineConnected = false
        for c in Array(connections.values) {
            if c.oneWayJoined || c.stage == .chunkJoined {
                // Its sockets are in step with the ends only through the engine's rewriting
                // (a chunked response joined: they stand where the join began):
                // the connection ends, nothing more relayed; both ends are reset a moment later
                // (OneWay.swift, `resetLeftovers`).
                release(c, closeSockets: false)
                leftovers.append(OneWayLeftover(c, at: monotonicSeconds() + Relay.leftoverResetDelay))
                continue
            }
            if c.service != nil {
                // A balancer connection not joined is an ordinary local connection (its packets
                // are queued fail-open): the proxy goes on relaying it, a join given up.
                keepRelayingWithoutEngine(c)
                continue
            }
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
