import Synchronization
import SpliceControlProtocol
import SpliceEngine
import SpliceWire

/// The engine and the proxy registry behind their locks, and what the control requests and
/// the proxies' comings and goings do to them. The daemon gives it requests, clock readings and
/// the deaths it observes (a connection closed, a pidfd readable), and logs and acts on what
/// comes back; the rules (which proxy takes new flows, which flows go to bypass, what a request
/// may change) are here, where tests reach them.
///
/// Lock order: the registry, then the engine; never the registry inside the engine's lock.
public final class Supervisor<Client: Hashable & Sendable>: Sendable {
    public let engine: Mutex<Engine>
    public let registry: Mutex<ProxyRegistry<Client>>
    /// The splice rules (seed 003): kept here, the one source of truth, and pushed to every
    /// registered proxy, which applies them.
    public let rules: Mutex<RuleStore>

    public init(engine: sending Engine, heartbeatLimit: Timestamp.Duration, rules: RuleSet = .empty) {
        self.engine = Mutex(engine)
        registry = Mutex(ProxyRegistry(heartbeatLimit: heartbeatLimit))
        let store = RuleStore(rules)
        self.rules = Mutex(store)
        self.engine.withLock { $0.rules = store.set }
    }

    /// What a request did, beyond its response, for the daemon to log or act on.
    public enum Event: Sendable, Equatable {
        /// A proxy registered on the connection: watch its heartbeats, not its idleness.
        case registered(id: Int, ProxyRegistration)
        case policyChanged(PolicyConfig)
        /// The rules changed: the daemon pushes them to every registered proxy.
        case rulesChanged(RuleSet)
    }

    /// Answers a control request. `status` and `flows` are the daemon's (they read the kernel).
    public func handle(_ request: ControlRequest, from client: Client, now: Timestamp,
                       status: () -> StatusReport, flows: () -> [FlowRecord]) -> (ControlResponse, Event?) {
        switch request.command {
        case .status:
            return (ControlResponse(ok: true, status: status()), nil)
        case .flows:
            return (ControlResponse(ok: true, flows: flows()), nil)
        case .register:
            guard let reg = request.proxy else { return (.failure("register needs a \"proxy\" object"), nil) }
            var services: [ServiceAddress] = []
            for text in reg.services ?? [] {
                guard let s = Supervisor.parseService(text) else {
                    return (.failure("register: bad service address '\(text)' (expected ADDRESS:PORT, [IPv6]:PORT)"), nil)
                }
                services.append(s)
            }
            let id = registry.withLock { r -> Int in
                let id = r.register(client, reg, now: now)
                engine.withLock {
                    $0.proxyRegistered(id: UInt16(truncatingIfNeeded: id))
                    $0.services.formUnion(services)
                    if !services.isEmpty { $0.balancerProxies.insert(UInt16(truncatingIfNeeded: id)) }
                }
                return id
            }
            return (ControlResponse(ok: true, proxyID: id, rules: rules.withLock { $0.set }), .registered(id: id, reg))
        case .heartbeat:
            guard registry.withLock({ $0.heartbeat(client, now: now) }) else {
                return (.failure("heartbeat from a connection that has not registered"), nil)
            }
            return (ControlResponse(ok: true), nil)
        case .closing:
            guard registry.withLock({ $0.isRegistered(client) }) else {
                return (.failure("closing from a connection that has not registered"), nil)
            }
            guard let c = request.close, let clientAddress = IPAddress(c.client), let server = IPAddress(c.server) else {
                return (.failure("closing needs a \"close\" object with client, clientPort, server, serverPort, towardClient"), nil)
            }
            engine.withLock {
                $0.proxyCloses(client: clientAddress, clientPort: c.clientPort, server: server, serverPort: c.serverPort,
                               towardClient: c.towardClient, abortive: c.abortive, now: now)
            }
            return (ControlResponse(ok: true), nil)
        case .decide, .stepOut:
            return (spliceStep(request, from: client, now: now), nil)
        case .join:
            return (joinStep(request, from: client, now: now), nil)
        case .resetBackend:
            guard let m = request.member, let address = IPAddress(m.address), m.port != 0 else {
                return (.failure("reset-backend needs a \"member\" object with an address and a port"), nil)
            }
            var answer = ControlResponse(ok: true)
            answer.flowsReset = engine.withLock { $0.resetJoined(backend: address, port: m.port) }
            return (answer, nil)
        case .rules, .setRules, .addRule, .removeRule, .moveRule,
             .addPool, .removePool, .addMember, .removeMember, .drainMember, .undrainMember:
            return editRules(request)
        case .policy:
            return (ControlResponse(ok: true, policy: engine.withLock { PolicyConfig($0.policy) }), nil)
        case .setPolicy:
            guard let p = request.policy else { return (.failure("set-policy needs a \"policy\" object"), nil) }
            do {
                let policy = try SplicePolicy(p)
                engine.withLock { $0.policy = policy }
                return (ControlResponse(ok: true, policy: PolicyConfig(policy)), .policyChanged(PolicyConfig(policy)))
            } catch {
                return (.failure("\(error)"), nil)
            }
        }
    }

