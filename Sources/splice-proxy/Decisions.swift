#if canImport(Glibc)
import Glibc
#endif
import CLinuxSupport
import SpliceControlProtocol
import SpliceWire

/// Where a relayed connection stands with the splice rules (seed 003; Docs/splicing.md).
enum Stage: Equatable {
    /// Waiting for the client's first bytes (read through userspace, written on as they come).
    case deciding
    /// The request matched rules that need the response head: waiting for it.
    case awaitingResponse
    /// Relaying, for good (`proxy`) or until the splice is asked for.
    case relaying
    /// Relaying one response of a per-request connection, up to its end (Balancer.swift).
    case relayingResponse
    /// Relaying a chunked response of a per-request connection, its end found from its
    /// framing (KeepAlive.swift); then as `relayingResponse`.
    case relayingChunked
    /// Joined for one chunked response from inside a chunk (KeepAlive.swift): the engine
    /// follows the framing and says where the response ends (`end`); the sockets wait
    /// untouched until then, and are then taken over there as after any join for one response.
    case chunkJoined
    /// The engine was told to splice: the senders see a zero window; the relay writes out
    /// what it holds and waits until every byte it wrote is acknowledged.
    case pendingSplice
    /// Asked the engine to step out; nothing moves until it answers.
    case steppingOut
}

/// Splices by outcome, as this proxy saw them (logged when it loses spliced; `splicectl status`
/// shows the engine's own counts).
struct SpliceTally {
    var drained = 0
    var fellBack = 0
    var refused = 0
    var cancelled = 0
    /// Joins for one response whose sockets were taken over (keep-alive re-routing).
    var handedBack = 0
    /// One-way joins made (the other direction relayed).
    var oneWay = 0
    /// Connections relayed to their end that left the queue (`Relay.leaveQueue`).
    var leftQueue = 0
}

extension Relay {
    /// How soon the engine is asked again when it saw bytes still in flight.
    static let askAgain = 0.002
    /// How often a joined chunked response's end is asked for, beside the engine's own word.
    static let chunkEndPoll = 1.0
    /// How long the relay waits for the engine's answer to a step-out before relaying on.
    static let answerPatience = 5.0

    func tupleKey(_ c: Connection) -> TupleKey {
        TupleKey(client: c.client.address, clientPort: c.client.port, server: c.server.address, serverPort: c.server.port)
    }

    func decision(_ c: Connection, _ action: RuleAction) -> FlowDecision {
        FlowDecision(client: c.client.address.description, clientPort: c.client.port,
                     server: c.server.address.description, serverPort: c.server.port, action: action, rule: c.rule)
    }

    /// A new connection: the rules that can decide before any byte do; otherwise both
    /// directions are read through userspace until the bytes the rules need have been seen.
    func opened(_ c: Connection) {
        if c.service != nil {
            // A balancer connection: its backend is picked from its request, always read.
            c.stage = .deciding
            c.toServer.inspect = true
            c.deadline = monotonicSeconds() + Double(rules.firstBytesTimeoutMilliseconds) / 1000
            deciding.insert(c.id)
            return
        }
        let facts = ConnectionFacts(client: c.client.address, server: c.server.address, serverPort: c.server.port)
        switch rules.decide(connection: facts) {
        case .decided(let action, let rule):
            apply(c, action, rule: rule)
        case .needRequest, .needResponse:
            c.stage = .deciding
            c.toServer.inspect = true
            c.toClient.inspect = rules.rules.contains { $0.match.needsResponse }
            c.deadline = monotonicSeconds() + Double(rules.firstBytesTimeoutMilliseconds) / 1000
            deciding.insert(c.id)
        }
    }

