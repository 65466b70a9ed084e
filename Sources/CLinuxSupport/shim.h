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

#include <sys/prctl.h>

/// prctl(PR_SET_NAME) (variadic): the calling thread's name, as `top -H`, `ps -L` and perf show
/// it (the kernel keeps 15 bytes).
static inline int tcpsplice_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

/// accept4(2) (a GNU extension glibc hides without _GNU_SOURCE): the accepted socket
/// non-blocking and close-on-exec as it is made, the peer's address with it.
static inline int tcpsplice_accept4(int fd, void *address, unsigned int *length, int flags) {
    return (int)syscall(SYS_accept4, fd, address, length, flags);
}

#include <sys/types.h>
#include <fcntl.h>
#include <sys/epoll.h>

// splice(2) and pipe2(2) are GNU extensions glibc hides without _GNU_SOURCE.
extern ssize_t splice(int fd_in, __off64_t *off_in, int fd_out, __off64_t *off_out, size_t len, unsigned int flags);
extern int pipe2(int pipefd[2], int flags);

static const unsigned int TCPSPLICE_SPLICE_F_MOVE = 1;
static const unsigned int TCPSPLICE_SPLICE_F_NONBLOCK = 2;
static const unsigned int TCPSPLICE_SPLICE_F_MORE = 4;
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

/// 1 when a TCP socket's next byte to read is the urgent one (SIOCATMARK), 0 when not, -1 on
/// error.
static inline int tcpsplice_at_mark(int fd) {
    int n = 0;
    return ioctl(fd, 0x8905 /* SIOCATMARK */, &n) == 0 ? n : -1;
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

// MARK: Taking a connection over in repair mode (the balancer's hand-back; Docs/balancer.md)

#include <sys/socket.h>
#include <errno.h>

/// What a socket in repair mode tells of its connection: the next sequence number it sends
/// and the next it expects, its timestamp clock, its windows (TCP_REPAIR_WINDOW), and the
/// options the handshake settled (TCP_INFO).
struct tcpsplice_tcp_state {
    unsigned int snd_seq, rcv_seq, ts_clock;
    unsigned int snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup;
    int mss, snd_wscale, rcv_wscale, timestamps, sack, wscale;
};

/// Puts `fd` in repair mode and reads its connection's state. 0 on success; -1 (errno set).
static inline int tcpsplice_repair_read(int fd, struct tcpsplice_tcp_state *s) {
    struct tcp_info info;
    socklen_t len = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
    s->timestamps = (info.tcpi_options & TCPI_OPT_TIMESTAMPS) != 0;
    s->sack = (info.tcpi_options & TCPI_OPT_SACK) != 0;
    s->wscale = (info.tcpi_options & TCPI_OPT_WSCALE) != 0;
    s->snd_wscale = info.tcpi_snd_wscale;
    s->rcv_wscale = info.tcpi_rcv_wscale;
    s->mss = (int)info.tcpi_snd_mss + (s->timestamps ? 12 : 0);
    if (tcpsplice_repair_on(fd) != 0) return -1;
    int q = 2; /* TCP_SEND_QUEUE */
    len = sizeof s->snd_seq;
    if (setsockopt(fd, IPPROTO_TCP, 20 /* TCP_REPAIR_QUEUE */, &q, sizeof q) != 0) return -1;
    if (getsockopt(fd, IPPROTO_TCP, 21 /* TCP_QUEUE_SEQ */, &s->snd_seq, &len) != 0) return -1;
    q = 1; /* TCP_RECV_QUEUE */
    len = sizeof s->rcv_seq;
    if (setsockopt(fd, IPPROTO_TCP, 20, &q, sizeof q) != 0) return -1;
    if (getsockopt(fd, IPPROTO_TCP, 21, &s->rcv_seq, &len) != 0) return -1;
    q = 0;
    setsockopt(fd, IPPROTO_TCP, 20, &q, sizeof q);
    len = sizeof s->ts_clock;
    if (getsockopt(fd, IPPROTO_TCP, 24 /* TCP_TIMESTAMP */, &s->ts_clock, &len) != 0) return -1;
    unsigned int w[5];
    len = sizeof w;
    if (getsockopt(fd, IPPROTO_TCP, 29 /* TCP_REPAIR_WINDOW */, w, &len) != 0) return -1;
    s->snd_wl1 = w[0]; s->snd_wnd = w[1]; s->max_window = w[2]; s->rcv_wnd = w[3]; s->rcv_wup = w[4];
    return 0;
}

/// First half of a takeover, on a new socket `fd`: repair mode, the MSS, bound to `local`
/// (repair mode binds beside the listener and the old socket), both queues' sequence
/// numbers. The old socket must be gone before the second half (same four-tuple).
static inline int tcpsplice_repair_prepare(int fd, const struct sockaddr *local, socklen_t local_len,
                                           const struct tcpsplice_tcp_state *s, unsigned int snd, unsigned int rcv) {
    /* (Repair mode forces the reuse of the address: SO_REUSEADDR would undo that.) */
    if (tcpsplice_repair_on(fd) != 0) return -1;
    if (s->mss > 0) setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &s->mss, sizeof s->mss);
    if (bind(fd, local, local_len) != 0) return -1;
    int q = 2;
    if (setsockopt(fd, IPPROTO_TCP, 20, &q, sizeof q) != 0) return -1;
    if (setsockopt(fd, IPPROTO_TCP, 21, &snd, sizeof snd) != 0) return -1;
    q = 1;
    if (setsockopt(fd, IPPROTO_TCP, 20, &q, sizeof q) != 0) return -1;
    if (setsockopt(fd, IPPROTO_TCP, 21, &rcv, sizeof rcv) != 0) return -1;
    q = 0;
    setsockopt(fd, IPPROTO_TCP, 20, &q, sizeof q);
    return 0;
}

