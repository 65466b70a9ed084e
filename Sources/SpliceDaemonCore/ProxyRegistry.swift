import SpliceControlProtocol
import SpliceEngine

/// Which proxies spliced knows and which one takes new flows: the daemon's bookkeeping, with
/// no I/O and no lock (the daemon holds it behind one; lock order: the registry, then the
/// engine). `Client` names a control connection.
///
/// Two kinds of proxy: `splice-proxy` registers on a control connection and heartbeats; a proxy
/// of another make (HAProxy) is watched through its pidfile. Each gets an id, and the most
/// recently registered one takes new flows; when it goes, the most recent one still alive
/// (`successor`) does.
public struct ProxyRegistry<Client: Hashable & Sendable>: Sendable {
    public struct Registered: Sendable, Equatable {
        public var id: Int
        public var registration: ProxyRegistration
        public var registeredAt: Timestamp
        public var lastHeartbeat: Timestamp
        /// Registrations before it, plus one: the latest takes new flows.
        public var order: UInt64
    }

    public struct Watched: Sendable, Equatable {
        public var id: Int
        public var pid: Int32
        /// Readable when the process exits.
        public var pidfd: Int32
        public var registeredAt: Timestamp
        public var order: UInt64
    }

    public private(set) var proxies: [Client: Registered] = [:]
    public private(set) var watched: Watched?
    /// The pid of the watched proxy that died last: its pidfile is not read again until it
    /// names another process.
    public private(set) var lastDeadPid: Int32 = 0
    /// A registered proxy silent for longer is as good as dead.
    public let heartbeatLimit: Timestamp.Duration
    private var nextID = 1
    private var registrations: UInt64 = 0

    public init(heartbeatLimit: Timestamp.Duration) {
        self.heartbeatLimit = heartbeatLimit
    }

    /// A proxy registers on `client` (again on the same connection: it keeps its id). Returns
    /// its id; it takes new flows from now on.
    public mutating func register(_ client: Client, _ registration: ProxyRegistration, now: Timestamp) -> Int {
        let id = proxies[client]?.id ?? takeID()
        registrations += 1
        proxies[client] = Registered(id: id, registration: registration, registeredAt: now, lastHeartbeat: now,
                                     order: registrations)
        return id
    }

    /// A heartbeat on `client`; false if no proxy registered there.
    public mutating func heartbeat(_ client: Client, now: Timestamp) -> Bool {
        guard proxies[client] != nil else { return false }
        proxies[client]?.lastHeartbeat = now
        return true
    }

    public func isRegistered(_ client: Client) -> Bool { proxies[client] != nil }

    /// The proxy registered on `client` is gone (its connection closed).
    public mutating func remove(_ client: Client) -> Registered? {
        proxies.removeValue(forKey: client)
    }

    /// Removes and returns the proxies whose last heartbeat is older than the limit.
    public mutating func removeSilent(now: Timestamp) -> [(client: Client, proxy: Registered)] {
        let silent = proxies.filter { !alive($0.value, now: now) }
        for (client, _) in silent { proxies[client] = nil }
        return silent.map { (client: $0.key, proxy: $0.value) }
    }

    /// Starts watching a proxy of another make (its pid, its pidfd). Returns its id; it takes
    /// new flows from now on.
    public mutating func watch(pid: Int32, pidfd: Int32, now: Timestamp) -> Int {
        let id = takeID()
        registrations += 1
        watched = Watched(id: id, pid: pid, pidfd: pidfd, registeredAt: now, order: registrations)
        return id
    }

    /// The watched proxy exited: returns it (the caller closes its pidfd).
    public mutating func watchedDied() -> Watched? {
        guard let w = watched else { return nil }
        watched = nil
        lastDeadPid = w.pid
        return w
    }

    /// A pid read from the pidfile that turned out dead already.
    public mutating func pidIsDead(_ pid: Int32) { lastDeadPid = pid }

    /// The proxy that takes new flows when the one that did is gone: the most recently
    /// registered one still alive (heartbeating, or the watched one); nil if none is.
    public func successor(now: Timestamp) -> Int? {
        var best: (order: UInt64, id: Int)?
        for p in proxies.values where alive(p, now: now) {
            if p.order > best?.order ?? 0 { best = (p.order, p.id) }
        }
        if let w = watched, w.order > best?.order ?? 0 { best = (w.order, w.id) }
        return best?.id
    }

    private func alive(_ p: Registered, now: Timestamp) -> Bool {
        now.deciseconds <= p.lastHeartbeat.deciseconds &+ heartbeatLimit.deciseconds
    }

    private mutating func takeID() -> Int {
        defer { nextID += 1 }
        return nextID
    }
}
