// Headers of libnetfilter_queue (mnl API) and libmnl, as Swift sees them, and the kernel's
// NFLOG message definitions (nfnetlink_log, spoken through libmnl: PacketLog.swift).
// Debian: libnetfilter-queue-dev, libmnl-dev.
// <linux/netfilter.h> is left out: it drags in <linux/in.h>, whose types clash with glibc's
// in Swift's module system; the two verdict values it would give are defined below.
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <libnetfilter_queue/linux_nfnetlink_queue.h>
#include <linux/netfilter/nfnetlink_log.h>

static const uint32_t TS_NF_DROP = 0;
static const uint32_t TS_NF_ACCEPT = 1;
static const uint32_t TS_NF_REPEAT = 4;
static const int TS_NFQA_MAX = NFQA_MAX;
