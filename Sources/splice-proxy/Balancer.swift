#if canImport(Glibc)
import Glibc
#endif
import CLinuxSupport
import SpliceControlProtocol
import SpliceWire

// The layer-7 balancer (seed 003 claim 10; Docs/balancer.md). A client connects to a service
// address, where the proxy listens with an ordinary socket (P1). The proxy reads the request,
// the rules name a pool (or the service's own), a member is picked, and the proxy connects to
// it from a port of the balancer's range (P2) and writes the request on. For `splice`, it then
// asks the engine to join the two connections: `prepare` (the engine shuts the windows its
// sockets advertise), and once it holds nothing and every byte it wrote is acknowledged,
// `join` with the bytes it read and wrote on each socket; on `joined` both sockets close
// without a packet (TCP_REPAIR) and the engine forwards the joined flows. For `proxy`, it
// relays, as a plain balancing proxy.

/// A service address and the pool its connections go to when the deciding rule names none.
struct Service {
    var address: SocketAddress
    var pool: String

    /// "ADDRESS:PORT=POOL" (IPv6 as [ADDRESS]:PORT=POOL).
    static func parse(_ text: String) -> Service? {
        guard let eq = text.lastIndex(of: "=") else { return nil }
        let pool = String(text[text.index(after: eq)...])
        let hostPort = text[..<eq]
        guard !pool.isEmpty, let colon = hostPort.lastIndex(of: ":"),
              let port = UInt16(hostPort[hostPort.index(after: colon)...]), port != 0 else { return nil }
        var host = String(hostPort[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard let address = IPAddress(host) else { return nil }
        return Service(address: SocketAddress(address: address, port: port), pool: pool)
    }
}

extension Relay {
    /// A listener on a service address: an ordinary socket, carrying the balancer mark (its
    /// connections' packets are queued to the engine, fail-open).
    func listenService(_ s: Service, index: Int) throws {
        let fd = Relay.streamSocket(s.address.family)
        guard fd >= 0 else { throw RelayError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        try setBalancerMark(fd)
        if let mss = settings.serviceMSS, tcpsplice_set_mss(fd, Int32(mss)) != 0 {
            let e = String(cString: strerror(errno))
            close(fd)
            throw RelayError("TCP_MAXSEG \(mss) on the service listener \(s.address): \(e)")
        }
        guard s.address.withSockaddr({ bind(fd, $0, $1) }) == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw RelayError("binding the service listener to \(s.address): \(e) (is the address on this host, e.g. on lo?)")
        }
        guard Glibc.listen(fd, Relay.backlog) == 0 else { throw RelayError("listen: \(String(cString: strerror(errno)))") }
        listeners.append(fd)
        serviceListeners[fd] = index
        watch(fd, events: UInt32(EPOLLIN.rawValue), add: true)
    }

    func setBalancerMark(_ fd: Int32) throws {
        var mark = settings.balancerMark
        guard setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, socklen_t(MemoryLayout<UInt32>.size)) == 0 else {
            throw RelayError("SO_MARK: \(String(cString: strerror(errno))) (needs root / CAP_NET_ADMIN)")
        }
    }

    /// A client's connection to a service: its up socket exists (not connected) until the
    /// request has picked a backend.
    func openService(down: Int32, client: SocketAddress, service: Int) {
        guard let local = SocketAddress.local(of: down) else {
            close(down)
            return
        }
        let up = Relay.streamSocket(client.family)
        guard up >= 0, (try? setBalancerMark(up)) != nil else {
            if up >= 0 { close(up) }
            abortSocket(down)
            return
        }
        var one: Int32 = 1
        setsockopt(down, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(up, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let id = nextID
        nextID += 1
        let c = Connection(id: id, down: down, up: up, client: client, server: local,
                           toServer: Direction(source: down, destination: up),
                           toClient: Direction(source: up, destination: down))
        c.service = service
        c.upStarted = false
        connections[id] = c
        owners[down] = id
        owners[up] = id
        byTuple[tupleKey(c)] = id
        opened(c)
        c.downInterest = interest(c, fd: down)
        rewatch(down, from: 0, to: c.downInterest)
    }

    /// The rules decided for a balancer connection: pick a member of the rule's pool (or the
    /// service's), connect to it, and for `splice` join once connected and drained. A
    /// connection already connected (its rules waited for the response head) keeps its backend:
    /// `splice` now shuts the windows and joins what is left of the response.
    func applyService(_ c: Connection, _ action: RuleAction, rule: Int?) {
        c.action = action
        c.rule = rule
        let named = rule.flatMap { id in rules.rules.first { $0.id == id }?.pool }
        let poolName = named ?? settings.services[c.service!].pool
        if action == .splice, engineConnected, let r = rule.flatMap({ id in rules.rules.first { $0.id == id } }), r.perRequest {
            switch HTTPRequestHead.perRequestFraming(c.toServer.held, limit: maxPeekLength) {
            case .whole:
                c.toServer.gathering = false
                startPerRequest(c, pool: poolName, finProcess: r.fin == .process)
                return
            case .awaitingBody where !c.toServer.sourceDone && monotonicSeconds() < c.deadline:
                // Its body is still coming: decided again once it is here (or, past the
                // wait, joined for the connection's life).
                c.stage = .deciding
                c.toServer.gathering = true
                deciding.insert(c.id)
                return
            default:
                break
            }
        }
        leavePerRequest(c)
        c.oneWay = action == .splice ? rule.flatMap { id in rules.rules.first { $0.id == id }?.oneWay } : nil
        c.toServer.stopInspecting()
        if c.backend == nil || c.handedBack {
            guard chooseBackend(c, pool: poolName) else { return }
        }
        c.handedBack = false
        if action == .proxy || !engineConnected {
            // (Without spliced no join can be made: the connection is relayed.)
            c.stage = .relaying
            c.joinReady = true
        } else {
            awaitJoin(c)
            if c.upConnected { backendConnected(c) }
        }
        refreshInterest(c)
        service(c, fd: -1, events: 0)
    }

    /// Rules that need the response head matched the request: the request goes to a backend at
    /// once (the pool of the first such rule that names one, or the service's), its answer's
    /// head is read, and then the rules decide (a small answer stays proxied, a large one is
    /// joined for the rest of its body).
    func awaitResponse(_ c: Connection, candidates: [Int]) {
        c.toServer.stopInspecting()
        c.toClient.inspect = true
        let named = candidates.lazy.compactMap { id in self.rules.rules.first { $0.id == id }?.pool }.first
        c.toClient.paused = false
        c.toClient.readLimit = .max
        guard chooseBackend(c, pool: named ?? settings.services[c.service!].pool) else { return }
        c.handedBack = false
        refreshInterest(c)
        service(c, fd: -1, events: 0)
    }

    /// Picks a member of `poolName` for the connection's request and connects to it; false (the
    /// client reset) when there is no such pool or no member to take it.
    func chooseBackend(_ c: Connection, pool poolName: String) -> Bool {
        c.pool = poolName
        guard let pool = rules.pools.first(where: { $0.name == poolName }) else {
            logger.warning("no pool '\(poolName)' for \(c.client) -> \(c.server): resetting the client")
            abort(c)
            return false
        }
        // Parsed again only for a method that hashes a request field (the rules' parse is
        // not kept: most requests are decided and forgotten without a hash).
        let request = pool.method.readsRequest ? RequestFacts(firstBytes: c.toServer.held, isFinal: true) : nil
        let key = BalanceKey(client: c.client.address, request: request, hashHeader: pool.hashHeader)
        guard let member = balancer.pick(pool, key: key, down: health?.down(pool: poolName) ?? [], active: activeByBackend),
              let address = IPAddress(member.address) else {
            logger.warning("pool '\(poolName)' has no member to take \(c.client) -> \(c.server): resetting the client")
            abort(c)
            return false
        }
        let target = SocketAddress(address: address, port: member.port)
        if settings.forwardedFor { insertForwardedFor(c) }
        if let previous = c.backend {
            // A keep-alive connection's next request: the backend connection is kept when the
            // request goes to the same member (and it is still open); else it is parked for a
            // later request to its member, and one parked for this member is taken, or a new
            // one made.
            if previous.address == target.address && previous.port == target.port && backendReusable(c) {
                logger.debug("request of \(c.client) to \(target) on the kept backend connection (#\(c.id))")
                return true
            }
            var waiting = c.parked.removeValue(forKey: target.description)
            if let p = waiting {
                parkedOpen -= 1
                if !parkedStillOpen(p.fd) {
                    close(p.fd)
                    waiting = nil
                }
            }
            if backendReusable(c) && c.parked.count < Relay.parkedPerConnection
                && descriptorsInUse + 7 + Relay.reservedDescriptors <= descriptorLimit, let keep = parkBackend(c) {
                c.parked[previous.description] = keep
                parkedOpen += 1
            }
            if let p = waiting {
                guard swapBackend(c, for: p) else {
                    abort(c)
                    return false
                }
                logger.debug("request of \(c.client) to \(target) on its parked backend connection (#\(c.id))")
                return true
            }
            guard replaceBackendSocket(c) else {
                abort(c)
                return false
            }
        }
        guard connectBackend(c, to: target) else {
            abort(c)
            return false
        }
        return true
    }

    /// The current backend connection can take another request: connected, not closing, nothing
    /// unread in it or in the relay.
    func backendReusable(_ c: Connection) -> Bool {
        c.upConnected && !c.backendClosing && tcpsplice_inq(c.up) == 0 && c.toClient.empty && !c.toClient.sourceDone
    }

    /// A parked backend connection is still open and silent (the backend may have closed it
    /// while it idled: its keep-alive timeout).
    func parkedStillOpen(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        guard n < 0, errno == EAGAIN || errno == EWOULDBLOCK else { return false }
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0
    }

    /// The current backend connection, set aside (a descriptor of its own, out of the loop)
    /// with what a later join on it needs: its member, its local address, the bytes written to
    /// it and read from it.
    func parkBackend(_ c: Connection) -> ParkedBackend? {
        guard let backend = c.backend else { return nil }
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, c.up, nil)
        c.upInterest = 0
        let fd = dup(c.up)
        guard fd >= 0 else { return nil }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        activeByBackend[backend.description, default: 1] -= 1
        c.backend = nil
        logger.debug("backend connection of \(c.client) to \(backend) parked (#\(c.id))")
        return ParkedBackend(fd: fd, backend: backend, local: c.local, written: c.toServer.bytes, read: c.toClient.bytesRead)
    }

    /// A parked backend connection takes the up socket's descriptor again (the current one is
    /// closed: parked before, or not worth keeping), its counts back in place.
    func swapBackend(_ c: Connection, for p: ParkedBackend) -> Bool {
        if let old = c.backend { activeByBackend[old.description, default: 1] -= 1 }
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, c.up, nil)
        guard dup2(p.fd, c.up) == c.up else { close(p.fd); return false }
        _ = fcntl(c.up, F_SETFD, FD_CLOEXEC)
        close(p.fd)
        c.backend = p.backend
        activeByBackend[p.backend.description, default: 0] += 1
        c.upConnected = true
        c.joinPrepared = false
        c.joinReady = false
        c.upStarted = true
        startBackendSide(c, local: p.local, written: p.written, read: p.read)
        c.upInterest = interest(c, fd: c.up)
        rewatch(c.up, from: 0, to: c.upInterest)
        return true
    }

    /// A keep-alive connection's backend connection is closed (a FIN, as the kernel closes a
    /// socket) and a new socket takes its descriptor; the counts of the backend side start
    /// again (the engine sees a new connection).
    private func replaceBackendSocket(_ c: Connection) -> Bool {
        // (A parked connection keeps its own descriptor: only this one goes.)
        if let old = c.backend { activeByBackend[old.description, default: 1] -= 1 }
        c.backend = nil
        guard freshBackendSocket(c) else { return false }
        c.upStarted = false
        startBackendSide(c, local: nil, written: 0, read: 0)
        return true
    }

    /// The backend side of a keep-alive connection starts again on another backend
    /// connection: a new one (nothing written or read yet) or a parked one (its counts).
    /// (Whether its connect is under way, `upStarted`, is the caller's: a parked one's is
    /// long done, a new one's not begun.)
    private func startBackendSide(_ c: Connection, local: SocketAddress?, written: UInt64, read: UInt64) {
        c.local = local
        c.backendClosing = false
        c.retries = 0
        c.portRetries = 0
        c.toServer.bytes = written
        c.toClient.bytesRead = read
        c.toClient.sourceDone = false
        c.toServer.shutdownSent = false
        c.toClient.readLimit = .max
    }

    /// Adds `X-Forwarded-For: <client>` after the request line of an HTTP request the relay
    /// holds (nothing of it written yet). The bytes written to the backend then outnumber the
    /// bytes read from the client: the join carries both counts, and the engine's sequence
    /// delta accounts for the difference.
    private func insertForwardedFor(_ c: Connection) {
        guard c.toServer.heldSent == 0, case .http? = RequestFacts(firstBytes: c.toServer.held, isFinal: true).proto,
              let lineEnd = c.toServer.held.firstIndex(of: 0x0a) else { return }
        c.toServer.held.insert(contentsOf: Array("X-Forwarded-For: \(c.client.address)\r\n".utf8), at: lineEnd + 1)
    }

    /// The connect to the picked member failed before a byte went to it: the member is down
    /// (a passive check) and another one is tried, on a new socket under the same descriptor.
    /// False when none is left (or the connection already wrote to the backend).
    func retryBackend(_ c: Connection) -> Bool {
        guard let failed = c.backend, let poolName = c.pool, c.toServer.bytes == 0, c.retries < 2,
              let pool = rules.pools.first(where: { $0.name == poolName }) else { return false }
        c.retries += 1
        c.portRetries = 0
        let failedKey = pool.backends.first { IPAddress($0.address) == failed.address && $0.port == failed.port }?.key
        if let failedKey { health?.failed(pool: poolName, key: failedKey) }
        activeByBackend[failed.description, default: 1] -= 1
        var down = health?.down(pool: poolName) ?? []
        if let failedKey { down.insert(failedKey) }
        let key = BalanceKey(client: c.client.address, request: RequestFacts(firstBytes: c.toServer.held, isFinal: true),
                             hashHeader: pool.hashHeader)
        guard let member = balancer.pick(pool, key: key, down: down, active: activeByBackend),
              let address = IPAddress(member.address) else { return false }
        guard freshBackendSocket(c) else { return false }
        logger.info("retrying \(c.client) -> \(c.server) on \(member.key) (\(failed) failed)")
        return connectBackend(c, to: SocketAddress(address: address, port: member.port))
    }

    /// The connect to the picked member was refused: either the member refuses, or spliced
    /// reset the socket because a flow it still carries joined holds the tuple (the port came
    /// around while that flow lives: `balancer.portsBusy`). The same member is tried again from
    /// the next ports, twice at most, before the member counts as failed (`retryBackend`): a
    /// member that refuses costs two more SYNs; a busy port, nothing but the next one.
    func retryFromAnotherPort(_ c: Connection) -> Bool {
        guard let backend = c.backend, c.toServer.bytes == 0, c.portRetries < 2 else { return false }
        c.portRetries += 1
        activeByBackend[backend.description, default: 1] -= 1
        guard freshBackendSocket(c) else { return false }
        logger.debug("connect of \(c.client) to \(backend) from port \(c.local?.port ?? 0) refused: again from another port (#\(c.id))")
        return connectBackend(c, to: backend)
    }

    /// A new socket (the balancer mark, TCP_NODELAY) takes the up socket's descriptor; the old
    /// one is closed as the kernel closes any socket. Not connected yet.
    private func freshBackendSocket(_ c: Connection) -> Bool {
        let fresh = Relay.streamSocket(c.client.family)
        guard fresh >= 0 else { return false }
        var one: Int32 = 1
        setsockopt(fresh, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, c.up, nil)
        guard (try? setBalancerMark(fresh)) != nil, dup2(fresh, c.up) == c.up else { close(fresh); return false }
        _ = fcntl(c.up, F_SETFD, FD_CLOEXEC)
        close(fresh)
        c.upInterest = 0
        c.upConnected = false
        c.joinPrepared = false
        c.joinReady = false
        return true
    }

    /// Connects the up socket to `backend` from a port of the balancer's range (bound
    /// explicitly: the kernel never hands these ports out itself, and the rules queue their
    /// answers).
    private func connectBackend(_ c: Connection, to backend: SocketAddress) -> Bool {
        let range = settings.balancerPorts
        let span = Int(range.upperBound) - Int(range.lowerBound) + 1
        var bound = false
        for _ in 0..<min(span, 256) {
            if nextLocalPort < range.lowerBound || nextLocalPort > range.upperBound { nextLocalPort = range.lowerBound }
            let port = nextLocalPort
            nextLocalPort = port == range.upperBound ? range.lowerBound : port + 1
            let any = SocketAddress(address: backend.address.isIPv4 ? IPAddress(ipv4: 0) : IPAddress(high: 0, low: 0), port: port)
            if any.withSockaddr({ bind(c.up, $0, $1) }) == 0 { bound = true; break }
            if errno != EADDRINUSE { break }
        }
        guard bound else {
            logger.warning("no free port in \(range) for \(c.client) -> \(backend): \(String(cString: strerror(errno)))")
            return false
        }
        clampBackendMSS(c)
        let rc = backend.withSockaddr { connect(c.up, $0, $1) }
        guard rc == 0 || errno == EINPROGRESS else {
            logger.warning("cannot connect to backend \(backend): \(String(cString: strerror(errno)))")
            return false
        }
        c.backend = backend
        c.local = SocketAddress.local(of: c.up)
        c.upStarted = true
        c.upConnected = rc == 0
        activeByBackend[backend.description, default: 0] += 1
        c.upInterest = interest(c, fd: c.up)
        rewatch(c.up, from: 0, to: c.upInterest)
        if c.upConnected { backendConnected(c) }
        logger.debug("balancing \(c.client) -> \(c.server) to \(backend) from \(c.local.map { "\($0)" } ?? "?") (#\(c.id))")
        return true
    }

    /// The backend connection advertises no more than the client allows (its SYN's MSS, as
    /// far as it binds; the kernel takes the smaller of this and the route's), so that once
    /// the two are joined the backend's segments still fit the client. (The other way, the
    /// client's segments keep the size the service's SYN-ACK allowed: `--service-mss`.)
    func clampBackendMSS(_ c: Connection) {
        let peer = tcpsplice_peer_mss(c.down)
        guard peer > 0 else { return }
        if tcpsplice_set_mss(c.up, peer) != 0 {
            logger.warning("TCP_MAXSEG \(peer) on the backend connection of \(c.client): \(String(cString: strerror(errno)))")
        } else {
            logger.debug("backend connection of \(c.client): MSS \(peer), as the client allows")
        }
    }

    /// The join is asked for (announced with `prepare` once the backend connection is up):
    /// the timers take it from here (`joinTimer`).
    func awaitJoin(_ c: Connection) {
        c.stage = .pendingSplice
        c.spliceSince = monotonicSeconds()
        c.nextAsk = c.spliceSince
        pendingSplices.insert(c.id)
    }

    /// Whether a connection leaves the queue now (`leaveQueue`): relayed to its end (its
    /// rules said `proxy`, or its join did not happen, and no later request can be joined:
    /// no per-request rule, no one-way join), its backend's handshake over (the engine sees
    /// every SYN of the balancer's ports: the port-reuse guard needs it), and past its first
    /// `relayLeaveAfter` bytes.
    func leavesQueue(_ c: Connection) -> Bool {
        c.stage == .relaying && !c.leftQueue && settings.relayMark != nil && c.service != nil && c.upConnected
            && !c.perRequest && !c.oneWayJoined && c.toClient.bytes &+ c.toServer.bytes >= settings.relayLeaveAfter
    }

    /// Its packets need not go through the queue any more: both sockets become transparent
    /// and take the relay mark (the rules' `-m socket --transparent` lets the packets to them
    /// go by; their own packets are neither queued nor tracked), and the engine is told to
    /// let go of the pair's entries (`relayed`). The packets the queue holds already are the
    /// engine's still; it takes them as a closed flow's. Once a socket has changed, the
    /// engine is told whatever else fails (a flow it sees in part is no flow it could join).
    func leaveQueue(_ c: Connection) {
        c.leftQueue = true
        guard var mark = settings.relayMark, let backend = c.backend else { return }
        var changed = false
        defer { if changed && engineConnected { sendJoin(c, .relayed) } }
        let size = socklen_t(MemoryLayout<UInt32>.size)
        do {
            try setTransparent(c.down, family: c.client.family)
            changed = true
            try setTransparent(c.up, family: backend.family)
            guard setsockopt(c.down, SOL_SOCKET, SO_MARK, &mark, size) == 0, setsockopt(c.up, SOL_SOCKET, SO_MARK, &mark, size) == 0 else {
                throw RelayError("SO_MARK: \(String(cString: strerror(errno)))")
            }
        } catch {
            logger.warning("\(c.client) -> \(c.server) stays queued in part: \(error)")
            return
        }
        spliceCounts.leftQueue += 1
    }

    /// The backend answered: a join to make is announced (the engine has seen both handshakes).
    func backendConnected(_ c: Connection) {
        guard c.stage == .pendingSplice, !c.joinPrepared else { return }
        c.joinPrepared = true
        // The drain bound runs from here, not from the decision: a connect that took a SYN
        // or two resent (1 s each) is not a drain that failed. Counted from the decision,
        // a lossy backend path had joins given up as soon as they were prepared.
        c.spliceSince = monotonicSeconds()
        if c.joinReady && !c.toClient.paused {
            // A join for a response already on its way (its request went first: a per-request
            // join, a response-head rule): no more of it is read until the engine has shut the
            // backend's window (the answer to `prepare`). Read on meanwhile, the proxy's socket
            // kept opening that window, and a fast backend's whole answer could come through
            // the proxy before the join (given up: 1 to 4 of 8 answers of 1 MiB on one machine).
            c.toClient.paused = true
            c.pausedForPrepare = true
        }
        sendJoin(c, .prepare)
    }

    /// The response is read again (the engine answered `prepare`, or the join is off).
    func resumeAfterPrepare(_ c: Connection) {
        guard c.pausedForPrepare else { return }
        c.pausedForPrepare = false
        c.toClient.paused = false
    }

    func sendJoin(_ c: Connection, _ step: JoinMessage.Step) {
        guard let backend = c.backend, let local = c.local else { return }
        var m = JoinMessage(step: step, client: c.client.address.description, clientPort: c.client.port,
                            service: c.server.address.description, servicePort: c.server.port,
                            local: local.address.description, localPort: local.port,
                            backend: backend.address.description, backendPort: backend.port)
        if step == .join {
            m.readFromClient = c.toServer.bytesRead
            m.writtenToBackend = c.toServer.bytes
            m.readFromBackend = c.toClient.bytesRead
            m.writtenToClient = c.toClient.bytes
            if c.chunkJoin {
                m.chunkLeft = c.toClient.readLimit - c.toClient.bytesRead
                m.returnWindow = Relay.returnWindow
            } else if c.perRequest {
                m.returnAfter = c.responseEnd - c.toClient.bytesRead
                m.returnWindow = Relay.returnWindow
            }
            m.oneWay = c.oneWay?.rawValue
        }
        m.rule = c.rule
        m.pool = c.pool
        var request = ControlRequest(command: .join)
        request.join = m
        sendToEngine(request)
    }

    /// A pending join's turn in the timers: joined once drained; past the drain bound, given
    /// up (the connection stays proxied: nothing was lost, the proxy still holds it).
    func joinTimer(_ c: Connection, now: Double) {
        guard c.joinPrepared else { return }
        if c.stage == .chunkJoined {
            // The engine says unasked where the response ends; asked now and then all the
            // same (a message lost with a full queue, a flow that ended meanwhile).
            if now >= c.nextAsk {
                c.nextAsk = now + Relay.chunkEndPoll
                sendJoin(c, .end)
            }
            return
        }
        let waited = now - c.spliceSince
        if c.oneWayJoined {
            // A one-way join's other direction: asked for once the relayed direction drained
            // (its last bytes and FIN acknowledged), looked at every `oneWayRecheck`; a far end
            // that never acknowledges them is given `oneWayCompletionBound`, then both ends
            // are reset (the proxy's sockets cannot go quietly with bytes unacknowledged).
            guard drained(c) else {
                if waited > Relay.oneWayCompletionBound {
                    logger.warning("one-way join of \(c.client) -> \(c.server): the relayed direction not acknowledged in \(Int(Relay.oneWayCompletionBound)) s; aborting it")
                    abort(c)
                } else {
                    c.nextAsk = now + Relay.oneWayRecheck
                }
                return
            }
            c.stage = .steppingOut
            c.nextAsk = now
            refreshInterest(c)
            sendJoin(c, .join)
            return
        }
        guard waited >= settings.minimumPending else { return }
        if waited > settings.minimumPending + settings.drainBound {
            // Rare (a lossy or stalled path): worth a line, with what held the sockets up.
            logger.info("join of \(c.client) -> \(c.server) given up, relayed instead: not drained in \(settings.drainBound) s (client side: \(tcpsplice_outq(c.down)) bytes unacknowledged, \(tcpsplice_inq(c.down)) unread; backend side: \(tcpsplice_outq(c.up)) unacknowledged, \(tcpsplice_inq(c.up)) unread)")
            sendJoin(c, .cancel)
            c.joinPrepared = false
            c.joinReady = true
            resumeAfterPrepare(c)
            spliceCounts.fellBack += 1
            pendingSplices.remove(c.id)
            // (A per-request connection's response is relayed to its end.)
            c.stage = relayStage(c)
            refreshInterest(c)
            return
        }
        if c.perRequest && c.toClient.bytesRead == (c.chunkJoin ? c.toClient.readLimit : c.responseEnd) {
            // The whole response (the chunk) came through the proxy while the join was
            // pending: no join; the response is relayed to its end.
            sendJoin(c, .cancel)
            c.joinPrepared = false
            pendingSplices.remove(c.id)
            c.stage = relayStage(c)
            refreshInterest(c)
            service(c, fd: -1, events: 0)
            return
        }
        guard drained(c) else { return }
        c.stage = .steppingOut
        c.nextAsk = now
        refreshInterest(c)
        sendJoin(c, .join)
    }

    /// spliced is gone: a connection waiting for its join is relayed instead (its request
    /// written if the answer to `prepare` never came).
    func keepRelayingWithoutEngine(_ c: Connection) {
        guard c.stage == .pendingSplice || c.stage == .steppingOut else { return }
        pendingSplices.remove(c.id)
        c.joinPrepared = false
        c.joinReady = true
        resumeAfterPrepare(c)
        spliceCounts.cancelled += 1
        c.stage = relayStage(c)
        refreshInterest(c)
        service(c, fd: -1, events: 0)
    }

    /// The engine's answer to a `join` message.
    func joinAnswered(_ r: ControlResponse) {
        guard let m = r.join,
              let id = byTuple[TupleKey(m.client, m.clientPort, m.service, m.servicePort)],
              let c = connections[id] else { return }
        switch m.step {
        case .cancel:
            return
        case .arm:
            armAnswered(c, r)
            return
        case .release:
            return
        case .end:
            chunkEndAnswered(c, r)
            return
        case .relayed:
            return
        case .prepare:
            c.joinReady = true
            resumeAfterPrepare(c)
            if !r.ok && (c.stage == .pendingSplice || c.stage == .steppingOut) {
                c.joinPrepared = false
                refused(c, r.error)
            } else {
                refreshInterest(c)
                service(c, fd: -1, events: 0)
            }
        case .join:
            guard c.stage == .steppingOut else { return }
            if r.ok {
                spliceCounts.drained += 1
                // A join for one response comes back: the sockets are taken over, never let go.
                // A one-way join keeps them to relay the other direction, until that is over.
                if c.chunkJoin {
                    awaitChunkEnd(c)
                } else if c.perRequest {
                    handBack(c)
                } else if c.oneWay != nil && !c.oneWayJoined {
                    enterOneWay(c)
                } else {
                    stepOut(c)
                }
            } else if r.outcome == "not-drained" {
                c.stage = .pendingSplice
                c.nextAsk = monotonicSeconds() + Relay.askAgain
                refreshInterest(c)
                service(c, fd: -1, events: 0)
            } else if c.oneWayJoined {
                // The engine lost the one-way join: the sockets are out of step with the ends.
                logger.warning("one-way join of \(c.client) -> \(c.server) could not be completed: \(r.error ?? "?"); aborting it")
                abort(c)
            } else {
                sendJoin(c, .cancel)
                c.joinPrepared = false
                refused(c, r.error)
            }
        }
    }
}

/// A keep-alive connection's backend connection set aside while its requests go to other
/// members (`Relay.parkBackend`).
struct ParkedBackend {
    let fd: Int32
    let backend: SocketAddress
    let local: SocketAddress?
    /// The bytes written to it and read from it so far (a later join's counts).
    let written: UInt64
    let read: UInt64
}

extension Relay {
    /// At most this many backend connections parked per client connection.
    static let parkedPerConnection = 4
}