    /// A proxy's `decide` or `step-out` for one of its connections. The answer carries the
    /// decision back, so that the proxy can match it to its connection.
    private func spliceStep(_ request: ControlRequest, from client: Client, now: Timestamp) -> ControlResponse {
        guard registry.withLock({ $0.isRegistered(client) }) else {
            return .failure("\(request.command.rawValue) from a connection that has not registered")
        }
        guard let d = request.decision, let clientAddress = IPAddress(d.client), let server = IPAddress(d.server) else {
            return .failure("\(request.command.rawValue) needs a \"decision\" object with client, clientPort, server, serverPort, action")
        }
        var answer = ControlResponse(ok: true, decision: d)
        answer.answers = request.command
        if request.command == .decide {
            let action: ProxyDecision = switch d.action {
            case .proxy: .proxy
            case .splice: .splice
            case .bypass: .bypass
            }
            let ruleID = UInt16(clamping: max(0, d.rule ?? 0))
            let outcome = engine.withLock {
                $0.decide(client: clientAddress, clientPort: d.clientPort, server: server, serverPort: d.serverPort,
                          action: action, ruleID: ruleID, now: now)
            }
            if case .refused(let why) = outcome { answer.ok = false; answer.error = why }
            return answer
        }
        let outcome = engine.withLock {
            $0.stepOut(client: clientAddress, clientPort: d.clientPort, server: server, serverPort: d.serverPort,
                       force: request.force ?? false, now: now)
        }
        switch outcome {
        case .spliced(let drained): answer.outcome = drained ? "drained" : "fell-back"
        case .notDrained: answer.notDrained()
        case .refused(let why): answer.refuse(why)
        }
        return answer
    }

    /// Is this a registered proxy's `step-out` or `join` (its join step)? Such a request checks
    /// that nothing is in flight, so it must wait while packets are queued that the engine has
    /// not seen; anything else is answered at once.
    public func waitsForQueues(_ request: ControlRequest, from client: Client) -> Bool {
        switch request.command {
        case .stepOut: guard request.decision != nil else { return false }
        case .join: guard request.join?.step == .join else { return false }
        default: return false
        }
        return registry.withLock { $0.isRegistered(client) }
    }

    /// Counts a request held until the engine had seen the queues' packets, and one answered
    /// at the bound before it had.
    public func countHeldForQueue() {
        engine.withLock { $0.countDeferredForQueue() }
    }

    public func countHeldPastBound() {
        engine.withLock { $0.countHeldPastBound() }
    }

