// Headers of libnetfilter_queue (mnl API) and libmnl, as Swift sees them.
// Debian: libnetfilter-queue-dev, libmnl-dev.
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <libnetfilter_queue/linux_nfnetlink_queue.h>
