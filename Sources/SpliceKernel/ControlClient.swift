#if canImport(Glibc)
import Glibc
#endif
import SpliceControlProtocol

/// The client side of the control socket, for `splicectl` and `splice-proxy`.
public final class ControlClient: @unchecked Sendable {
    public enum Failure: Error, CustomStringConvertible {
        case notRunning(String)
        case permissionDenied(String)
        case io(String)
        case daemon(String)
        public var description: String {
            switch self {
            case .notRunning(let s), .permissionDenied(let s), .io(let s), .daemon(let s): return s
            }
        }
    }

    public let path: String
    public let fd: Int32
    private var buffer = LineBuffer()

    public init(path: String, timeoutMilliseconds: Int = 10_000) throws {
        self.path = path
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure.io("cannot create a socket: \(String(cString: strerror(errno)))") }
        let rc = try UnixSocket.withAddress(path) { connect(fd, $0, $1) }
        if rc != 0 {
            let e = errno
            close(fd)
            switch e {
            case ENOENT:
                throw Failure.notRunning("spliced is not running: no control socket at \(path)")
            case ECONNREFUSED:
                throw Failure.notRunning("spliced is not running: nothing listens on \(path) (stale socket)")
            case EACCES, EPERM:
                throw Failure.permissionDenied("permission denied on \(path): the control socket is root-only")
            default:
                throw Failure.io("cannot connect to \(path): \(String(cString: strerror(e)))")
            }
        }
        UnixSocket.setTimeout(fd, option: SO_RCVTIMEO, milliseconds: timeoutMilliseconds)
        UnixSocket.setTimeout(fd, option: SO_SNDTIMEO, milliseconds: timeoutMilliseconds)
        self.fd = fd
    }

    deinit { close(fd) }

    /// Sends one request and waits for its response. A `{"ok":false}` answer throws `.daemon`.
    public func request(_ request: ControlRequest) throws -> ControlResponse {
        do {
            try send(request)
        } catch {
            // The daemon may have refused the connection (too many, say) with one line and
            // closed it before the request went out: that line says why.
            if let refusal = pendingRefusal() { throw Failure.daemon(refusal) }
            throw error
        }
        let response = try receive()
        if !response.ok { throw Failure.daemon(response.error ?? "the daemon refused the request") }
        return response
    }

    public func send(_ request: ControlRequest) throws {
        let bytes = try ControlFraming.encode(request)
        var off = 0
        while off < bytes.count {
            // MSG_NOSIGNAL: a daemon that closed the connection is an error, not SIGPIPE.
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure.io("cannot write to \(path): \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    /// The error of a refusal line the daemon sent before it closed the connection, if one
    /// is there to read (never blocks).
    private func pendingRefusal() -> String? {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            chunk.withUnsafeBytes { buffer.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        while let line = buffer.nextLine() {
            if let r = try? ControlFraming.decode(ControlResponse.self, from: line), !r.ok {
                return r.error ?? "the daemon refused the connection"
            }
        }
        return nil
    }

    /// Reads whatever answers (and pushed messages) have arrived, without blocking, and
    /// returns them in order. Throws when the daemon closed the connection.
    public func drainAnswers() throws -> [ControlResponse] {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { break }
                throw Failure.io("cannot read from \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw Failure.io("spliced closed the control connection") }
            chunk.withUnsafeBytes { buffer.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        var answers: [ControlResponse] = []
        while let line = buffer.nextLine() {
            if let r = try? ControlFraming.decode(ControlResponse.self, from: line) { answers.append(r) }
        }
        return answers
    }

    public func receive() throws -> ControlResponse {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let line = buffer.nextLine() {
                do { return try ControlFraming.decode(ControlResponse.self, from: line) }
                catch { throw Failure.io("malformed answer from spliced: \(error)") }
            }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { throw Failure.io("spliced did not answer in time") }
                throw Failure.io("cannot read from \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw Failure.io("spliced closed the connection") }
            chunk.withUnsafeBytes { buffer.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }
}