    /// "10.0.0.1:80" or "[2001:db8::1]:80".
    static func parseService(_ text: String) -> ServiceAddress? {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]), port != 0 else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard let address = IPAddress(host) else { return nil }
        return ServiceAddress(address: address, port: port)
    }

    /// A proxy's `join` (prepare, join, cancel) of its two balancer connections.
    private func joinStep(_ request: ControlRequest, from client: Client, now: Timestamp) -> ControlResponse {
        guard registry.withLock({ $0.isRegistered(client) }) else {
            return .failure("join from a connection that has not registered")
        }
        guard let m = request.join, let c = IPAddress(m.client), let s = IPAddress(m.service),
              let l = IPAddress(m.local), let b = IPAddress(m.backend) else {
            return .failure("join needs a \"join\" object with step, client, clientPort, service, servicePort, local, localPort, backend, backendPort")
        }
        var r = JoinRequest(client: c, clientPort: m.clientPort, service: s, servicePort: m.servicePort,
                            local: l, localPort: m.localPort, backend: b, backendPort: m.backendPort)
        r.readFromClient = m.readFromClient ?? 0
        r.writtenToClient = m.writtenToClient ?? 0
        r.readFromBackend = m.readFromBackend ?? 0
        r.writtenToBackend = m.writtenToBackend ?? 0
        r.ruleID = UInt16(clamping: max(0, m.rule ?? 0))
        r.returnAfter = m.returnAfter
        r.returnWindow = m.returnWindow
        r.chunkLeft = m.chunkLeft
        if let w = m.oneWay {
            guard let d = OneWay(rawValue: w) else {
                return .failure("join: oneWay '\(w)': expected to-client or to-server")
            }
            r.oneWay = d
        }
        var answer = ControlResponse(ok: true)
        answer.answers = .join
        answer.join = m
        func joined(_ outcome: Engine.JoinOutcome, done: String) {
            switch outcome {
            case .accepted: answer.outcome = done
            case .notDrained: answer.notDrained()
            case .refused(let why): answer.refuse(why)
            }
        }
        func returned(_ outcome: Engine.ReturnOutcome) {
            switch outcome {
            case .armed: answer.outcome = "armed"
            case .returned: answer.outcome = "returned"
            case .joinedForLife: answer.outcome = "joined"
            case .refused(let why): answer.refuse(why)
            }
        }
        switch m.step {
        case .prepare: joined(engine.withLock { $0.prepareJoin(r) }, done: "prepare")
        case .join: joined(engine.withLock { $0.join(r, now: now) }, done: "joined")
        case .cancel:
            engine.withLock { $0.cancelJoin(r) }
            answer.outcome = "cancel"
        case .relayed:
            if engine.withLock({ $0.letGoRelayed(r) }) {
                answer.outcome = "relayed"
            } else {
                answer.refuse("no balanced pair of these connections without a join under way")
            }
        case .arm: returned(engine.withLock { $0.armReturn(r) })
        case .release: returned(engine.withLock { $0.releaseReturn(r) })
        case .end:
            switch engine.withLock({ $0.chunkedEnd(r) }) {
            case .ended(let rest): answer = ControlResponse.chunkEndAnswer(m, rest: rest)
            case .joinedForLife: answer = ControlResponse.chunkEndAnswer(m, rest: nil)
            case .open:
                answer.ok = false
                answer.error = "the response's last chunk has not gone by yet"
                answer.outcome = "open"
            case .refused(let why): answer.refuse(why)
            }
        }
        return answer
    }

    /// The rule and pool commands: every change is checked whole (the error names the rule or
    /// pool and the field) and bumps the version; new connections follow it, existing ones keep
    /// their decision (and their backend).
    private func editRules(_ request: ControlRequest) -> (ControlResponse, Event?) {
        rules.withLock { store in
            do {
                switch request.command {
                case .rules:
                    return (ControlResponse(ok: true, rules: store.set), nil)
                case .setRules:
                    guard let r = request.rules else { throw RuleError("set-rules needs a \"rules\" object") }
                    try store.replace(r)
                case .addRule:
                    guard let r = request.rule else { throw RuleError("add-rule needs a \"rule\" object") }
                    try store.add(r, at: request.position)
                case .removeRule:
                    guard let id = request.ruleID else { throw RuleError("remove-rule needs a \"ruleID\"") }
                    try store.remove(id)
                case .moveRule:
                    guard let id = request.ruleID, let to = request.position else {
                        throw RuleError("move-rule needs a \"ruleID\" and a \"position\"")
                    }
                    try store.move(id, to: to)
                case .addPool:
                    guard let p = request.pool else { throw RuleError("add-pool needs a \"pool\" object") }
                    try store.addPool(p)
                case .removePool:
                    guard let name = request.poolName else { throw RuleError("remove-pool needs a \"poolName\"") }
                    try store.removePool(name)
                case .addMember, .removeMember, .drainMember, .undrainMember:
                    guard let name = request.poolName, let member = request.member else {
                        throw RuleError("\(request.command.rawValue) needs a \"poolName\" and a \"member\" object")
                    }
                    switch request.command {
                    case .addMember: try store.addMember(pool: name, member)
                    case .removeMember: try store.removeMember(pool: name, key: member.key)
                    default: try store.setDrained(pool: name, key: member.key, request.command == .drainMember)
                    }
                default:
                    throw RuleError("not a rule command")
                }
                let set = store.set
                engine.withLock { $0.rules = set }
                return (ControlResponse(ok: true, rules: set), .rulesChanged(set))
            } catch {
                return (.failure("\(error)"), nil)
            }
        }
    }

    /// A proxy gone, with the flows it had that are in bypass now.
    public struct Retired<Proxy: Sendable>: Sendable {
        public var proxy: Proxy
        public var flowsMoved: Int
    }

    /// The registered proxy of a connection that closed; nil if none was registered there.
    /// `successor`: the proxy that takes new flows now, if another had to.
    public func connectionClosed(_ client: Client, now: Timestamp)
        -> (retired: Retired<ProxyRegistry<Client>.Registered>, successor: Int?)? {
        registry.withLock { r in
            guard let p = r.remove(client) else { return nil }
            let (moved, successor) = retire([p.id], r, now: now)
            return (Retired(proxy: p, flowsMoved: moved[0]), successor)
        }
    }

    /// The registered proxies silent past the heartbeat limit: as good as dead. The daemon
    /// closes their connections (which tells them to drop their relays and register again).
    public func expireSilent(now: Timestamp)
        -> (retired: [(client: Client, Retired<ProxyRegistry<Client>.Registered>)], successor: Int?) {
        registry.withLock { r in
            let silent = r.removeSilent(now: now)
            guard !silent.isEmpty else { return ([], nil) }
            let (moved, successor) = retire(silent.map(\.proxy.id), r, now: now)
            return (zip(silent, moved).map { ($0.client, Retired(proxy: $0.proxy, flowsMoved: $1)) }, successor)
        }
    }

    /// The watched proxy (HAProxy) exited; nil if none was watched. The caller closes its pidfd.
    public func watchedExited(now: Timestamp) -> (retired: Retired<ProxyRegistry<Client>.Watched>, successor: Int?)? {
        registry.withLock { r in
            guard let w = r.watchedDied() else { return nil }
            let (moved, successor) = retire([w.id], r, now: now)
            return (Retired(proxy: w, flowsMoved: moved[0]), successor)
        }
    }

    /// Starts watching a proxy of another make; it takes new flows. Returns its id.
    public func watch(pid: Int32, pidfd: Int32, now: Timestamp) -> Int {
        registry.withLock { r in
            let id = r.watch(pid: pid, pidfd: pidfd, now: now)
            engine.withLock { $0.proxyRegistered(id: UInt16(truncatingIfNeeded: id)) }
            return id
        }
    }

    /// Proxies already out of the registry: their flows go to bypass, and when none takes new
    /// flows now, the registry's successor does. Registry locked; takes the engine's lock.
    private func retire(_ ids: [Int], _ r: ProxyRegistry<Client>, now: Timestamp) -> (moved: [Int], successor: Int?) {
        engine.withLock { e in
            let moved = ids.map { e.proxyGone(id: UInt16(truncatingIfNeeded: $0)) }
            guard e.activeProxy == 0, let next = r.successor(now: now) else { return (moved, nil) }
            e.proxyRegistered(id: UInt16(truncatingIfNeeded: next))
            return (moved, next)
        }
    }
}

