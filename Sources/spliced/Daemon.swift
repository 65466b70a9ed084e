#if canImport(Glibc)
import Glibc
#endif
import CLinuxSupport
import Foundation
import Logging
import Synchronization
import SpliceControlProtocol
import SpliceDaemonCore
import SpliceEngine
import SpliceKernel
import SpliceWire

/// The running daemon: one reader thread for all queues (or more), the engine behind one lock, the
/// control socket served from a thread of its own, and the timers (flow expiry, held FIN/RST
/// release, silent proxies, the watched pidfile) on another, so that no control client can
/// hold them up.
final class Daemon: @unchecked Sendable {
    let configuration: DaemonConfiguration
    let logger: Logger
    /// The engine and the proxy registry, and the rules that join them (SpliceDaemonCore).
    let supervisor: Supervisor<ControlServer.ClientID>
    let queues: [NetfilterQueue]
    /// A UDP socket held open asking for receive timestamps (QueueDelay), or -1.
    let timestampSocket: Int32
    /// Copies of spliced flows' FINs (`--fin-log-group`), read by the first reader thread.
    let finLog: PacketLog?
    /// The intercepted handshakes as they leave the router (Resilient/ClampedMSS.swift): read
    /// at once (no batching), before each turn of an ends' queue.
    let synLog: PacketLog?
    let control: ControlServer
    let stop = Atomic<Bool>(false)
    let clock = MonotonicClock()
    let pid = getpid()
    let injector: SpliceInjector
    /// Runs of the timer thread (status shows them).
    let timerRuns = Atomic<UInt64>(0)
    /// Step-outs and joins waiting until the engine has seen every packet that was queued when
    /// they came (control thread only), and their number for the readers, which wake the
    /// control thread after a drain while any wait.
    var held: [HeldRequest] = []
    /// Answers to step-outs and joins made while a reader was in a drain (control thread only),
    /// sent once those drains have ended (AnswersAfterDrains.swift says why). `heldCount`
    /// counts them with the held requests.
    var afterDrains = AnswersAfterDrains<ControlResponse, ControlServer.ClientID>()
    let heldCount = Atomic<Int>(0)
    /// The queues' last packet ids, read once per control round when a request needs them.
    var roundQueueIDs: [UInt16: UInt32]?
    /// How long a request waits at most for the readers to catch up with the queues (a queue
    /// that never empties, a flood): it is then answered as it stands, as an unseen packet of
    /// the flow arriving after the check would be.
    static let maximumHoldMilliseconds: Int64 = 20

    struct HeldRequest {
        let request: ControlRequest
        let client: ControlServer.ClientID
        let key: String
        /// Per queue (an index into `queues`) the id of the last packet queued when the request
        /// came; nil where that could not be read (then only the queue's emptying releases it).
        let fence: [(queue: Int, id: UInt32?)]
        let since: Int64
    }

