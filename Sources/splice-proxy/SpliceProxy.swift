#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CLinuxSupport
import Logging
import SpliceControlProtocol
import SpliceKernel

/// The application proxy: a transparent relay (TPROXY delivery, upstream from the client's
/// address and port) that registers with spliced, heartbeats, and announces the aborts it
/// makes on purpose (its FINs relay the other end's, which the engine recognises). When the control connection breaks (the engine died or restarted), every
/// relayed connection is dropped without a word: the ends go on in bypass.
@main
struct SpliceProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "splice-proxy",
        abstract: "The tcpsplice application proxy: a transparent relay registered with spliced.")

    @Option(name: .long, help: "spliced's control socket.")
    var controlSocket: String = ControlProtocol.defaultSocketPath

    @Option(name: .long, help: "Name to register under.")
    var name: String = "splice-proxy"

    // Numeric options are parsed `.unconditional` (the next argument is the value even when it
    // begins with '-'), so that "-5" is reported as out of range, not as a missing value.
    @Option(name: .long, parsing: .unconditional,
            help: "The port the transparent listener accepts on (install-rules.sh --tproxy-port). (default: 8081)",
            transform: { text in
                guard let n = Int(text), n >= 1, n <= 65535 else {
                    throw ValidationError(Int(text) == nil ? "not a number" : "out of range (1 to 65535)")
                }
                return UInt16(n)
            })
    var listenPort: UInt16 = 8081

    @Option(name: .long, parsing: .unconditional, help: "Seconds between heartbeats.")
    var heartbeat: Double = 1.0

    // Explicit names: the automatic ones of these properties are --memory-mi-b and --no-i-pv6.
    @Option(name: .customLong("memory-mib"), parsing: .unconditional,
            help: "Relay buffer memory shared by all connections, in MiB.")
    var memoryMiB: Int = 64

    @Flag(name: .customLong("no-ipv6"), help: "Do not listen on IPv6.")
    var noIPv6 = false

    @Option(name: .long, parsing: .unconditional,
            help: "Milliseconds a splice may take to drain before the proxy steps out anyway (the senders resend what it held).")
    var spliceDrainMs: Int = 2000

    @Option(name: .long, parsing: .unconditional,
            help: "Milliseconds every splice stays pending at least: for tests that need splices caught pending (default 0).")
    var minPendingMs: Int = 0

    @Option(name: .long, help: ArgumentHelp(
        "A service address of the layer-7 balancer to listen on (an address of this host, e.g. on lo), and the pool its connections go to when the deciding rule names none; repeatable (Docs/balancer.md).",
        valueName: "ADDRESS:PORT=POOL"))
    var service: [String] = []

    @Option(name: .long, help: ArgumentHelp(
        "The local ports the balancer's connections to backends leave from (install-rules.sh --balancer-ports); above the kernel's ephemeral range, so that it never hands them out itself.",
        valueName: "LOW:HIGH"))
    var balancerPorts: String = "61000:65535"

    @Option(name: .long, help: ArgumentHelp(
        "The MSS the service listeners advertise to clients (TCP_MAXSEG; default: the route's). Lower it when a backend's path has a smaller MTU than the clients': once joined, the clients' segments go to the backends at the size this allowed (Docs/balancer.md).",
        valueName: "BYTES"))
    var serviceMss: Int?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp(
        "Per-request rules (splicectl rules add --per-request): a response with more than this many bytes left after its head is joined; a smaller one is relayed by the proxy (a join costs a few round trips of its own).",
        valueName: "BYTES"))
    var perRequestJoinAbove: Int = 16384

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp(
        "How long a keep-alive connection that came back to the proxy after a response may wait for its next request before the proxy closes it.",
        valueName: "MS"))
    var keepAliveTimeoutMs: Int = 30_000

    @Flag(name: .long, help: "Add an X-Forwarded-For header with the client's address to the HTTP requests the balancer sends to backends.")
    var forwardedFor = false

    @Option(name: .long, parsing: .unconditional, help: "Mark of the balancer's sockets (install-rules.sh --balancer-mark, spliced --balancer-mark).")
    var balancerMark: String = "0x5a5e"

    var parsedBalancerMark: UInt32? { ControlProtocol.parseMark(balancerMark) }

    @Option(name: .long, parsing: .unconditional,
            help: "Mark of the balancer's sockets of a connection it relays to its end (install-rules.sh --balancer-relay-mark): their packets leave the queue; 'none' keeps them queued.")
    var balancerRelayMark: String = "0x5a5f"

    /// The relay mark, nil for `none` (checked in `validate`).
    var relayMark: UInt32? { balancerRelayMark == "none" ? nil : ControlProtocol.parseMark(balancerRelayMark) }

    @Option(name: .long, help: "Write the proxy's pid to this file.")
    var pidfile: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard heartbeat >= 0.05 && heartbeat <= 60 else {
            throw ValidationError("--heartbeat must be between 0.05 and 60 seconds, not \(heartbeat)")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), not '\(logLevel)'")
        }
        guard !name.isEmpty && name.count <= 64 else { throw ValidationError("--name must be 1 to 64 characters") }
        guard listenPort != 0 else { throw ValidationError("--listen-port must not be 0") }
        guard memoryMiB >= 1 && memoryMiB <= 65536 else {
            throw ValidationError("--memory-mib must be between 1 and 65536, not \(memoryMiB)")
        }
        guard spliceDrainMs >= 10 && spliceDrainMs <= 600_000 else {
            throw ValidationError("--splice-drain-ms must be between 10 and 600000, not \(spliceDrainMs)")
        }
        guard minPendingMs >= 0 && minPendingMs <= 600_000 else {
            throw ValidationError("--min-pending-ms must be between 0 and 600000, not \(minPendingMs)")
        }
        for s in service where Service.parse(s) == nil {
            throw ValidationError("--service '\(s)': expected ADDRESS:PORT=POOL (IPv6 as [ADDRESS]:PORT=POOL)")
        }
        guard perRequestJoinAbove >= 0 && perRequestJoinAbove <= 1 << 40 else {
            throw ValidationError("--per-request-join-above must be between 0 and \(1 << 40) bytes, not \(perRequestJoinAbove)")
        }
        guard keepAliveTimeoutMs >= 10 && keepAliveTimeoutMs <= 3_600_000 else {
            throw ValidationError("--keep-alive-timeout-ms must be between 10 and 3600000, not \(keepAliveTimeoutMs)")
        }
        if let m = serviceMss, !(88...65495).contains(m) {
            throw ValidationError("--service-mss must be between 88 and 65495 bytes, not \(m)")
        }
        guard parsedBalancerMark != nil else {
            throw ValidationError("--balancer-mark must be a non-zero mark (hex 0x... or decimal), not '\(balancerMark)'")
        }
        guard balancerRelayMark == "none" || relayMark != nil else {
            throw ValidationError("--balancer-relay-mark must be a non-zero mark (hex 0x... or decimal) or 'none', not '\(balancerRelayMark)'")
        }
        if let relayMark, relayMark == parsedBalancerMark {
            throw ValidationError("--balancer-relay-mark must differ from --balancer-mark (\(balancerMark)): the rules queue the one and not the other")
        }
        guard parsedBalancerPorts != nil else {
            throw ValidationError("--balancer-ports '\(balancerPorts)': expected LOW:HIGH, two ports from 1 to 65535 with LOW <= HIGH")
        }
        if let problem = ControlProtocol.socketPathProblem(controlSocket) {
            throw ValidationError("--control-socket: \(problem)")
        }
    }

    var parsedBalancerPorts: ClosedRange<UInt16>? {
        let parts = balancerPorts.split(omittingEmptySubsequences: false, whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 2, let lo = UInt16(parts[0]), let hi = UInt16(parts[1]), lo >= 1, lo <= hi else { return nil }
        return lo...hi
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "splice-proxy")
        signal(SIGPIPE, SIG_IGN)
        let relay: Relay
        do {
            relay = try Relay(settings: .init(listenPort: listenPort, memoryBudget: memoryMiB << 20, ipv6: !noIPv6,
                                              drainBound: Double(spliceDrainMs) / 1000,
                                              minimumPending: Double(minPendingMs) / 1000,
                                              services: service.compactMap(Service.parse),
                                              balancerPorts: parsedBalancerPorts ?? 61000...65535,
                                              balancerMark: parsedBalancerMark ?? 0x5a5e,
                                              relayMark: relayMark,
                                              forwardedFor: forwardedFor, serviceMSS: serviceMss,
                                              perRequestJoinAbove: UInt64(perRequestJoinAbove),
                                              keepAliveTimeout: Double(keepAliveTimeoutMs) / 1000),
                              logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(2)
        }
        if !service.isEmpty {
            // The tickles after the engine's death in a one-way join (OneWay.swift).
            do {
                relay.tickler = try RawInjector(mark: parsedBalancerMark ?? 0x5a5e)
            } catch {
                logger.warning("no raw socket (\(error)): if spliced dies in a one-way join, an end that only reads may not learn of the end")
            }
        }
        if let pidfile {
            let text = "\(getpid())\n"
            let fd = open(pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if fd >= 0 { _ = write(fd, text, text.utf8.count); close(fd) }
        }
        let registration = ProxyRegistration(name: name, pid: getpid(), listenPort: listenPort,
                                             services: service.compactMap(Service.parse).map { "\($0.address)" })
        var control: ControlClient?
        var backoff = 0.1
        var nextTry = 0.0
        var lastBeat = 0.0

        if !service.isEmpty {
            let checker = HealthChecker(logger: logger)
            relay.health = checker
            checker.start()
        }
        // Messages to spliced go through an outbox, written without blocking as the socket
        // takes them: a proxy blocked in a send while spliced blocks writing answers the proxy
        // does not read would stall both (a crowd's 2,000 joins did: 5 s send timeouts, lost
        // messages, requests that never went out).
        let outbox = ControlOutbox()
        let readable = UInt32(EPOLLIN.rawValue) | UInt32(EPOLLRDHUP.rawValue)
        relay.sendToEngine = { request in
            guard let control, let bytes = try? ControlFraming.encode(request) else { return }
            let wasEmpty = outbox.isEmpty
            outbox.append(bytes)
            guard wasEmpty else { return }
            if outbox.flush(fd: control.fd) == .blocked { relay.watch(control.fd, events: readable | UInt32(EPOLLOUT.rawValue)) }
        }
        relay.announceClose = { c, towardClient, abortive in
            guard control != nil else { return }
            let intent = CloseIntent(client: c.client.address.description, clientPort: c.client.port,
                                     server: c.server.address.description, serverPort: c.server.port,
                                     towardClient: towardClient, abortive: abortive)
            relay.sendToEngine(ControlRequest(command: .closing, close: intent))
        }

        while true {
            let now = monotonicSeconds()
            if control == nil && now >= nextTry {
                do {
                    let client = try ControlClient(path: controlSocket)
                    let reply = try client.request(ControlRequest(command: .register, proxy: registration))
                    relay.watch(client.fd, events: UInt32(EPOLLIN.rawValue) | UInt32(EPOLLRDHUP.rawValue), add: true)
                    control = client
                    outbox.clear()
                    relay.engineConnected = true
                    if let rules = reply.rules { take(rules, relay, logger) }
                    backoff = 0.1
                    lastBeat = now
                    logger.info("registered with spliced", metadata: ["id": "\(reply.proxyID ?? -1)", "port": "\(listenPort)"])
                } catch {
                    logger.warning("control channel: \(error); retrying in \(backoff)s")
                    nextTry = now + backoff
                    backoff = min(backoff * 2, 5)
                }
            }
            if control != nil && now - lastBeat >= heartbeat {
                lastBeat = now
                relay.sendToEngine(ControlRequest(command: .heartbeat))
            }
            let soon = relay.runTimers(now: now)
            relay.poll(timeoutMilliseconds: soon.map { max(1, Int32($0 * 1000)) } ?? 100) { fd in
                guard let c = control, fd == c.fd else { return }
                if !outbox.isEmpty {
                    switch outbox.flush(fd: c.fd) {
                    case .done: relay.watch(c.fd, events: readable)
                    case .blocked: break
                    case .failed(let e):
                        control = nil
                        lostControl(c, relay, logger, RelayError(e))
                        outbox.clear()
                        return
                    }
                }
                do {
                    for answer in try c.drainAnswers() {
                        if let rules = answer.rules {
                            take(rules, relay, logger)
                        } else if answer.decision != nil || answer.join != nil {
                            relay.answered(answer)
                        } else if !answer.ok {
                            logger.warning("spliced refused: \(answer.error ?? "?")")
                        }
                    }
                } catch {
                    control = nil
                    lostControl(c, relay, logger, error)
                }
            }
        }
    }

    /// Rules pushed by spliced (or given at registration): new connections follow them.
    func take(_ rules: RuleSet, _ relay: Relay, _ logger: Logger) {
        guard rules != relay.rules else { return }
        relay.rules = rules
        relay.health?.update(pools: rules.pools)
        logger.info("splice rules in force", metadata: ["version": "\(rules.version)", "rules": "\(rules.rules.count)",
                                                       "default": "\(rules.defaultAction.rawValue)"])
    }

    /// The control connection `lost` broke: every connection the engine shares is dropped.
    /// The caller has already let go of it (`control` nil), so the aborts announce nothing;
    /// their announcements read `control`, which must not be held here (inout) meanwhile.
    func lostControl(_ lost: ControlClient, _ relay: Relay, _ logger: Logger, _ error: any Error) {
        _ = epoll_ctl(relay.epoll, EPOLL_CTL_DEL, lost.fd, nil)
        let n = relay.connections.count
        relay.dropAll()
        let t = relay.spliceCounts
        logger.error("lost spliced (\(error)); dropped \(n - relay.connections.count) connections, which go on in bypass; relaying \(relay.connections.count) balancer connections on",
                     metadata: ["splices-drained": "\(t.drained)", "fell-back": "\(t.fellBack)", "refused": "\(t.refused)",
                                "cancelled": "\(t.cancelled)", "handed-back": "\(t.handedBack)", "one-way": "\(t.oneWay)", "left-queue": "\(t.leftQueue)"])
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// What the proxy has to write to spliced, written as the control socket takes it (never
/// blocking the relay's loop).
final class ControlOutbox {
    enum Flush: Equatable { case done, blocked, failed(String) }
    private var bytes: [UInt8] = []
    private var sent = 0
    var isEmpty: Bool { sent == bytes.count }

    func append(_ more: [UInt8]) {
        if isEmpty { bytes.removeAll(keepingCapacity: true); sent = 0 }
        bytes.append(contentsOf: more)
    }

    func clear() {
        bytes.removeAll(keepingCapacity: true)
        sent = 0
    }

    /// Writes what the socket takes now.
    func flush(fd: Int32) -> Flush {
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return .blocked }
                return .failed("cannot write to spliced: \(String(cString: strerror(errno)))")
            }
            sent += n
        }
        clear()
        return .done
    }
}
