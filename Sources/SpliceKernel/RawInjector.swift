#if canImport(Glibc)
import Glibc
import Synchronization
#endif
import SpliceEngine
import SpliceWire

/// Sends packets the engine builds, through raw sockets (`IPPROTO_RAW`: the packet carries its
/// own IP header) marked with `SO_MARK`, so that the rules let them pass unqueued
/// (KERNEL-NOTES.md, "Injection"). A packet to a local socket needs a complete checksum.
public final class RawInjector: @unchecked Sendable {
    public let mark: UInt32
    private let fd4: Int32
    private let fd6: Int32

    public init(mark: UInt32) throws {
        self.mark = mark
        fd4 = socket(AF_INET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(IPPROTO_RAW))
        guard fd4 >= 0 else { throw SystemError("opening a raw IPv4 socket (needs root / CAP_NET_RAW)") }
        fd6 = socket(AF_INET6, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(IPPROTO_RAW))
        guard fd6 >= 0 else {
            let e = SystemError("opening a raw IPv6 socket")
            close(fd4)
            throw e
        }
        var m = mark
        for fd in [fd4, fd6] {
            guard setsockopt(fd, SOL_SOCKET, SO_MARK, &m, socklen_t(MemoryLayout<UInt32>.size)) == 0 else {
                let e = SystemError("setting SO_MARK on the raw socket")
                close(fd4); close(fd6)
                throw e
            }
        }
    }

    deinit {
        close(fd4)
        close(fd6)
    }

    /// Sends one complete IP packet to `dst` (its destination address, which the caller knows).
    public func send(_ packet: UnsafeRawBufferPointer, to dst: IPAddress) throws {
        let n: Int
        if dst.isIPv4 {
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_addr.s_addr = dst.ipv4Value.bigEndian
            n = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd4, packet.baseAddress, packet.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        } else {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            withUnsafeMutableBytes(of: &sa.sin6_addr) { b in
                b.storeBytes(of: dst.high.bigEndian, toByteOffset: 0, as: UInt64.self)
                b.storeBytes(of: dst.low.bigEndian, toByteOffset: 8, as: UInt64.self)
            }
            n = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd6, packet.baseAddress, packet.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
        guard n == packet.count else { throw SystemError("injecting a packet to \(dst)") }
    }
}

/// The engine's injector: one raw socket pair toward the wire (the inject mark, which the
/// rules never queue) and one toward this host's transparent sockets (the local mark, which
/// an `ip rule` routes through `lo`).
public final class SpliceInjector: PacketInjector, @unchecked Sendable {
    private let wire: RawInjector
    private let local: RawInjector
    private let splice: RawInjector
    private let proxy: RawInjector
    /// Packets that could not be sent (counted, never fatal). Written by the queue reader
    /// (under the engine's lock), read by the control thread: atomic.
    private let failureCount = Atomic<UInt64>(0)
    public var failures: UInt64 { failureCount.load(ordering: .relaxed) }
    /// The queue whose packet the engine is handling (set by its reader under the engine's
    /// lock, for the packet's turn): the verdicts it has written but not sent yet go out
    /// before any packet the engine makes meanwhile. A queue's verdicts wait for the end of
    /// its drain; a packet the engine made went out at once, and so could overtake one the
    /// engine had handled before it: toward the same end, with a TSval the engine had raised
    /// past the earlier one's (an older TSval arriving last is a PAWS drop at the end).
    public unowned(unsafe) var verdictsFirst: NetfilterQueue?

    public init(wireMark: UInt32, localMark: UInt32, spliceMark: UInt32, proxyMark: UInt32) throws {
        wire = try RawInjector(mark: wireMark)
        local = try RawInjector(mark: localMark)
        splice = try RawInjector(mark: spliceMark)
        proxy = try RawInjector(mark: proxyMark)
    }

    public func injectToProxy(_ packet: UnsafeRawBufferPointer, to destination: IPAddress) {
        verdictsFirst?.sendPendingVerdicts()
        do { try proxy.send(packet, to: destination) } catch { failureCount.wrappingAdd(1, ordering: .relaxed) }
    }

    public func injectSplicing(_ packet: UnsafeRawBufferPointer, to destination: IPAddress) {
        verdictsFirst?.sendPendingVerdicts()
        do { try splice.send(packet, to: destination) } catch { failureCount.wrappingAdd(1, ordering: .relaxed) }
    }

    public func inject(_ packet: UnsafeRawBufferPointer, to destination: IPAddress, toLocalSocket: Bool) {
        verdictsFirst?.sendPendingVerdicts()
        do {
            try (toLocalSocket ? local : wire).send(packet, to: destination)
        } catch {
            failureCount.wrappingAdd(1, ordering: .relaxed)
        }
    }
}