    /// New bytes were read in a direction that is inspected: decide if they tell enough.
    func inspected(_ c: Connection, timedOut: Bool = false) {
        let facts = ConnectionFacts(client: c.client.address, server: c.server.address, serverPort: c.server.port)
        if c.stage == .deciding && c.handedBack && c.toServer.held.isEmpty && (timedOut || c.toServer.sourceDone) {
            // A keep-alive connection back from a response: the client closed it, or sent
            // nothing more in time.
            closeKeepAlive(c)
            return
        }
        if c.stage == .deciding && c.service != nil && c.toServer.held.isEmpty && !timedOut && !c.toServer.sourceDone {
            // A balancer connection is decided on its request (its member may hang on it):
            // nothing to decide on before its first byte, even for a rule that matches anything.
            return
        }
        if c.stage == .awaitingResponse && c.perRequest {
            perRequestResponse(c, timedOut: timedOut)
            return
        }
        if c.stage == .deciding {
            let request = RequestFacts(firstBytes: c.toServer.held, isFinal: timedOut || c.toServer.sourceDone)
            switch rules.decide(connection: facts, request: request.proto == nil && request.isFinal ? nil : request) {
            case .needRequest:
                return
            case .decided(let action, let rule):
                apply(c, action, rule: rule)
            case .needResponse(let candidates, let fallback, let fallbackRule) where c.service != nil:
                // A balancer connection: its request goes to a backend first (Balancer.swift).
                deciding.remove(c.id)
                c.stage = .awaitingResponse
                c.candidates = candidates
                c.fallback = fallback
                c.fallbackRule = fallbackRule
                c.deadline = monotonicSeconds() + Double(rules.firstBytesTimeoutMilliseconds) / 1000
                deciding.insert(c.id)
                awaitResponse(c, candidates: candidates)
            case .needResponse(let candidates, let fallback, let fallbackRule):
                c.stage = .awaitingResponse
                c.candidates = candidates
                c.fallback = fallback
                c.fallbackRule = fallbackRule
                c.toServer.stopInspecting()
                c.toClient.inspect = true
                // The response head gets a wait of its own (the same length), from now.
                if !timedOut { c.deadline = monotonicSeconds() + Double(rules.firstBytesTimeoutMilliseconds) / 1000 }
                inspected(c, timedOut: timedOut)
            }
        } else if c.stage == .awaitingResponse {
            let head: HTTPResponseHead?
            switch HTTPResponseHead.parse(c.toClient.held) {
            case .complete(let h): head = h
            case .incomplete where !timedOut && !c.toClient.sourceDone && c.toClient.held.count < maxPeekLength: return
            default: head = nil
            }
            if case .decided(let action, let rule) = rules.decide(response: head, candidates: c.candidates,
                                                                    fallback: c.fallback, fallbackRuleID: c.fallbackRule) {
                apply(c, action, rule: rule)
            }
        }
    }

    /// The decision taken: told to the engine (which shows it in `splicectl flows`); `splice`
    /// and `bypass` start the splice. From here on the bytes go through pipes again.
    func apply(_ c: Connection, _ action: RuleAction, rule: Int?) {
        deciding.remove(c.id)
        if c.service != nil {
            applyService(c, action, rule: rule)
            return
        }
        c.action = action
        c.rule = rule
        c.toServer.stopInspecting()
        c.toClient.stopInspecting()
        // With no rule at all (the resilient mode alone) every connection is relayed by the
        // default, which is what the engine assumes of a flow with no decision: not reported,
        // one control message less per connection (Docs/control-protocol.md).
        if action != .proxy || rule != nil || !rules.rules.isEmpty {
            sendToEngine(ControlRequest(command: .decide, decision: decision(c, action)))
        }
        if action == .proxy {
            c.stage = .relaying
            return
        }
        c.stage = .pendingSplice
        c.spliceSince = monotonicSeconds()
        c.nextAsk = c.spliceSince
        pendingSplices.insert(c.id)
    }

    /// Everything the relay wrote has been acknowledged, and it holds nothing: no byte is in
    /// the pipes, held unsent, or unread in either socket.
    func drained(_ c: Connection) -> Bool {
        guard c.upConnected, c.toServer.empty, c.toClient.empty else { return false }
        for fd in [c.down, c.up] where tcpsplice_inq(fd) != 0 || tcpsplice_outq(fd) != 0 { return false }
        return true
    }

    /// The loop's timers: first bytes that did not come in time, splices to step out of.
    /// Returns how soon it wants to run again (seconds), if sooner than the loop's own tick.
    func runTimers(now: Double) -> Double? {
        let soonest = resetLeftovers(now: now)
        if let health {
            for b in health.takeNewlyDown() {
                if engineConnected { sendToEngine(ControlRequest(command: .resetBackend, member: b)) }
                cutConnections(to: b)
            }
        }
        if !deciding.isEmpty {
            for id in Array(deciding) {
                guard let c = connections[id], now >= c.deadline else { continue }
                inspected(c, timedOut: true)
                if c.stage == .awaitingResponse { deciding.remove(id) }
                refreshInterest(c)
            }
        }
        guard !pendingSplices.isEmpty else { return soonest }
        for id in Array(pendingSplices) {
            if let c = connections[id], c.stage == .steppingOut, now - c.nextAsk > Relay.answerPatience {
                // No answer (one that could not name its connection, say): relay on.
                refused(c, "no answer from spliced in \(Relay.answerPatience) s")
                continue
            }
            // (A joined chunked response waits for its end in the timers too: `joinTimer`
            // asks the engine now and then.)
            guard let c = connections[id], c.stage == .pendingSplice || c.stage == .chunkJoined, now >= c.nextAsk else { continue }
            if c.service != nil {
                joinTimer(c, now: now)
                continue
            }
            let waited = now - c.spliceSince
            guard waited >= settings.minimumPending else { continue }
            let overdue = waited > settings.minimumPending + settings.drainBound
            guard overdue || drained(c) else { continue }
            c.stage = .steppingOut
            c.nextAsk = now
            refreshInterest(c)
            var request = ControlRequest(command: .stepOut, decision: decision(c, c.action ?? .splice))
            request.force = overdue
            sendToEngine(request)
        }
        return Relay.askAgain
    }

