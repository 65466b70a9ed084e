#if canImport(Glibc)
import Glibc
#endif
import SpliceControlProtocol

/// The daemon's side of the control socket: a root-only Unix stream socket (mode 0600, and
/// the peer's uid checked with SO_PEERCRED), one JSON request per line, served from one
/// thread with poll(2). A client that registers as a proxy keeps its connection; its EOF is
/// how the daemon learns the proxy is gone.
public final class ControlServer: @unchecked Sendable {
    public typealias ClientID = Int32

    public let path: String
    private let listener: Int32
    private var clients: [ClientID: LineBuffer] = [:]

    /// Creates the socket. Fails with a clear message if another daemon listens there.
    public init(path: String) throws {
        self.path = path
        // Parent directory: created root-only if missing.
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            let dir = String(path[..<slash])
            if access(dir, F_OK) != 0 && mkdir(dir, 0o700) != 0 && errno != EEXIST {
                throw SystemError("creating the control socket directory \(dir)")
            }
        }
        // A socket file left by a daemon that died is removed; a live one is an error.
        if access(path, F_OK) == 0 {
            if ControlServer.someoneListens(path) {
                throw SystemError("another spliced already listens on \(path)", errno: EADDRINUSE)
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("creating the control socket") }
        let old = umask(0o177)
        let rc = try UnixSocket.withAddress(path) { bind(fd, $0, $1) }
        umask(old)
        guard rc == 0 else {
            let e = SystemError("binding the control socket \(path)")
            close(fd)
            throw e
        }
        chmod(path, 0o600)
        guard listen(fd, 64) == 0 else {
            let e = SystemError("listening on \(path)")
            close(fd)
            throw e
        }
        listener = fd
    }

    static func someoneListens(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return (try? UnixSocket.withAddress(path) { connect(fd, $0, $1) }) == 0
    }

    /// Waits up to `timeoutMilliseconds` for activity and serves it. `handle` answers each
    /// request; `disconnected` hears of every client that went away.
    public func serve(timeoutMilliseconds: Int32,
                      handle: (ControlRequest, ClientID) -> ControlResponse,
                      disconnected: (ClientID) -> Void) {
        var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
        for c in clients.keys { fds.append(pollfd(fd: c, events: Int16(POLLIN), revents: 0)) }
        let n = poll(&fds, nfds_t(fds.count), timeoutMilliseconds)
        guard n > 0 else { return }
        for p in fds where p.revents != 0 {
            if p.fd == listener {
                acceptClient()
            } else {
                readClient(p.fd, handle: handle, disconnected: disconnected)
            }
        }
    }

    private func acceptClient() {
        let fd = accept(listener, nil, nil)
        guard fd >= 0 else { return }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        guard UnixSocket.peerUID(fd) == 0 else {
            // Only root may talk to the daemon (the socket mode says so too).
            let reply = (try? ControlFraming.encode(ControlResponse.failure("permission denied: the control socket is root-only"))) ?? []
            _ = UnixSocket.writeAll(fd, reply)
            close(fd)
            return
        }
        UnixSocket.setTimeout(fd, option: SO_SNDTIMEO, milliseconds: 2000)
        clients[fd] = LineBuffer()
    }

    private func readClient(_ fd: Int32, handle: (ControlRequest, ClientID) -> ControlResponse,
                            disconnected: (ClientID) -> Void) {
        var chunk = [UInt8](repeating: 0, count: 16384)
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 {
            if n < 0 && errno == EINTR { return }
            drop(fd, disconnected: disconnected)
            return
        }
        chunk.withUnsafeBytes { clients[fd]?.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        while let line = clients[fd]?.nextLine() {
            let response: ControlResponse
            do {
                let request = try ControlFraming.decode(ControlRequest.self, from: line)
                response = handle(request, fd)
            } catch {
                response = .failure("malformed request: \(error)")
            }
            guard let bytes = try? ControlFraming.encode(response), UnixSocket.writeAll(fd, bytes) else {
                drop(fd, disconnected: disconnected)
                return
            }
        }
        if let pending = clients[fd]?.bytes.count, pending > ControlProtocol.maximumRequestBytes {
            _ = UnixSocket.writeAll(fd, (try? ControlFraming.encode(ControlResponse.failure("request too long"))) ?? [])
            drop(fd, disconnected: disconnected)
        }
    }

    private func drop(_ fd: Int32, disconnected: (ClientID) -> Void) {
        clients[fd] = nil
        close(fd)
        disconnected(fd)
    }

    /// Closes one client's connection (e.g. a proxy whose heartbeats stopped).
    public func disconnect(_ client: ClientID, disconnected: (ClientID) -> Void) {
        guard clients[client] != nil else { return }
        drop(client, disconnected: disconnected)
    }

    /// Closes every connection and removes the socket file.
    public func shutdown() {
        for c in clients.keys { close(c) }
        clients.removeAll()
        close(listener)
        unlink(path)
    }
}
