#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue

/// A bound netlink socket of the netfilter family, and the configuration exchange NFQUEUE
/// (NetfilterQueue) and NFLOG (PacketLog) share: a message sent with NLM_F_ACK, the kernel's
/// answer awaited past the packets that may already be arriving.
struct NetfilterSocket {
    let socket: OpaquePointer
    let fd: Int32
    let portID: UInt32

    /// Opens and binds one; `what` names its use in the errors.
    static func open(for what: String) throws -> NetfilterSocket {
        guard let nl = mnl_socket_open(NETLINK_NETFILTER) else {
            throw SystemError("opening a netfilter netlink socket for \(what) (are you root?)")
        }
        guard mnl_socket_bind(nl, 0, pid_t(MNL_SOCKET_AUTOPID)) >= 0 else {
            let e = SystemError("binding the netlink socket for \(what)")
            mnl_socket_close(nl)
            throw e
        }
        return NetfilterSocket(socket: nl, fd: mnl_socket_get_fd(nl), portID: mnl_socket_get_portid(nl))
    }

    /// Sends `nlh` with NLM_F_ACK and sequence number `seq`, and waits for the kernel's answer,
    /// receiving into `buffer` (`size` bytes). An error answer throws with `what` and
    /// `hint(code)`. Packets may already be arriving (a queue bound while its rules send it
    /// traffic: after a SYN flood, the server's SYN-ACKs resent for about a minute); for up to
    /// 5 s each is given to `onPacket` (an NFQUEUE accepts it) and the answer waited for.
    func sendExpectingAck(_ nlh: UnsafeMutablePointer<nlmsghdr>, sequence seq: UInt32, buffer: UnsafeMutableRawPointer,
                          size: Int, what: String, onPacket: ((UnsafeMutablePointer<nlmsghdr>) -> Void)? = nil,
                          hint: (Int32) -> String) throws {
        nlh.pointee.nlmsg_flags |= UInt16(NLM_F_ACK)
        nlh.pointee.nlmsg_seq = seq
        guard mnl_socket_sendto(socket, nlh, Int(nlh.pointee.nlmsg_len)) >= 0 else { throw SystemError(what) }
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        let packetType = UInt16(NFNL_SUBSYS_QUEUE << 8) | UInt16(NFQNL_MSG_PACKET.rawValue)
        while true {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            if now.tv_sec - start.tv_sec >= 5 { break }
            let n = recv(fd, buffer, size, 0)
            if n < 0 {
                if errno == EINTR || errno == ENOBUFS { continue }
                throw SystemError("\(what): waiting for the kernel's answer")
            }
            var len = Int32(n)
            var msg: UnsafePointer<nlmsghdr>? = UnsafePointer(buffer.assumingMemoryBound(to: nlmsghdr.self))
            while let m = msg, mnl_nlmsg_ok(m, len) {
                if m.pointee.nlmsg_type == UInt16(NLMSG_ERROR) && m.pointee.nlmsg_seq == seq {
                    let err = mnl_nlmsg_get_payload(m)!.assumingMemoryBound(to: nlmsgerr.self).pointee.error
                    if err == 0 { return }
                    throw SystemError("\(what)\(hint(-err))", errno: -err)
                }
                if let onPacket, m.pointee.nlmsg_type == packetType { onPacket(UnsafeMutablePointer(mutating: m)) }
                msg = UnsafePointer(mnl_nlmsg_next(m, &len))
            }
        }
        throw SystemError("\(what): no answer from the kernel", errno: ETIMEDOUT)
    }
}