    func refreshInterest(_ c: Connection) {
        let d = interest(c, fd: c.down), u = interest(c, fd: c.up)
        if d != c.downInterest { rewatch(c.down, from: c.downInterest, to: d); c.downInterest = d }
        if u != c.upInterest { rewatch(c.up, from: c.upInterest, to: u); c.upInterest = u }
    }

    /// The engine's answer to a `decide` or `step-out`.
    func answered(_ r: ControlResponse) {
        if r.answers == .join {
            joinAnswered(r)
            return
        }
        guard let d = r.decision,
              let id = byTuple[TupleKey(d.client, d.clientPort, d.server, d.serverPort)],
              let c = connections[id] else { return }
        // A decision's answer: only a refusal matters (the splice will not happen).
        if r.answers == .decide {
            if !r.ok {
                if c.stage == .pendingSplice || c.stage == .steppingOut {
                    refused(c, r.error)
                } else {
                    logger.debug("spliced refused a decision: \(r.error ?? "?")")
                }
            }
            return
        }
        switch c.stage {
        case .steppingOut:
            if r.ok {
                if r.outcome == "drained" { spliceCounts.drained += 1 } else { spliceCounts.fellBack += 1 }
                stepOut(c)
            } else if r.outcome == "not-drained" {
                // Bytes still in flight (the engine sees them, the sockets do not yet): wait.
                c.stage = .pendingSplice
                c.nextAsk = monotonicSeconds() + Relay.askAgain
                refreshInterest(c)
                service(c, fd: -1, events: 0)
            } else {
                refused(c, r.error)
            }
        default:
            break
        }
    }

    /// A member the health check took out: the connections the proxy still relays to it are
    /// reset, as the joined ones are by the engine (a hung backend would leave them waiting);
    /// a keep-alive connection waiting for its next request just gets a new backend
    /// connection for it.
    func cutConnections(to member: Backend) {
        guard let address = IPAddress(member.address) else { return }
        for c in Array(connections.values) where c.backend?.address == address && c.backend?.port == member.port {
            if c.stage == .deciding && c.handedBack {
                c.backendClosing = true
                continue
            }
            logger.info("resetting \(c.client) -> \(c.server): its backend \(member.key) is down")
            abort(c)
        }
    }

    /// The splice will not happen: the engine is told (a decision `proxy`, or a join cancelled).
    func cancelSplice(_ c: Connection) {
        if c.service != nil {
            if c.joinPrepared { sendJoin(c, .cancel) }
        } else {
            sendToEngine(ControlRequest(command: .decide, decision: decision(c, .proxy)))
        }
        spliceCounts.cancelled += 1
    }

    /// The engine will not splice the connection (it is no longer resilient, say): relay on.
    func refused(_ c: Connection, _ why: String?) {
        spliceCounts.refused += 1
        // A balanced connection's join refused is rare enough to be worth a line.
        logger.log(level: c.service != nil ? .info : .debug, "splice refused for \(c.client) -> \(c.server): \(why ?? "?")")
        pendingSplices.remove(c.id)
        c.stage = relayStage(c)
        refreshInterest(c)
        service(c, fd: -1, events: 0)
    }

    /// Where a connection whose join did not happen goes on: relaying (its response, for a
    /// per-request connection; the chunk it was to join, for a chunked one).
    func relayStage(_ c: Connection) -> Stage {
        defer { c.chunkJoin = false }
        return c.chunkJoin ? .relayingChunked : c.perRequest ? .relayingResponse : .relaying
    }

    /// The splice is done: the sockets go without a packet on the wire (TCP_REPAIR); the
    /// engine forwards the flow from now on.
    func stepOut(_ c: Connection) {
        let down = c.down, up = c.up
        if tcpsplice_repair_on(down) != 0 || tcpsplice_repair_on(up) != 0 {
            logger.error("TCP_REPAIR: \(String(cString: strerror(errno))); closing \(c.client) -> \(c.server) abortively (the engine drops what the sockets send)")
        }
        release(c, closeSockets: false)
        close(down)
        close(up)
    }
}
