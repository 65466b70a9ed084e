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

    public init(engine: sending Engine, heartbeatLimit: Timestamp.Duration) {
        self.engine = Mutex(engine)
        registry = Mutex(ProxyRegistry(heartbeatLimit: heartbeatLimit))
    }

    /// What a request did, beyond its response, for the daemon to log or act on.
    public enum Event: Sendable, Equatable {
        /// A proxy registered on the connection: watch its heartbeats, not its idleness.
        case registered(id: Int, ProxyRegistration)
        case policyChanged(PolicyConfig)
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
            let id = registry.withLock { r -> Int in
                let id = r.register(client, reg, now: now)
                engine.withLock { $0.proxyRegistered(id: UInt16(truncatingIfNeeded: id)) }
                return id
            }
            return (ControlResponse(ok: true, proxyID: id), .registered(id: id, reg))
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
