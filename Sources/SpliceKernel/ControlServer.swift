#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import SpliceControlProtocol

/// The daemon's side of the control socket: a root-only Unix stream socket (mode 0600, and
/// the peer's uid checked with SO_PEERCRED), one JSON request per line, served from one
/// thread with poll(2). A client that registers as a proxy keeps its connection; its EOF is
/// how the daemon learns the proxy is gone.
///
/// No client can hold up another: every socket is non-blocking, each connection has a
/// bounded input buffer (one request line, `ControlProtocol.maximumRequestBytes`) and a
/// bounded output buffer (past `Limits.maxPendingOutputBytes` of answers it has not read,
/// its next requests wait), a request begun must be finished within
/// `Limits.partialRequestMilliseconds`, answers waiting must be taken within
/// `Limits.outputStallMilliseconds` or the client is dropped, each client gets at most
/// `Limits.requestsPerRound` answers per round, and past `Limits.maxClients` connections (or
/// at the descriptor limit) a new one gets a one-line refusal and is closed.
public final class ControlServer: @unchecked Sendable {
    /// A connection's number, unique for the server's life (unlike its descriptor, which
    /// the kernel hands out again once it is closed).
    public typealias ClientID = Int

    public struct Limits: Sendable {
        /// Connections served at once; one more gets a one-line refusal and is closed.
        public var maxClients = 64
        /// Answers a client may leave unread (beyond what its socket buffer holds); past it,
        /// its next requests are neither read nor answered until it reads.
        public var maxPendingOutputBytes = 256 << 10
        /// A client with answers waiting that takes none of them for this long is dropped.
        public var outputStallMilliseconds = 5_000
        /// A request line must be complete this long after its first byte arrived.
        public var partialRequestMilliseconds = 5_000
        /// A connection with nothing under way is closed after this long, unless it is
        /// persistent (a registered proxy, see `setPersistent`).
        public var idleMilliseconds = 60_000
        /// Answers given to one client per round before the others get their turn.
        public var requestsPerRound = 8
        /// The one uid allowed to talk to the daemon (root).
        public var allowedUID: UInt32 = 0
        public init() {}
    }

    /// What happened to the connections so far.
    public struct Counters: Sendable, Equatable {
        public var accepted: UInt64 = 0
        public var requests: UInt64 = 0
        /// Refused with one line: `maxClients` connections were open.
        public var refusedTooMany: UInt64 = 0
        /// Refused with one line: the process was at its descriptor limit (EMFILE, ENFILE).
        public var refusedNoDescriptor: UInt64 = 0
        /// Refused with one line: the peer is not root.
        public var refusedNotRoot: UInt64 = 0
        /// Dropped: answers waiting and none taken for `outputStallMilliseconds`.
        public var droppedUnread: UInt64 = 0
        /// Dropped: a request line longer than `ControlProtocol.maximumRequestBytes`.
        public var droppedOverlong: UInt64 = 0
        /// Dropped: a request begun and not finished within `partialRequestMilliseconds`.
        public var droppedSilent: UInt64 = 0
        /// Closed: idle for `idleMilliseconds`.
        public var closedIdle: UInt64 = 0
        public init() {}
    }

    public let path: String
    public let limits: Limits
    /// Control thread only.
    public private(set) var counters = Counters()
    public var clientCount: Int { clients.count }

