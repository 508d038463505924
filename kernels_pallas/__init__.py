"""Pallas kernels for packed-INT4 inference: W4A4 / W8A8 / W4A16 GEMMs with fused epilogues and fused token-wise
quantization. The public entry is `kernels_pallas.ops` (measured, device- and shape-aware dispatch including XLA's
own paths); `kernels_pallas.reference` holds one exact NumPy reference per op; `mosaic/` the Hopper kernels,
`triton/` the portable ones; the packed layout is defined in `int4jax.quant.formats`.
"""

from kernels_pallas.ops import (PreparedWeight, matmul, prepare_weight, quantize_rows, w4a4_matmul, w4a16_matmul,
                                w8a8_matmul)
from kernels_pallas.triton.common import MatmulConfig

__all__ = ["MatmulConfig", "PreparedWeight", "matmul", "prepare_weight", "quantize_rows", "w4a4_matmul", "w4a16_matmul",
           "w8a8_matmul"]
