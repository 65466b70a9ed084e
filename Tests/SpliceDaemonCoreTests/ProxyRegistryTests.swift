import Testing
import SpliceControlProtocol
import SpliceEngine
@testable import SpliceDaemonCore

@Suite("ProxyRegistry: which proxy takes new flows")
struct ProxyRegistryTests {
    let limit = Timestamp.Duration(deciseconds: 30)
    func reg(_ name: String, _ pid: Int32) -> ProxyRegistration { ProxyRegistration(name: name, pid: pid, listenPort: 8081) }

    @Test("ids are handed out once; a proxy registering again on its connection keeps its id")
    func ids() {
        var r = ProxyRegistry<Int>(heartbeatLimit: limit)
        let a = r.register(1, reg("a", 10), now: .seconds(0))
        let b = r.register(2, reg("b", 11), now: .seconds(0))
        #expect(a == 1 && b == 2)
        let again = r.register(1, reg("a", 10), now: .seconds(1))
        let watched = r.watch(pid: 12, pidfd: 5, now: .seconds(1))
        #expect(again == 1 && watched == 3)
    }

    @Test("heartbeats only from registered connections; silence past the limit removes the proxy")
    func heartbeats() {
        var r = ProxyRegistry<Int>(heartbeatLimit: limit)
        _ = r.register(1, reg("a", 10), now: .seconds(0))
        _ = r.register(2, reg("b", 11), now: .seconds(0))
        let unknown = r.heartbeat(9, now: .seconds(1))
        let known = r.heartbeat(1, now: .seconds(2))
        #expect(!unknown && known)
        let silent = r.removeSilent(now: .seconds(4))
        #expect(silent.map(\.client) == [2] && silent.first?.proxy.id == 2)
        #expect(r.isRegistered(1) && !r.isRegistered(2))
    }

    @Test("the successor is the most recently registered one still alive, the watched one included")
    func successor() {
        var r = ProxyRegistry<Int>(heartbeatLimit: limit)
        _ = r.register(1, reg("a", 10), now: .seconds(0))
        _ = r.register(2, reg("b", 11), now: .seconds(0))
        #expect(r.successor(now: .seconds(1)) == 2)
        _ = r.remove(2)
        #expect(r.successor(now: .seconds(1)) == 1)
        // The one left is silent: nobody takes new flows.
        #expect(r.successor(now: .seconds(10)) == nil)
        let w = r.watch(pid: 12, pidfd: 5, now: .seconds(10))
        #expect(r.successor(now: .seconds(10)) == w)
        // A registration after the watched one wins again.
        let c = r.register(3, reg("c", 13), now: .seconds(11))
        #expect(r.successor(now: .seconds(11)) == c)
    }

    @Test("a watched proxy that dies is forgotten and its pid remembered")
    func watchedDies() {
        var r = ProxyRegistry<Int>(heartbeatLimit: limit)
        let none = r.watchedDied()
        #expect(none == nil)
        _ = r.watch(pid: 12, pidfd: 5, now: .seconds(0))
        let died = r.watchedDied()
        #expect(died?.pid == 12)
        #expect(r.watched == nil && r.lastDeadPid == 12 && r.successor(now: .seconds(0)) == nil)
    }
}