    init(configuration: DaemonConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        let table = FlowTable(capacity: configuration.maxFlows, blockCapacity: configuration.maxBlocks)
        let core = Engine(table: table, now: Timestamp(deciseconds: 0))
        core.policy = configuration.policy
        core.marks = configuration.marks
        core.holdGrace = Timestamp.Duration(deciseconds: UInt32(max(1, configuration.holdGraceMilliseconds / 100)))
        core.replayPatience = Timestamp.Duration(deciseconds: UInt32(max(1, configuration.replayPatienceMilliseconds / 100)))
        injector = try SpliceInjector(wireMark: configuration.marks.inject, localMark: configuration.marks.local,
                                      spliceMark: configuration.marks.spliced, proxyMark: configuration.marks.toProxy)
        core.injector = injector
        supervisor = Supervisor(engine: core, heartbeatLimit: Timestamp.Duration(
            deciseconds: UInt32(configuration.heartbeatTimeoutMilliseconds / 100)), rules: configuration.rules)
        var qs: [NetfilterQueue] = []
        for n in configuration.queues + configuration.proxyQueues + (configuration.synQueue.map { [$0] } ?? []) {
            var o = NetfilterQueue.Options()
            o.maxLength = configuration.queueMaxLength
            o.batchLimit = configuration.batch
            // A full queue drops (TCP retransmits, as after a full link) unless told to accept:
            // an end's packet of a resilient flow accepted untranslated reaches the other end
            // beside the proxy's translated ones (mixed clocks: PAWS drops, stalls). The proxy's
            // packets are never accepted untranslated: they carry its own sequence space.
            o.failOpen = configuration.acceptWhenQueueFull && !configuration.proxyQueues.contains(n)
            if n == configuration.synQueue {
                // Handshakes only: past what the engine can take (a SYN flood), the next ones
                // go by unseen and their flows stay in bypass; nothing waits long, nothing is
                // dropped, and the established flows' queues keep the reader's time.
                o.failOpen = true
                o.maxLength = configuration.synQueueMaxLength
                o.receivesPerDrain = 4
                o.sharesByBacklog = false
            }
            qs.append(try NetfilterQueue(number: n, options: o))
        }
        queues = qs
        // The kernel stamps the packets it receives while a socket asks for it: the queues'
        // waits are measured from those stamps (splicectl status).
        timestampSocket = QueueDelay.enableKernelTimestamps()
        if timestampSocket < 0 {
            logger.warning("cannot turn on the kernel's receive timestamps: queue waits not measured", metadata: ["errno": "\(errno)"])
        }
        finLog = try configuration.finLogGroup.map { try PacketLog(group: $0) }
        var immediate = PacketLog.Options()
        immediate.batch = 1
        immediate.flushCentiseconds = 0
        immediate.messageBufferBytes = 2048
        synLog = try configuration.synLogGroup.map { try PacketLog(group: $0, options: immediate) }
        control = try ControlServer(path: configuration.controlSocket)
    }

    /// Runs until SIGINT or SIGTERM; returns the exit status.
    func run() -> Int32 {
        // Signals are taken synchronously by the main thread; every other thread blocks them.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        signal(SIGPIPE, SIG_IGN)

        let failed = Atomic<Bool>(false)
        let done = DispatchGroup()
        // The queues' readers: one thread for all (poll on their sockets), or one per queue
        // (`--reader-threads per-queue`). The engine is behind one lock, taken per packet; a
        // verdict's `sendto`, where the kernel carries the packet on (and, on one machine, the
        // receiving end's TCP work), runs outside it.
        let groups: [[NetfilterQueue]]
        switch configuration.readers {
        case .one: groups = [queues]
        case .perQueue: groups = queues.map { [$0] }
        case .handshakesApart:
            let syn = queues.filter { $0.number == configuration.synQueue }
            let rest = queues.filter { $0.number != configuration.synQueue }
            groups = syn.isEmpty || rest.isEmpty ? [queues] : [rest, syn]
        }
        var readers: [Thread] = []
        for (i, group) in groups.enumerated() {
            done.enter()
            let name = groups.count == 1 ? "queues" : "queues \(group.map { String($0.number) }.joined(separator: ","))"
            let reader = Thread { [self] in
                defer { done.leave() }
                _ = tcpsplice_set_thread_name(name)
                readQueues(group, log: i == 0 ? finLog : nil, handshakes: i == 0 ? synLog : nil, failed: failed)
            }
            readers.append(reader)
        }
        for reader in readers { reader.start() }
        done.enter()
        let controlThread = Thread { [self] in
            defer { done.leave() }
            _ = tcpsplice_set_thread_name("control")
            while !stop.load(ordering: .relaxed) {
                control.serve(timeoutMilliseconds: held.isEmpty && afterDrains.isEmpty ? 100 : 1,
                              handle: { request, client in handle(request, from: client) },
                              disconnected: { client in proxyGone(client) })
                releaseHeld()
                tellChunkEnds()
            }
        }
        controlThread.start()
        // The timers every 50 ms, on a thread that waits for nothing but the engine's lock.
        done.enter()
        let timerThread = Thread { [self] in
            defer { done.leave() }
            _ = tcpsplice_set_thread_name("timers")
            while !stop.load(ordering: .relaxed) {
                watchPidfile()
                expireSilentProxies()
                let now = clock.now()
                supervisor.engine.withLock { $0.tick(now: now) }
                timerRuns.wrappingAdd(1, ordering: .relaxed)
                usleep(50_000)
            }
        }
        timerThread.start()

        logger.info("spliced running", metadata: [
            "pid": "\(pid)", "queues": "\(configuration.queues.map(String.init).joined(separator: ","))",
            "proxy-queues": "\(configuration.proxyQueues.map(String.init).joined(separator: ","))",
            "control": "\(configuration.controlSocket)", "max-flows": "\(configuration.maxFlows)",
        ])
        if configuration.proxyQueues.isEmpty && !configuration.policy.ports.isEmpty {
            logger.warning("""
                no --proxy-queue: if the proxy's packets share a queue with the ends' (install-rules.sh \
                without --proxy-queue), a full queue lets them through untranslated; give them a queue \
                of their own
                """)
        }
        var caught: Int32 = 0
        sigwait(&signals, &caught)
        if !failed.load(ordering: .relaxed) {
            logger.info("signal \(caught): stopping")
        }
        stop.store(true, ordering: .relaxed)
        control.wake()
        done.wait()
        for q in queues { q.unbind() }
        finLog?.unbind()
        synLog?.unbind()
        control.shutdown()
        if let pidfile = configuration.pidfile { unlink(pidfile) }
        return failed.load(ordering: .relaxed) ? 1 : 0
    }

