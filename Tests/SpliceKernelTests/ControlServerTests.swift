#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import SpliceControlProtocol
@testable import SpliceKernel

/// The control server driven from the test's own thread: `pump` runs `serve` rounds while
/// the test's clients (non-blocking Unix sockets) do their part.
final class ServerHarness {
    let dir: String
    let path: String
    let server: ControlServer
    var gone: [ControlServer.ClientID] = []
    var seen: [ControlServer.ClientID] = []
    /// With it set, `flows` is not answered in its round (held, as spliced holds a join).
    var holdFlows = false
    var held: [ControlServer.ClientID] = []

    init(limits: ControlServer.Limits = ControlServer.Limits()) throws {
        var template = Array("/tmp/tcpsplice-ctl-test.XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw SystemError("mkdtemp") }
        dir = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        path = dir + "/s.sock"
        var l = limits
        l.allowedUID = geteuid()
        server = try ControlServer(path: path, limits: l)
    }

    deinit {
        server.shutdown()
        rmdir(dir)
    }

    /// `status` answers a short line; `flows` a 4 KB one.
    func round() {
        server.serve(timeoutMilliseconds: 5, handle: { request, client in
            self.seen.append(client)
            switch request.command {
            case .flows where self.holdFlows:
                self.held.append(client)
                return nil
            case .flows: return ControlResponse(ok: true, error: String(repeating: "x", count: 4096))
            default: return ControlResponse(ok: true, proxyID: 1)
            }
        }, disconnected: { self.gone.append($0) })
    }

    /// Serves until `done` holds or `milliseconds` pass; true if it held.
    @discardableResult
    func pump(milliseconds: Int = 3000, until done: () -> Bool = { false }) -> Bool {
        let end = ControlServer.milliseconds() + Int64(milliseconds)
        while ControlServer.milliseconds() < end {
            round()
            if done() { return true }
        }
        return done()
    }
}

/// A test's client: a non-blocking connection with a line reader.
final class TestClient {
    let fd: Int32
    var buffer: [UInt8] = []
    var closed = false

    init(_ h: ServerHarness) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        let rc = try UnixSocket.withAddress(h.path) { connect(fd, $0, $1) }
        guard rc == 0 else { throw SystemError("connect") }
    }

    deinit { close(fd) }

    /// Sends what the socket takes now; returns the number of bytes.
    @discardableResult
    func send(_ s: String) -> Int {
        let bytes = Array(s.utf8)
        let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        return max(n, 0)
    }

    func poll() {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !closed {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { buffer += chunk[0..<n]; continue }
            if n == 0 || (errno != EAGAIN && errno != EINTR) { closed = true }
            break
        }
    }

    func takeLine() -> String? {
        poll()
        guard let nl = buffer.firstIndex(of: 10) else { return nil }
        let line = String(decoding: buffer[..<nl], as: UTF8.self)
        buffer.removeSubrange(...nl)
        return line
    }

    /// Pumps the server until a whole line arrives.
    func line(_ h: ServerHarness, milliseconds: Int = 2000) -> String? {
        var got: String?
        h.pump(milliseconds: milliseconds) {
            got = takeLine()
            return got != nil
        }
        return got
    }

    /// Pumps the server until the connection is closed by it (answers are read and dropped).
    func closedByServer(_ h: ServerHarness, milliseconds: Int = 3000) -> Bool {
        h.pump(milliseconds: milliseconds) {
            poll()
            buffer.removeAll()
            return closed
        }
    }
}

@Suite("ControlServer")
struct ControlServerTests {
    static let status = #"{"command":"status"}"# + "\n"
    static let flows = #"{"command":"flows"}"# + "\n"

    @Test("a regular file at the socket's path is refused and left intact")
    func regularFileRefused() throws {
        var template = Array("/tmp/tcpsplice-ctl-test.XXXXXX".utf8CString)
        #expect(mkdtemp(&template) != nil)
        let dir = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let file = dir + "/not-a-socket"
        let fd = open(file, O_WRONLY | O_CREAT, 0o600)
        _ = write(fd, "keep", 4)
        close(fd)
        #expect(throws: SystemError.self) { _ = try ControlServer(path: file) }
        var st = stat()
        #expect(stat(file, &st) == 0 && st.st_size == 4)
        unlink(file)
        rmdir(dir)
    }

    @Test("a stale socket is replaced; a live one is refused")
    func staleAndLiveSockets() throws {
        let h = try ServerHarness()
        // A live server on the path: a second one must not take it.
        #expect(throws: SystemError.self) { _ = try ControlServer(path: h.path) }
        // A stale socket (bound, nobody listening) on another path is replaced.
        let stale = h.dir + "/stale.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(try UnixSocket.withAddress(stale) { bind(fd, $0, $1) } == 0)
        close(fd)
        let s = try ControlServer(path: stale)
        s.shutdown()
        #expect(access(stale, F_OK) != 0)
    }

    @Test("a client that never reads gets no more answers past the bound, then is dropped; another is answered meanwhile")
    func nonReaderDropped() throws {
        var limits = ControlServer.Limits()
        limits.maxPendingOutputBytes = 64 << 10
        limits.outputStallMilliseconds = 500
        let h = try ServerHarness(limits: limits)
        let hog = try TestClient(h)
        hog.send(String(repeating: Self.flows, count: 500))   // 2 MB of answers, none read
        let other = try TestClient(h)
        other.send(Self.status)
        #expect(other.line(h, milliseconds: 1000)?.contains("\"ok\":true") == true)
        h.pump(milliseconds: 200)
        // Answered only up to the bound (and what the socket holds), not all 500.
        #expect(h.server.counters.requests < 200)
        #expect(h.pump { h.server.counters.droppedUnread == 1 })
        other.send(Self.status)
        #expect(other.line(h, milliseconds: 1000) != nil)
        #expect(h.server.clientCount == 1)
    }

