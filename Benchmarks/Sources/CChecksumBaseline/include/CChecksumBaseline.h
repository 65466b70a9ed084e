#ifndef C_CHECKSUM_BASELINE_H
#define C_CHECKSUM_BASELINE_H

#include <stddef.h>
#include <stdint.h>

/// The folded ones' complement sum of `len` bytes (RFC 1071), by a plain loop over big-endian
/// 16-bit words with a 32-bit accumulator: the "plain C loop" baseline. Valid up to 128 KiB.
uint16_t cbaseline_sum16(const void *data, size_t len);

#endif