    private let listener: Int32
    private var clients: [ClientID: Connection] = [:]
    private var order: [ClientID] = []
    private var nextID: ClientID = 1
    /// A descriptor kept in reserve: at EMFILE it is closed to accept (and refuse) the
    /// connection waiting, so that the listener never stays readable with nothing done.
    private var reserveFD: Int32 = -1
    /// The listener is left out of poll until then (ms) when accepting keeps failing.
    private var listenerPausedUntil: Int64 = 0
    /// Wakes poll from another thread (`requestDisconnect`, `wake`).
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let disconnectRequests = Mutex<[ClientID]>([])
    private let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 16)

    final class Connection {
        let id: ClientID
        let fd: Int32
        var input: [UInt8] = []
        var inputHead = 0
        /// Bytes from `inputHead` known to hold no newline.
        var scanned = 0
        var output: [UInt8] = []
        var outputHead = 0
        var readClosed = false
        var persistent = false
        /// Times (ms): the last bytes in either direction; the first byte of the request
        /// under way; when the answers waiting last moved (or began to wait).
        var lastActivity: Int64
        var partialSince: Int64
        var outputSince: Int64
        var lastRead: Int64

        init(id: ClientID, fd: Int32, now: Int64) {
            self.id = id
            self.fd = fd
            lastActivity = now
            partialSince = now
            outputSince = now
            lastRead = now
        }

        var buffered: Int { input.count - inputHead }
        var pendingOutput: Int { output.count - outputHead }

        /// True when a whole request line is buffered.
        func hasLine() -> Bool {
            if let nl = input[(inputHead + scanned)...].firstIndex(of: UInt8(ascii: "\n")) {
                scanned = nl - inputHead
                return true
            }
            scanned = input.count - inputHead
            return false
        }

        func nextLine() -> [UInt8]? {
            guard hasLine() else { return nil }
            let nl = inputHead + scanned
            let line = Array(input[inputHead..<nl])
            inputHead = nl + 1
            scanned = 0
            if inputHead == input.count {
                input.removeAll(keepingCapacity: true)
                inputHead = 0
            } else {
                // What is left belongs to a request that arrived with the last read.
                partialSince = lastRead
            }
            return line
        }

        func append(_ bytes: UnsafeRawBufferPointer) {
            if inputHead > 0 && inputHead >= input.count / 2 {
                input.removeFirst(inputHead)
                inputHead = 0
            }
            input.append(contentsOf: bytes)
        }

        /// Sends what it can without blocking. False when the connection is broken.
        func flush(now: Int64) -> Bool {
            while outputHead < output.count {
                let n = output.withUnsafeBytes {
                    send(fd, $0.baseAddress! + outputHead, $0.count - outputHead, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno == EAGAIN || errno == EWOULDBLOCK
                }
                outputHead += n
                outputSince = now
                lastActivity = now
            }
            output.removeAll(keepingCapacity: output.capacity <= 65536)
            outputHead = 0
            return true
        }
    }

    /// Creates the socket. Fails with a clear message if another daemon listens there, or if
    /// something other than a socket (a regular file, say) is at `path`: only a socket left
    /// by a daemon that died is removed.
    public init(path: String, limits: Limits = Limits()) throws {
        self.path = path
        self.limits = limits
        // Parent directory: created root-only if missing.
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            let dir = String(path[..<slash])
            if access(dir, F_OK) != 0 && mkdir(dir, 0o700) != 0 && errno != EEXIST {
                throw SystemError("creating the control socket directory \(dir)")
            }
        }
        var st = stat()
        if lstat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else {
                throw SystemError("\(path) exists and is not a socket; refusing to replace it (give another --control-socket, or remove it)",
                                  errno: EEXIST)
            }
            // A socket file left by a daemon that died is removed; a live one is an error.
            if ControlServer.someoneListens(path) {
                throw SystemError("another spliced already listens on \(path)", errno: EADDRINUSE)
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SystemError("creating the control socket") }
        let old = umask(0o177)
        let rc = try UnixSocket.withAddress(path) { bind(fd, $0, $1) }
        umask(old)
        guard rc == 0 else {
            let e = SystemError("binding the control socket \(path)")
            close(fd)
            throw e
        }
        chmod(path, 0o600)
        guard listen(fd, 64) == 0 else {
            let e = SystemError("listening on \(path)")
            close(fd)
            unlink(path)
            throw e
        }
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else {
            let e = SystemError("creating the control thread's wake-up pipe")
            close(fd)
            unlink(path)
            throw e
        }
        for p in pipeFDs {
            _ = fcntl(p, F_SETFD, FD_CLOEXEC)
            _ = fcntl(p, F_SETFL, fcntl(p, F_GETFL) | O_NONBLOCK)
        }
        listener = fd
        wakeRead = pipeFDs[0]
        wakeWrite = pipeFDs[1]
        reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
    }

    deinit { readBuffer.deallocate() }

    static func someoneListens(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return (try? UnixSocket.withAddress(path) { connect(fd, $0, $1) }) == 0
    }

    public static func milliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Waits up to `timeoutMilliseconds` for activity and serves it. `handle` answers each
    /// request, or returns nil to answer it later with `push` (answers name what they answer,
    /// so a later one may overtake it); `disconnected` hears of every client that went away.
    /// Never blocks on a client. Control thread only.
    public func serve(timeoutMilliseconds: Int32,
                      handle: (ControlRequest, ClientID) -> ControlResponse?,
                      disconnected: (ClientID) -> Void) {
        var now = ControlServer.milliseconds()
        var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
        let listening = now >= listenerPausedUntil
        if listening { fds.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0)) }
        var polled: [ClientID] = []
        var linesWaiting = false
        for id in order {
            guard let c = clients[id] else { continue }
            let hasLine = c.hasLine()
            let answerable = c.pendingOutput <= limits.maxPendingOutputBytes
            linesWaiting = linesWaiting || (hasLine && answerable)
            var events: Int16 = 0
            // A client's next request is read only once the ones buffered are answered, and
            // not while too many of its answers wait unread.
            if !c.readClosed && !hasLine && answerable { events |= Int16(POLLIN) }
            if c.pendingOutput > 0 { events |= Int16(POLLOUT) }
            guard events != 0 else { continue }
            fds.append(pollfd(fd: c.fd, events: events, revents: 0))
            polled.append(id)
        }
        var timeout = linesWaiting ? 0 : timeoutMilliseconds
        if !listening { timeout = min(timeout, Int32(clamping: max(0, listenerPausedUntil - now))) }
        let n = poll(&fds, nfds_t(fds.count), timeout)
        now = ControlServer.milliseconds()
        if n > 0 {
            if fds[0].revents != 0 { takeDisconnectRequests(disconnected: disconnected) }
            let first = listening ? 2 : 1
            if listening && fds[1].revents != 0 { acceptClients(now: now) }
            for (i, id) in polled.enumerated() {
                let p = fds[first + i]
                guard p.revents != 0, let c = clients[id] else { continue }
                if p.revents & Int16(POLLOUT) != 0 || (c.pendingOutput > 0 && p.revents & Int16(POLLERR | POLLHUP) != 0) {
                    guard c.flush(now: now) else {
                        drop(c, disconnected: disconnected)
                        continue
                    }
                }
                if p.events & Int16(POLLIN) != 0 && p.revents & Int16(POLLIN | POLLERR | POLLHUP) != 0 {
                    readFrom(c, now: now, disconnected: disconnected)
                }
            }
        }
        for id in order {
            guard let c = clients[id] else { continue }
            answer(c, now: now, handle: handle, disconnected: disconnected)
        }
        enforceDeadlines(now: now, disconnected: disconnected)
    }

    private func acceptClients(now: Int64) {
        for _ in 0..<32 {
            let fd = accept(listener, nil, nil)
            if fd < 0 {
                switch errno {
                case EINTR, ECONNABORTED:
                    continue
                case EAGAIN, EWOULDBLOCK:
                    return
                case EMFILE, ENFILE:
                    // At the descriptor limit the waiting connection would keep the listener
                    // readable and poll would spin: the reserve descriptor makes room to
                    // refuse it; without one, the listener rests for a while.
                    if reserveFD >= 0 {
                        close(reserveFD)
                        let fd = accept(listener, nil, nil)
                        if fd >= 0 {
                            refuse(fd, "too many open files in spliced; try again later")
                            counters.refusedNoDescriptor &+= 1
                        }
                        reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
                        if fd >= 0 && reserveFD >= 0 { continue }
                    }
                    listenerPausedUntil = now + 250
                    return
                default:
                    listenerPausedUntil = now + 100
                    return
                }
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            guard UnixSocket.peerUID(fd) == limits.allowedUID else {
                // Only root may talk to the daemon (the socket mode says so too).
                refuse(fd, "permission denied: the control socket is root-only")
                counters.refusedNotRoot &+= 1
                continue
            }
            guard clients.count < limits.maxClients else {
                refuse(fd, "too many control connections (\(limits.maxClients) open); try again later")
                counters.refusedTooMany &+= 1
                continue
            }
            let id = nextID
            nextID += 1
            clients[id] = Connection(id: id, fd: fd, now: now)
            order.append(id)
            counters.accepted &+= 1
        }
    }

    /// One error line, sent without waiting (a fresh socket's buffer holds it), then close.
    private func refuse(_ fd: Int32, _ message: String) {
        if let line = try? ControlFraming.encode(ControlResponse.failure(message)) {
            _ = line.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
        }
        close(fd)
    }

    private func readFrom(_ c: Connection, now: Int64, disconnected: (ClientID) -> Void) {
        let n = read(c.fd, readBuffer.baseAddress, readBuffer.count)
        if n < 0 {
            if errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK { return }
            drop(c, disconnected: disconnected)
            return
        }
        if n == 0 {
            // The client is done sending; what it asked is still answered.
            c.readClosed = true
            return
        }
        if c.buffered == 0 { c.partialSince = now }
        c.lastRead = now
        c.lastActivity = now
        c.append(UnsafeRawBufferPointer(rebasing: readBuffer[0..<n]))
        if !c.hasLine() && c.buffered > ControlProtocol.maximumRequestBytes {
            tooLong(c, disconnected: disconnected)
        }
    }

    private func tooLong(_ c: Connection, disconnected: (ClientID) -> Void) {
        counters.droppedOverlong &+= 1
        if c.pendingOutput == 0 {
            let line = (try? ControlFraming.encode(ControlResponse.failure("request too long"))) ?? []
            _ = line.withUnsafeBytes { send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
        }
        drop(c, disconnected: disconnected)
    }

    /// Answers up to `requestsPerRound` of the client's buffered requests, none while too many
    /// of its answers wait unread.
    private func answer(_ c: Connection, now: Int64, handle: (ControlRequest, ClientID) -> ControlResponse?,
                        disconnected: (ClientID) -> Void) {
        var answered = 0
        while answered < limits.requestsPerRound, c.pendingOutput <= limits.maxPendingOutputBytes,
              let line = c.nextLine() {
            answered += 1
            if line.count > ControlProtocol.maximumRequestBytes {
                tooLong(c, disconnected: disconnected)
                return
            }
            counters.requests &+= 1
            let response: ControlResponse
            do {
                let request = try ControlFraming.decode(ControlRequest.self, from: line)
                guard let r = handle(request, c.id) else { continue }   // answered later
                response = r
            } catch {
                response = .failure("malformed request: \(error)")
            }
            guard clients[c.id] != nil else { return }   // `handle` disconnected it
            let bytes = (try? ControlFraming.encode(response)) ?? Array(#"{"ok":false,"error":"cannot encode the answer"}"#.utf8) + [10]
            if c.pendingOutput == 0 { c.outputSince = now }
            c.output.append(contentsOf: bytes)
            c.lastActivity = now
        }
        // The round's answers in one write (a proxy's joins come several a round: one send,
        // and one wake-up of the proxy, for all of them).
        guard answered > 0 else { return }
        if !c.flush(now: now) { drop(c, disconnected: disconnected) }
    }

    private func enforceDeadlines(now: Int64, disconnected: (ClientID) -> Void) {
        for id in order {
            guard let c = clients[id] else { continue }
            if c.pendingOutput > 0 {
                if now - c.outputSince > Int64(limits.outputStallMilliseconds) {
                    counters.droppedUnread &+= 1
                    drop(c, disconnected: disconnected)
                }
                continue
            }
            if c.hasLine() { continue }
            if c.readClosed {
                // Everything it asked is answered; a request cut short will never finish.
                drop(c, disconnected: disconnected)
            } else if c.buffered > 0 {
                if now - c.partialSince > Int64(limits.partialRequestMilliseconds) {
                    counters.droppedSilent &+= 1
                    drop(c, disconnected: disconnected)
                }
            } else if !c.persistent && now - c.lastActivity > Int64(limits.idleMilliseconds) {
                counters.closedIdle &+= 1
                drop(c, disconnected: disconnected)
            }
        }
        if order.count > clients.count * 2 + 16 { order.removeAll { clients[$0] == nil } }
    }

    private func drop(_ c: Connection, disconnected: (ClientID) -> Void) {
        guard clients.removeValue(forKey: c.id) != nil else { return }
        close(c.fd)
        disconnected(c.id)
    }

    private func takeDisconnectRequests(disconnected: (ClientID) -> Void) {
        var sink = [UInt8](repeating: 0, count: 64)
        while sink.withUnsafeMutableBytes({ read(wakeRead, $0.baseAddress, $0.count) }) > 0 {}
        let ids = disconnectRequests.withLock { ids in
            let taken = ids
            ids.removeAll()
            return taken
        }
        for id in ids { disconnect(id, disconnected: disconnected) }
    }

    /// Closes one client's connection (e.g. a proxy whose heartbeats stopped). Control
    /// thread only.
    public func disconnect(_ client: ClientID, disconnected: (ClientID) -> Void) {
        guard let c = clients[client] else { return }
        drop(c, disconnected: disconnected)
    }

    /// Asks the control thread to close a client's connection; from any thread. The
    /// control thread does it in its next round and calls its `disconnected` for it.
    public func requestDisconnect(_ client: ClientID) {
        disconnectRequests.withLock { $0.append(client) }
        wake()
    }

    /// Makes the control thread's `serve` return at once; from any thread.
    public func wake() {
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)
    }

    /// Queues an unasked message for a client (the rules pushed to a registered proxy), or an
    /// answer held back; it goes out at once if the socket takes it, else with the client's
    /// next flush, under the same limits as its answers. Control thread only.
    public func push(_ message: ControlResponse, to client: ClientID) {
        guard let c = clients[client], let bytes = try? ControlFraming.encode(message) else { return }
        let now = ControlServer.milliseconds()
        if c.pendingOutput == 0 { c.outputSince = now }
        c.output.append(contentsOf: bytes)
        _ = c.flush(now: now)   // a broken connection is found by the next poll
    }

    /// Keeps a connection open however long it is idle (a registered proxy: its heartbeats
    /// are watched instead). Control thread only.
    public func setPersistent(_ client: ClientID) {
        clients[client]?.persistent = true
    }

    /// Closes every connection and removes the socket file.
    public func shutdown() {
        for c in clients.values { close(c.fd) }
        clients.removeAll()
        order.removeAll()
        close(listener)
        close(wakeRead)
        close(wakeWrite)
        if reserveFD >= 0 { close(reserveFD) }
        unlink(path)
    }
}
