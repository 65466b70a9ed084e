// Linux calls Swift cannot reach directly (variadic syscall(2), glibc without wrappers).
#pragma once
#include <unistd.h>
#include <sys/syscall.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/// pidfd_open(2): a file descriptor that becomes readable when process `pid` exits.
static inline int tcpsplice_pidfd_open(int pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

#include <sys/types.h>
#include <fcntl.h>
#include <sys/epoll.h>

// splice(2) and pipe2(2) are GNU extensions glibc hides without _GNU_SOURCE.
extern ssize_t splice(int fd_in, __off64_t *off_in, int fd_out, __off64_t *off_out, size_t len, unsigned int flags);
extern int pipe2(int pipefd[2], int flags);

static const unsigned int TCPSPLICE_SPLICE_F_MOVE = 1;
static const unsigned int TCPSPLICE_SPLICE_F_NONBLOCK = 2;
static const int TCPSPLICE_F_SETPIPE_SZ = 1031;
static const int TCPSPLICE_F_GETPIPE_SZ = 1032;
static const int TCPSPLICE_IP_TRANSPARENT = 19;
static const int TCPSPLICE_IPV6_TRANSPARENT = 75;

/// splice(2) between two descriptors without offsets (sockets and pipes).
static inline ssize_t tcpsplice_splice(int from, int to, size_t len, unsigned int flags) {
    return splice(from, 0, to, 0, len, flags);
}

#include <sys/ioctl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

/// Bytes a TCP socket has received and not yet read (SIOCINQ), and bytes it has sent and not
/// yet had acknowledged (SIOCOUTQ, a FIN counting one); -1 on error. (ioctl is variadic.)
static inline int tcpsplice_inq(int fd) {
    int n = 0;
    return ioctl(fd, 0x541B /* SIOCINQ = FIONREAD */, &n) == 0 ? n : -1;
}
static inline int tcpsplice_outq(int fd) {
    int n = 0;
    return ioctl(fd, 0x5411 /* SIOCOUTQ = TIOCOUTQ */, &n) == 0 ? n : -1;
}

/// The MSS the peer of a connected TCP socket allows (its SYN's MSS option, when it binds the
/// send size: the current send MSS plus the timestamps option the kernel took off it); 0 on
/// error.
static inline int tcpsplice_peer_mss(int fd) {
    struct tcp_info info;
    socklen_t len = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return 0;
    return (int)info.tcpi_snd_mss + ((info.tcpi_options & TCPI_OPT_TIMESTAMPS) ? 12 : 0);
}

/// Sets the MSS a TCP socket will advertise (TCP_MAXSEG, before connect). 0 on success.
static inline int tcpsplice_set_mss(int fd, int mss) {
    return setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss);
}

/// Puts a TCP socket in repair mode (TCP_REPAIR, CAP_NET_ADMIN): closed then, it leaves
/// without a packet on the wire and without TIME_WAIT. 0 on success.
static inline int tcpsplice_repair_on(int fd) {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, 19 /* TCP_REPAIR */, &one, sizeof one);
}
