import Testing
import SpliceControlProtocol
import SpliceDaemonCore
import SpliceEngine

@Suite("Supervisor: control requests and proxies' deaths, as they reach the engine")
struct SupervisorTests {
    func supervisor() -> Supervisor<Int> {
        Supervisor(engine: Engine(table: FlowTable(capacity: 16), now: .seconds(0)),
                   heartbeatLimit: .init(deciseconds: 30))
    }
    func request(_ command: ControlRequest.Command, proxy: ProxyRegistration? = nil, close: CloseIntent? = nil,
                 policy: PolicyConfig? = nil) -> ControlRequest {
        var r = ControlRequest(command: command)
        r.proxy = proxy
        r.close = close
        r.policy = policy
        return r
    }
    func send(_ s: Supervisor<Int>, _ r: ControlRequest, from client: Int, at seconds: Double = 0)
        -> (ControlResponse, Supervisor<Int>.Event?) {
        s.handle(r, from: client, now: .seconds(seconds), status: { fatalError("not asked") }, flows: { [] })
    }
    let proxyA = ProxyRegistration(name: "a", pid: 10, listenPort: 8081)
    let proxyB = ProxyRegistration(name: "b", pid: 11, listenPort: 8081)

    @Test("a registered proxy takes new flows; the engine is told its id")
    func register() {
        let s = supervisor()
        let (r, event) = send(s, request(.register, proxy: proxyA), from: 1)
        #expect(r.ok && r.proxyID == 1 && event == .registered(id: 1, proxyA))
        #expect(s.engine.withLock { $0.activeProxy } == 1)
        let (bad, none) = send(s, request(.register), from: 2)
        #expect(!bad.ok && bad.error?.contains("proxy") == true && none == nil)
    }

    @Test("heartbeats and closings only from a connection that registered")
    func onlyRegistered() {
        let s = supervisor()
        let close = CloseIntent(client: "10.0.1.2", clientPort: 4000, server: "10.0.2.2", serverPort: 80,
                                towardClient: true, abortive: false)
        #expect(!send(s, request(.heartbeat), from: 1).0.ok)
        #expect(!send(s, request(.closing, close: close), from: 1).0.ok)
        _ = send(s, request(.register, proxy: proxyA), from: 1)
        #expect(send(s, request(.heartbeat), from: 1).0.ok)
        #expect(send(s, request(.closing, close: close), from: 1).0.ok)
        var bad = close
        bad.client = "not-an-address"
        let (r, _) = send(s, request(.closing, close: bad), from: 1)
        #expect(!r.ok && r.error?.contains("close") == true)
    }

    @Test("a bad policy is refused with the reason and changes nothing; a good one is the engine's")
    func policy() {
        let s = supervisor()
        let (bad, none) = send(s, request(.setPolicy, policy: PolicyConfig(enabled: true, ports: [], servers: [], clients: [])), from: 1)
        #expect(!bad.ok && bad.error?.isEmpty == false && none == nil)
        #expect(s.engine.withLock { $0.policy.enabled } == false)
        let good = PolicyConfig(enabled: true, ports: [80], servers: [], clients: [])
        let (ok, event) = send(s, request(.setPolicy, policy: good), from: 1)
        #expect(ok.ok && ok.policy == good && event == .policyChanged(good))
        #expect(send(s, request(.policy), from: 2).0.policy == good)
        #expect(s.engine.withLock { $0.policy.enabled && $0.policy.ports == [80] })
    }

    @Test("when the proxy taking new flows goes, the latest one still alive takes them; a silent one is retired")
    func successors() {
        let s = supervisor()
        _ = send(s, request(.register, proxy: proxyA), from: 1, at: 0)
        _ = send(s, request(.register, proxy: proxyB), from: 2, at: 0)
        #expect(s.engine.withLock { $0.activeProxy } == 2)
        let gone = s.connectionClosed(2, now: .seconds(1))
        #expect(gone?.retired.proxy.id == 2 && gone?.successor == 1)
        #expect(s.engine.withLock { $0.activeProxy } == 1)
        #expect(s.connectionClosed(2, now: .seconds(1)) == nil)
        // Proxy a stops heartbeating: past the limit (3 s) it is retired, and none is left.
        #expect(s.expireSilent(now: .seconds(2)).retired.isEmpty)
        let silent = s.expireSilent(now: .seconds(4))
        #expect(silent.retired.map(\.client) == [1] && silent.successor == nil)
        #expect(s.engine.withLock { $0.activeProxy } == 0)
    }

    @Test("a watched proxy (HAProxy) takes new flows; when it exits, the registered one does again")
    func watched() {
        let s = supervisor()
        _ = send(s, request(.register, proxy: proxyA), from: 1, at: 0)
        let id = s.watch(pid: 99, pidfd: -1, now: .seconds(1))
        #expect(s.engine.withLock { $0.activeProxy } == UInt16(id))
        _ = send(s, request(.heartbeat), from: 1, at: 2)
        let exited = s.watchedExited(now: .seconds(2))
        #expect(exited?.retired.proxy.pid == 99 && exited?.successor == 1)
        #expect(s.watchedExited(now: .seconds(2)) == nil)
        #expect(s.registry.withLock { $0.lastDeadPid } == 99)
    }
}
