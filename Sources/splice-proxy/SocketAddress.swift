#if canImport(Glibc)
import Glibc
#endif
import CLinuxSupport
import SpliceWire

/// An IPv4 or IPv6 socket address, converted to and from `sockaddr_storage`.
struct SocketAddress: CustomStringConvertible, Equatable {
    var address: IPAddress
    var port: UInt16

    init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    init?(_ storage: sockaddr_storage) {
        var s = storage
        switch Int32(s.ss_family) {
        case AF_INET:
            let sin = withUnsafeBytes(of: &s) { $0.load(as: sockaddr_in.self) }
            address = IPAddress(ipv4: UInt32(bigEndian: sin.sin_addr.s_addr))
            port = UInt16(bigEndian: sin.sin_port)
        case AF_INET6:
            let sin6 = withUnsafeBytes(of: &s) { $0.load(as: sockaddr_in6.self) }
            var a = sin6.sin6_addr
            let (hi, lo) = withUnsafeBytes(of: &a) {
                (UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                 UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
            }
            let mapped = IPAddress(high: hi, low: lo)
            address = mapped
            port = UInt16(bigEndian: sin6.sin6_port)
        default:
            return nil
        }
    }

    var family: Int32 { address.isIPv4 ? AF_INET : AF_INET6 }

    /// Calls `body` with this address as a `sockaddr`.
    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        if address.isIPv4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = address.ipv4Value.bigEndian
            return withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &sin6.sin6_addr) {
            $0.storeBytes(of: address.high.bigEndian, toByteOffset: 0, as: UInt64.self)
            $0.storeBytes(of: address.low.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        return withUnsafePointer(to: &sin6) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
    }

    static func local(of fd: Int32) -> SocketAddress? {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &ss) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return rc == 0 ? SocketAddress(ss) : nil
    }

    var description: String { address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)" }
}

/// A new non-blocking, close-on-exec TCP socket of `family`, or -1 (errno set).
func newStreamSocket(family: Int32) -> Int32 {
    socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
}

/// A proxied connection's tuple as the client sees it: the key of the relay's connections for
/// the engine's answers.
struct TupleKey: Hashable {
    var client: IPAddress
    var clientPort: UInt16
    var server: IPAddress
    var serverPort: UInt16
}

extension TupleKey {
    /// From an answer's text fields; an address that does not parse finds no connection
    /// (it is taken as 0.0.0.0, which no accepted connection has).
    init(_ client: String, _ clientPort: UInt16, _ server: String, _ serverPort: UInt16) {
        self.init(client: IPAddress(client) ?? IPAddress(ipv4: 0), clientPort: clientPort,
                  server: IPAddress(server) ?? IPAddress(ipv4: 0), serverPort: serverPort)
    }
}