    /// A reader thread's loop over `group`'s queues (and the FIN log, `log`), until `stop`; a
    /// failing queue stops the daemon.
    func readQueues(_ group: [NetfilterQueue], log: PacketLog?, handshakes: PacketLog?, failed: borrowing Atomic<Bool>) {
        // The queue being drained: its verdicts still unsent go out before any packet the
        // engine makes while it handles one of its packets (SpliceInjector.verdictsFirst).
        // (Packets the engine makes on the timer or control threads do not wait for a reader's
        // unsent verdicts: rarer, and not ordered here.)
        var draining = group[0]
        let endsQueues = Set(configuration.queues)
        let handle: (UnsafeMutableRawBufferPointer, UnsafeMutableRawBufferPointer, PacketInfo) -> Verdict = { [self] bytes, scratch, info in
            let now = clock.now()
            let (verdict, ends) = supervisor.engine.withLock { engine in
                injector.verdictsFirst = draining
                defer { injector.verdictsFirst = nil }
                return (engine.process(bytes, scratch: scratch, info: info, now: now), engine.chunkEndsWake())
            }
            // A joined chunked response's end found: the control thread tells the proxy now.
            if ends { control.wake() }
            return verdict
        }
        var fds = group.map { pollfd(fd: $0.fileDescriptor, events: Int16(POLLIN), revents: 0) }
        if let log { fds.append(pollfd(fd: log.fileDescriptor, events: Int16(POLLIN), revents: 0)) }
        // The queues that share the turn by backlog (DrainShares): while one of them has a
        // backlog (it used its whole share in the last turn), the kernel's counts are read at
        // most every 10 ms (a read ~100 us in a debug build) and the fullest gets most of the turn;
        // the others (the handshake queue) keep their fixed share. Unreadable counts (never
        // seen: the file is there while queues are bound) leave the turns even.
        let sharing = group.indices.filter { group[$0].options.sharesByBacklog }
        var receives = group.map(\.options.receivesPerDrain)
        var backlogged = false
        var countedAt: Int64 = 0
        do {
            while !stop.load(ordering: .relaxed) {
                let ready = poll(&fds, nfds_t(fds.count), 100)
                if ready < 0 {
                    if errno == EINTR { continue }
                    throw SystemError("waiting for the queues (poll)")
                }
                if ready == 0 { continue }
                if let log, fds[group.count].revents != 0 {
                    // The FINs' copies: tracking only, no verdict; the lock per copy, as per
                    // queued packet (not held across the receives).
                    let now = clock.now()
                    log.drain { header, room in
                        supervisor.engine.withLock { $0.loggedFromSplicedFlow(header, room: room, now: now) }
                    }
                }
                if !backlogged {
                    for i in sharing { receives[i] = group[i].options.receivesPerDrain }
                } else if sharing.count >= 2 {
                    let now = ControlServer.milliseconds()
                    if now - countedAt >= 10, let kernel = KernelQueueStats.read() {
                        countedAt = now
                        let waiting = sharing.map { i in Int(kernel.first { $0.queue == group[i].number }?.queueTotal ?? 0) }
                        let shares = DrainShares.receives(waiting: waiting, base: group[sharing[0]].options.receivesPerDrain)
                        for (i, r) in zip(sharing, shares) { receives[i] = r }
                    }
                }
                backlogged = false
                for i in group.indices where fds[i].revents != 0 {
                    // The handshakes' copies first: the copy of a SYN-ACK is written when its
                    // verdict is sent, before the client can answer it, so reading them before
                    // each queue's turn has the copy in before the client's ACK that replays
                    // the handshake to the proxy (Resilient/ClampedMSS.swift).
                    // (The ends' queues only: the client's ACK comes on one of them, and the
                    // proxy's SYN that the server's SYN-ACK answers comes after that ACK.)
                    if let handshakes, endsQueues.contains(group[i].number) {
                        handshakes.drain { header, room in
                            supervisor.engine.withLock { $0.loggedHandshake(header, room: room) }
                        }
                    }
                    draining = group[i]
                    let made = try group[i].drain(receives: receives[i], handle: handle)
                    if made >= receives[i] && group[i].options.sharesByBacklog { backlogged = true }
                }
                // A step-out or join waits for what this turn has seen.
                if heldCount.load(ordering: .acquiring) > 0 { control.wake() }
            }
        } catch {
            logger.critical("queue \(draining.number) stopped: \(error)")
            failed.store(true, ordering: .relaxed)
            stop.store(true, ordering: .relaxed)
            kill(pid, SIGTERM)
        }
    }