    @Test("a request answered later does not hold up the next one; its answer follows when pushed")
    func heldAnswerOvertaken() throws {
        let h = try ServerHarness()
        h.holdFlows = true
        let c = try TestClient(h)
        c.send(Self.flows + Self.status)
        let first = c.line(h, milliseconds: 1000)
        #expect(first?.contains("\"proxyID\":1") == true)
        #expect(h.held.count == 1)
        h.pump(milliseconds: 50)
        #expect(c.takeLine() == nil)
        h.server.push(ControlResponse(ok: true, error: "later"), to: h.held[0])
        #expect(c.line(h, milliseconds: 1000)?.contains("later") == true)
    }

    @Test("answers not read for the stall deadline drop the client")
    func stalledOutputDropped() throws {
        var limits = ControlServer.Limits()
        limits.outputStallMilliseconds = 300
        let h = try ServerHarness(limits: limits)
        let c = try TestClient(h)
        c.send(String(repeating: Self.flows, count: 200))   // 800 KB, more than the socket holds
        let t0 = ControlServer.milliseconds()
        #expect(h.pump { h.server.counters.droppedUnread == 1 })
        #expect(ControlServer.milliseconds() - t0 >= 250)
    }

    @Test("a request line over the limit drops the client with one error line")
    func overlongDropped() throws {
        let h = try ServerHarness()
        let c = try TestClient(h)
        var sent = 0
        h.pump(milliseconds: 2000) {
            sent += c.send(String(repeating: "x", count: 8192))
            return sent > ControlProtocol.maximumRequestBytes + 16384
        }
        #expect(c.closedByServer(h))
        #expect(h.server.counters.droppedOverlong == 1)
        #expect(h.gone.count == 1)
    }

    @Test("a request begun and left unfinished past the deadline drops the client; a slow one is answered")
    func partialRequestDropped() throws {
        var limits = ControlServer.Limits()
        limits.partialRequestMilliseconds = 300
        let h = try ServerHarness(limits: limits)
        let silent = try TestClient(h)
        silent.send(#"{"command":"sta"#)
        let slow = try TestClient(h)
        slow.send(#"{"command":"#)
        h.pump(milliseconds: 100)
        slow.send(#""status"}"# + "\n")
        #expect(slow.line(h) != nil)
        #expect(silent.closedByServer(h))
        #expect(h.server.counters.droppedSilent == 1)
        #expect(!slow.closed)
    }

    @Test("past maxClients a connection gets one refusal line and is closed")
    func boundRefuses() throws {
        var limits = ControlServer.Limits()
        limits.maxClients = 3
        let h = try ServerHarness(limits: limits)
        var clients: [TestClient] = []
        for _ in 0..<3 {
            let c = try TestClient(h)
            c.send(Self.status)
            #expect(c.line(h) != nil)
            clients.append(c)
        }
        let extra = try TestClient(h)
        let refusal = extra.line(h)
        #expect(refusal?.contains("too many control connections") == true)
        #expect(refusal?.contains("\"ok\":false") == true)
        #expect(extra.closedByServer(h))
        #expect(h.server.counters.refusedTooMany == 1)
        clients.removeFirst()   // closes it
        #expect(h.pump { h.server.clientCount == 2 })
        let next = try TestClient(h)
        next.send(Self.status)
        #expect(next.line(h)?.contains("\"ok\":true") == true)
    }

    @Test("a client flooding requests does not keep another waiting")
    func fairness() throws {
        let h = try ServerHarness()
        let greedy = try TestClient(h)
        greedy.send(String(repeating: Self.status, count: 2000))
        let other = try TestClient(h)
        other.send(Self.status)
        #expect(other.line(h) != nil)
        // The other one was answered long before the greedy one's 2000 requests.
        #expect(h.server.counters.requests < 200)
    }

    @Test("a client that half-closes still gets its answers, then the connection ends")
    func halfClose() throws {
        let h = try ServerHarness()
        let c = try TestClient(h)
        c.send(Self.status + Self.status)
        shutdown(c.fd, Int32(SHUT_WR))
        #expect(c.line(h) != nil)
        #expect(c.line(h) != nil)
        #expect(c.closedByServer(h))
        #expect(h.server.clientCount == 0)
    }

    @Test("idle connections are closed, persistent ones kept")
    func idle() throws {
        var limits = ControlServer.Limits()
        limits.idleMilliseconds = 200
        let h = try ServerHarness(limits: limits)
        let kept = try TestClient(h)
        kept.send(Self.status)
        #expect(kept.line(h) != nil)
        h.server.setPersistent(try #require(h.seen.last))
        let idle = try TestClient(h)
        #expect(idle.closedByServer(h))
        #expect(h.server.counters.closedIdle == 1)
        h.pump(milliseconds: 300)
        kept.send(Self.status)
        #expect(kept.line(h) != nil)
    }

    @Test("another thread can have a client disconnected")
    func requestDisconnect() throws {
        let h = try ServerHarness()
        let c = try TestClient(h)
        c.send(Self.status)
        #expect(c.line(h) != nil)
        let id = try #require(h.seen.last)
        let server = h.server
        let t = Thread { server.requestDisconnect(id) }
        t.start()
        #expect(c.closedByServer(h))
        #expect(h.gone == [id])
    }
}