/// Second half: connected to `peer` without a SYN, the handshake's options, the timestamp
/// clock set to `ts_clock`, the windows (the receive window taken from `rcv`), and out of
/// repair mode without the window probe. 0 on success; -1 (errno set).
static inline int tcpsplice_repair_finish(int fd, const struct sockaddr *peer, socklen_t peer_len,
                                          const struct tcpsplice_tcp_state *s, unsigned int rcv, unsigned int ts_clock) {
    if (connect(fd, peer, peer_len) != 0) return -1;
    struct { unsigned int code, val; } opts[4];
    int n = 0;
    opts[n].code = 2; opts[n].val = (unsigned int)s->mss; n++;                     /* TCPOPT_MAXSEG */
    if (s->wscale) { opts[n].code = 3; opts[n].val = (unsigned int)s->snd_wscale | ((unsigned int)s->rcv_wscale << 16); n++; }
    if (s->sack) { opts[n].code = 4; opts[n].val = 0; n++; }                       /* TCPOPT_SACK_PERM */
    if (s->timestamps) { opts[n].code = 8; opts[n].val = 0; n++; }                 /* TCPOPT_TIMESTAMP */
    if (setsockopt(fd, IPPROTO_TCP, 22 /* TCP_REPAIR_OPTIONS */, opts, (socklen_t)(n * sizeof opts[0])) != 0) return -1;
    if (s->timestamps && setsockopt(fd, IPPROTO_TCP, 24, &ts_clock, sizeof ts_clock) != 0) return -1;
    unsigned int w[5] = { rcv, s->snd_wnd, s->max_window > s->snd_wnd ? s->max_window : s->snd_wnd, s->rcv_wnd, rcv };
    if (setsockopt(fd, IPPROTO_TCP, 29, w, sizeof w) != 0) return -1;
    int off = -1; /* TCP_REPAIR_OFF_NO_WP */
    if (setsockopt(fd, IPPROTO_TCP, 19, &off, sizeof off) != 0) {
        off = 0;
        if (setsockopt(fd, IPPROTO_TCP, 19, &off, sizeof off) != 0) return -1;
    }
    return 0;
}