    // MARK: Control requests (control thread)

    /// The queues (the handshake queue apart) that may hold packets the engine has not seen,
    /// each with the id of the last packet the kernel had queued there: one waiting in the
    /// socket, or a reader in its turn (received, verdicts not all sent). Empty: nothing unseen.
    func unseenFence() -> [(queue: Int, id: UInt32?)] {
        let inTurn = readerInDrain()
        var fence: [(queue: Int, id: UInt32?)] = []
        for (i, q) in queues.enumerated() where q.number != configuration.synQueue {
            guard inTurn || q.holdsUnreceived() else { continue }
            if roundQueueIDs == nil {
                var ids: [UInt16: UInt32] = [:]
                for k in KernelQueueStats.read() ?? [] { ids[k.queue] = UInt32(truncatingIfNeeded: k.lastID) }
                roundQueueIDs = ids
            }
            fence.append((i, roundQueueIDs?[q.number]))
        }
        return fence
    }

    /// Has the engine seen everything the fence covers? `emptied`: per queue, nothing waits in
    /// it and no reader is in its turn (looked at once a round for all the held requests).
    func passed(_ h: HeldRequest, emptied: [Bool]) -> Bool {
        h.fence.allSatisfy { f in
            emptied[f.queue] || f.id.map { queues[f.queue].hasSeen(through: $0) } == true
        }
    }

