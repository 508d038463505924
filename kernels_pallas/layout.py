"""Packed INT4 layout shared by every kernel in `kernels_pallas`.

Layout (defined once in `int4jax.quant.formats`, re-exported here):
- values are signed int4 in [-8, 7], stored two's complement in a nibble;
- two values per uint8 byte along the *reduction* axis K: element 2i in the LOW nibble (bits 0-3), element 2i+1
  in the HIGH nibble (bits 4-7);
- weights are stored (N, K) with K contiguous and packed to (N, K // 2) uint8; activations (M, K) -> (M, K // 2);
- group scales of a weight are (N, K // group_size) float32, a group being `group_size` consecutive K elements
  (group_size is even, so a group never splits a byte).

Worked example: [-8, 7] -> low nibble 0x8 (-8), high nibble 0x7 (7) -> byte 0x78.
                [1, -1] -> low 0x1, high 0xF -> byte 0xF1.

Unpacking a byte b held as int8: low = (b << 4) >> 4 and high = b >> 4, both arithmetic shifts, which sign-extend.
Kernels never re-interleave: sum_k x[k] w[k] = x_even . w_even + x_odd . w_odd, so a packed GEMM is two int8 GEMMs,
one on the low nibbles and one on the high nibbles (see w4a4.py).

Note the order differs from DeepSpeed's quantizer, which packs the *high* nibble first (paper_spec.md §7.2).
"""

from __future__ import annotations

# Scales of all-zero rows: S = max(absmax, ABSMAX_FLOOR) / 2^(bits-1), so q = 0 and S stays finite and positive.
ABSMAX_FLOOR = 1e-8

from int4jax.quant.formats import pack_int4, pack_int4_np, unpack_int4, unpack_int4_np  # noqa: F401
