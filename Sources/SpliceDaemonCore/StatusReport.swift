import SpliceControlProtocol
import SpliceEngine

// What `splicectl status`, `flows` and `policy` show, built from the engine's and the
// registry's state. The daemon adds only what it reads from the kernel (queues, memory of the
// process) and its control socket's counters.

/// The engine's part of the status report, taken in one go under the engine's lock.
public struct EngineStatus: Sendable, Equatable {
    public var counters: EngineCounters
    public var flows: FlowCounts
    public var memory: MemoryReport
    public var activeProxy: Int?
    public var policy: PolicyConfig
}

extension Engine {
    /// A walk over the table (for the counts by state and mode): call it for a report, not per
    /// packet.
    public func status() -> EngineStatus {
        let counts = flowCounts()
        let m = table.memory
        let inUse = table.count * m.entryBytes + table.blockCount * m.blockBytes + m.indexBytes
        return EngineStatus(
            counters: counters,
            flows: FlowCounts(total: table.count, capacity: table.capacity,
                              byState: Dictionary(uniqueKeysWithValues: counts.byState.map { ($0.key.description, $0.value) }),
                              byMode: Dictionary(uniqueKeysWithValues: counts.byMode.map { ($0.key.description, $0.value) }),
                              events: counters.flows),
            memory: MemoryReport(entryBytes: m.entryBytes, blockBytes: m.blockBytes, blocksInUse: table.blockCount,
                                 blockCapacity: table.blockCapacity, indexBytes: m.indexBytes,
                                 reservedBytes: m.reservedBytes, touchedBytes: m.touchedBytes, inUseBytes: inUse,
                                 residentBytes: nil, peakResidentBytes: nil),
            activeProxy: activeProxy == 0 ? nil : Int(activeProxy),
            policy: PolicyConfig(policy))
    }

    /// One record per flow, for `splicectl flows` (a walk over the table).
    public func flowRecords(now: Timestamp) -> [FlowRecord] {
        flows(now: now).map(FlowRecord.init)
    }
}

extension StatusReport {
    /// The report from the engine's part and the daemon's. `injectorFailures`: packets the
    /// daemon's injector could not send (counted beside the engine's own injection failures);
    /// `resident`: the process's resident set and its peak, when known.
    public init(engine: EngineStatus, version: String, pid: Int32, uptimeSeconds: Double, queues: [QueueReport],
                proxies: [ProxyReport], control: ControlReport?, injectorFailures: UInt64,
                resident: (resident: Int, peak: Int)?) {
        var resilient = engine.counters.resilient
        resilient.injectionFailures &+= injectorFailures
        var memory = engine.memory
        memory.residentBytes = resident?.resident
        memory.peakResidentBytes = resident?.peak
        self.init(version: version, pid: pid, uptimeSeconds: uptimeSeconds, queues: queues,
                  packets: engine.counters.packets, verdicts: engine.counters.verdicts, flows: engine.flows,
                  memory: memory, proxies: proxies,
                  resilient: ResilientReport(counters: resilient, activeProxy: engine.activeProxy),
                  policy: engine.policy, control: control, splices: engine.counters.splices)
        balancer = engine.counters.balancer
    }
}

extension ProxyRegistry {
    /// The proxies in the order of their ids; the watched one (HAProxy) last, named after its
    /// pidfile, its heartbeat "now" (its pidfd says whether it lives).
    public func reports(now: Timestamp, pidfile: String?) -> [ProxyReport] {
        var out = proxies.values.sorted { $0.id < $1.id }.map {
            ProxyReport(id: $0.id, name: $0.registration.name, pid: $0.registration.pid,
                        listenPort: $0.registration.listenPort,
                        registeredSecondsAgo: now.seconds(since: $0.registeredAt),
                        lastHeartbeatSecondsAgo: now.seconds(since: $0.lastHeartbeat))
        }
        if let w = watched {
            out.append(ProxyReport(id: w.id, name: "pidfile:\(pidfile ?? "")", pid: w.pid, listenPort: nil,
                                   registeredSecondsAgo: now.seconds(since: w.registeredAt), lastHeartbeatSecondsAgo: 0))
        }
        return out
    }
}

extension FlowRecord {
    public init(_ f: FlowSnapshot) {
        self.init(family: f.initiator.isIPv4 ? 4 : 6, src: f.initiator.description, sport: f.initiatorPort,
                  dst: f.responder.description, dport: f.responderPort, state: f.state.description,
                  mode: f.mode.description, reason: f.reason.description, ageSeconds: f.ageSeconds,
                  idleSeconds: f.idleSeconds, bytesOrig: f.bytesFromInitiator, bytesReply: f.bytesFromResponder,
                  pickedUp: f.pickedUp, hasBlock: f.hasBlock,
                  phase: f.phase == .none ? nil : f.phase.description,
                  proxy: f.proxyID == 0 ? nil : Int(f.proxyID),
                  decision: f.decision == .none ? nil : f.decision.description,
                  rule: f.decision == .none ? nil : Int(f.ruleID),
                  splice: f.splice == .none ? nil : f.splice.description,
                  spliceOutcome: f.splice == .spliced ? (f.spliceDrained ? "drained" : "fell-back") : nil,
                  packets: f.hasBlock ? f.packets : nil,
                  packetsAfterSplice: f.splice == .spliced ? f.packets &- UInt64(f.packetsAtSplice) : nil)
        if f.join != .none {
            join = f.join.description
            joinedTo = f.joinedTo
            joinOneWay = f.joinOneWay?.rawValue
            rule = Int(f.joinRule)
        }
    }
}

extension PolicyConfig {
    public init(_ p: SplicePolicy) {
        self.init(enabled: p.enabled, ports: p.ports.ranges, servers: p.servers.map(\.description),
                  clients: p.clients.map(\.description))
    }
}

extension SplicePolicy {
    /// Validates a policy from the control socket or the command line; the error names the
    /// field that is wrong.
    public init(_ c: PolicyConfig) throws {
        try self.init(validating: c.enabled, ports: c.ports, servers: c.servers, clients: c.clients)
    }
}