    /// A splice's step-out and a join check that nothing is in flight through the proxy, then
    /// take the flow out of the queue (the conntrack mark) or onto the other connection. A
    /// segment of the flow still queued, unseen, would be missed by that check and then
    /// overtaken by the flow's next ones, which skip the queue (the receiver takes the
    /// reordering for a loss and its sender resends). So while the queues hold packets the
    /// engine has not seen, such a request waits until the readers have handled every packet
    /// queued when it came (the kernel's ids of the queues' last packets, from
    /// /proc/net/netfilter/nfnetlink_queue), at most `maximumHoldMilliseconds`, and is answered
    /// then; a later request about the same flow first has it answered, so each flow's requests
    /// are handled in order. Once made, its answer still waits for the readers' drains under way
    /// (`answerAfterDrains`). Returns nil when the request waits.
    func handle(_ request: ControlRequest, from client: ControlServer.ClientID) -> ControlResponse? {
        let key = request.flowKey
        if let key, let i = held.firstIndex(where: { $0.key == key }) {
            let h = held.remove(at: i)
            countHeld()
            answerHeld(h)
        }
        while let key, let a = afterDrains.take(key: key) {
            countHeld()
            control.push(a.answer, to: a.client)
        }
        if let key, supervisor.waitsForQueues(request, from: client) {
            let fence = unseenFence()
            if !fence.isEmpty {
                held.append(HeldRequest(request: request, client: client, key: key, fence: fence,
                                        since: ControlServer.milliseconds()))
                countHeld()
                supervisor.countHeldForQueue()
                return nil
            }
            return answerAfterDrains(request, from: client, key: key)
        }
        return answerNow(request, from: client)
    }

    /// Is a reader in the middle of a drain (packets received, verdicts not all sent yet)?
    func readerInDrain() -> Bool {
        queues.contains { $0.drainCount & 1 == 1 }
    }

    func countHeld() {
        heldCount.store(held.count + afterDrains.count, ordering: .releasing)
    }

    /// A step-out or join answered now (made under the engine's lock), or nil when a reader is
    /// in a drain: its answer goes once that drain has ended (`AnswersAfterDrains`).
    func answerAfterDrains(_ request: ControlRequest, from client: ControlServer.ClientID, key: String) -> ControlResponse? {
        let response = answerNow(request, from: client)
        guard let answer = afterDrains.add(response, to: client, key: key, drainCounts: queues.map(\.drainCount),
                                           now: ControlServer.milliseconds()) else {
            countHeld()
            return nil
        }
        return answer
    }

    /// Answers the held requests whose packets the engine has now seen. Control thread, after
    /// each round.
    func releaseHeld() {
        roundQueueIDs = nil
        guard !held.isEmpty || !afterDrains.isEmpty else { return }
        let now = ControlServer.milliseconds()
        if !afterDrains.isEmpty {
            for a in afterDrains.release(drainCounts: queues.map(\.drainCount), now: now,
                                         bound: Daemon.maximumHoldMilliseconds) {
                control.push(a.answer, to: a.client)
            }
            countHeld()
        }
        guard !held.isEmpty else { return }
        let inTurn = readerInDrain()
        let emptied = queues.map { !inTurn && !$0.holdsUnreceived() }
        var waiting: [HeldRequest] = []
        for h in held {
            if passed(h, emptied: emptied) {
                answerHeld(h)
            } else if now - h.since >= Daemon.maximumHoldMilliseconds {
                supervisor.countHeldPastBound()
                answerHeld(h)
            } else {
                waiting.append(h)
            }
        }
        held = waiting
        countHeld()
    }

    func answerHeld(_ h: HeldRequest) {
        if let response = answerAfterDrains(h.request, from: h.client, key: h.key) {
            control.push(response, to: h.client)
        }
    }

    /// A registered proxy's connection closed: its waiting requests go with it.
    func dropHeld(of client: ControlServer.ClientID) {
        guard !held.isEmpty || !afterDrains.isEmpty else { return }
        held.removeAll { $0.client == client }
        afterDrains.drop(client: client)
        countHeld()
    }