extension ControlResponse {
    /// The answer to a `step-out` or `join` whose bytes are still in flight: ask again.
    mutating func notDrained() {
        ok = false
        outcome = "not-drained"
        error = "bytes are still in flight through the proxy"
    }

    mutating func refuse(_ why: String) {
        ok = false
        error = why
    }
}

extension ControlResponse {
    /// What a joined chunked response came to, for the proxy: where it ends (`end`, with
    /// `returnAfter`), or joined for the connection's life (`joined`). The answer to its
    /// `end`, and the message spliced sends it unasked as soon as it knows
    /// (`chunkEndMessage`).
    public static func chunkEndAnswer(_ m: JoinMessage, rest: UInt64?) -> ControlResponse {
        var answer = ControlResponse(ok: true, outcome: rest == nil ? "joined" : "end")
        answer.answers = .join
        var m = m
        m.step = .end
        m.returnAfter = rest
        answer.join = m
        return answer
    }

    /// The unasked message for an end the engine found (or a framing it lost).
    public static func chunkEndMessage(_ e: ChunkEnd) -> ControlResponse {
        let r = e.request
        let m = JoinMessage(step: .end, client: r.client.description, clientPort: r.clientPort,
                            service: r.service.description, servicePort: r.servicePort,
                            local: r.local.description, localPort: r.localPort,
                            backend: r.backend.description, backendPort: r.backendPort)
        return chunkEndAnswer(m, rest: e.rest)
    }
}

extension JoinMessage {
    /// The client's connection, as the key that keeps a flow's messages in order.
    public var flowKey: String { "\(client) \(clientPort) \(service) \(servicePort)" }
}

extension ControlRequest {
    /// The flow a request is about (its `join`, or its `decision`), as a key; nil for a request
    /// about no flow. Keeps a flow's requests in order when one of them waits.
    public var flowKey: String? {
        if let m = join { return m.flowKey }
        if let d = decision { return "\(d.client) \(d.clientPort) \(d.server) \(d.serverPort)" }
        return nil
    }
}