    func answerNow(_ request: ControlRequest, from client: ControlServer.ClientID) -> ControlResponse {
        let (response, event) = supervisor.handle(request, from: client, now: clock.now(),
                                                  status: { status() }, flows: { flows() })
        switch event {
        case .registered(let id, let reg):
            // Its heartbeats are watched instead of its connection's idleness.
            control.setPersistent(client)
            logger.info("proxy registered", metadata: ["id": "\(id)", "name": "\(reg.name)", "pid": "\(reg.pid)"])
        case .policyChanged(let policy):
            logger.notice("policy changed", metadata: ["policy": "\(policy)"])
        case .rulesChanged(let rules):
            // Every registered proxy gets them at once (new connections follow them).
            let proxies = supervisor.registry.withLock { Array($0.proxies.keys) }
            for p in proxies { control.push(ControlResponse(ok: true, rules: rules), to: p) }
            logger.notice("splice rules changed", metadata: ["version": "\(rules.version)", "rules": "\(rules.rules.count)",
                                                          "proxies": "\(proxies.count)"])
        case nil:
            break
        }
        if request.command == .resetBackend, let n = response.flowsReset, let m = request.member {
            logger.notice("joined flows reset: their backend was taken out", metadata: ["backend": "\(m.key)", "flows": "\(n)"])
        }
        return response
    }

    /// The ends of joined chunked responses the engine found: each registered proxy is told
    /// (the one whose connection it is takes its sockets over there and arms the return; the
    /// others know no such connection). Control thread.
    func tellChunkEnds() {
        let ends = supervisor.engine.withLock { $0.takeChunkEnds() }
        guard !ends.isEmpty else { return }
        let proxies = supervisor.registry.withLock { Array($0.proxies.keys) }
        for e in ends {
            let message = ControlResponse.chunkEndMessage(e)
            let key = message.join?.flowKey
            for p in proxies {
                // Never before the answer to the join it is about, while that waits for the
                // drain under way when it was made: the end can be found in that same drain.
                if let key, afterDrains.addBehind(message, to: p, key: key) == nil { continue }
                control.push(message, to: p)
            }
        }
        countHeld()
    }

    /// A proxy that stopped heartbeating is as good as dead: its flows go to bypass (its own
    /// packets are then dropped, so a hung proxy can do no harm), and its connection is closed,
    /// which tells it to drop its relays and register again. Timer thread.
    func expireSilentProxies() {
        let now = clock.now()
        let (gone, successor) = supervisor.expireSilent(now: now)
        for (client, r) in gone {
            logger.warning("proxy silent for \(now.seconds(since: r.proxy.lastHeartbeat))s: treating it as dead; its flows are in bypass now",
                           metadata: ["id": "\(r.proxy.id)", "pid": "\(r.proxy.registration.pid)", "flows": "\(r.flowsMoved)"])
            control.requestDisconnect(client)
        }
        announce(successor)
    }

    /// A registered proxy's connection closed (control thread).
    func proxyGone(_ client: ControlServer.ClientID) {
        dropHeld(of: client)
        guard let (r, successor) = supervisor.connectionClosed(client, now: clock.now()) else { return }
        logger.warning("proxy gone: its flows are in bypass now", metadata: [
            "id": "\(r.proxy.id)", "name": "\(r.proxy.registration.name)", "pid": "\(r.proxy.registration.pid)",
            "flows": "\(r.flowsMoved)"])
        announce(successor)
    }

    func announce(_ successor: Int?) {
        if let successor { logger.notice("proxy \(successor) takes new flows now") }
    }

    // MARK: A proxy of another make (HAProxy), watched through its pidfile

    /// Reads the pidfile when no watched proxy is alive; polls the pidfd of the one that is.
    /// Timer thread (the only one that changes `watched`).
    func watchPidfile() {
        guard let path = configuration.proxyPidfile else { return }
        if let w = supervisor.registry.withLock({ $0.watched }) {
            var p = pollfd(fd: w.pidfd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 0) > 0 else { return }
            close(w.pidfd)
            guard let (r, successor) = supervisor.watchedExited(now: clock.now()) else { return }
            logger.warning("watched proxy exited: its flows are in bypass now", metadata: [
                "pid": "\(r.proxy.pid)", "pidfile": "\(path)", "flows": "\(r.flowsMoved)"])
            announce(successor)
            return
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              let pid = Int32(text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first ?? "") else { return }
        guard pid > 0, pid != supervisor.registry.withLock({ $0.lastDeadPid }) else { return }
        let fd = tcpsplice_pidfd_open(pid)
        guard fd >= 0 else { return }
        // A pidfd of a process that already exited (a zombie, say) is readable at once.
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, 0) > 0 {
            close(fd)
            supervisor.registry.withLock { $0.pidIsDead(pid) }
            return
        }
        let id = supervisor.watch(pid: pid, pidfd: fd, now: clock.now())
        logger.info("watching proxy", metadata: ["pid": "\(pid)", "pidfile": "\(path)", "id": "\(id)"])
    }

    func status() -> StatusReport {
        let now = clock.now()
        let engineStatus = supervisor.engine.withLock { $0.status() }
        let kernel = KernelQueueStats.read() ?? []
        let queueReports = queues.map { q -> QueueReport in
            let c = q.snapshot
            let k = kernel.first { $0.queue == q.number }
            let role = configuration.proxyQueues.contains(q.number) ? "proxy"
                : q.number == configuration.synQueue ? "handshakes" : "ends"
            return QueueReport(number: q.number, failClosed: configuration.proxyQueues.contains(q.number), role: role,
                               packets: c.packets, verdictMessages: c.verdictMessages, verdictSends: c.verdictSends, verdictSendFailures: c.verdictSendFailures,
                               sendsBeforeInjection: c.sendsBeforeInjection,
                               receiveOverruns: c.receiveOverruns, queueTotal: k?.queueTotal,
                               queueDropped: k?.queueDropped, userDropped: k?.userDropped, portID: k?.portID,
                               delay: c.delay.report)
        }
        let proxies = supervisor.registry.withLock { $0.reports(now: now, pidfile: configuration.proxyPidfile) }
        var report = StatusReport(engine: engineStatus, version: tcpspliceVersion, pid: pid,
                            uptimeSeconds: now.seconds(since: Timestamp(deciseconds: 0)), queues: queueReports,
                            proxies: proxies, control: controlReport(), injectorFailures: injector.failures,
                            resident: processMemory())
        if let log = finLog {
            let c = log.snapshot
            report.finLog = PacketLogReport(group: log.group, packets: c.packets, overruns: c.overruns)
        }
        if let log = synLog {
            let c = log.snapshot
            report.synLog = PacketLogReport(group: log.group, packets: c.packets, overruns: c.overruns)
        }
        return report
    }

    func controlReport() -> ControlReport {
        let c = control.counters
        return ControlReport(clients: control.clientCount, maxClients: control.limits.maxClients,
                             accepted: c.accepted, requests: c.requests, refusedTooMany: c.refusedTooMany,
                             refusedNoDescriptor: c.refusedNoDescriptor, refusedNotRoot: c.refusedNotRoot,
                             droppedUnread: c.droppedUnread, droppedOverlong: c.droppedOverlong,
                             droppedSilent: c.droppedSilent, closedIdle: c.closedIdle,
                             timerRuns: timerRuns.load(ordering: .relaxed))
    }

    func flows() -> [FlowRecord] {
        let now = clock.now()
        return supervisor.engine.withLock { $0.flowRecords(now: now) }
    }
}

/// Engine time from CLOCK_MONOTONIC, zero at daemon start.
struct MonotonicClock: Sendable {
    let origin: Double
    init() { origin = MonotonicClock.seconds() }
    static func seconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
    func now() -> Timestamp { Timestamp(deciseconds: UInt32((MonotonicClock.seconds() - origin) * 10)) }
}

let tcpspliceVersion = "0.1.0"
