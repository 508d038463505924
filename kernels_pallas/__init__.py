"""Pallas kernels for packed-INT4 inference: W4A4 / W8A8 / W4A16 GEMMs with fused epilogues and fused token-wise
quantization. Call them through `kernels_pallas.dispatch` (device- and shape-aware, explicit XLA fallback);
`kernels_pallas.reference` holds the exact NumPy references; `kernels_pallas.layout` documents the packed format.
"""

from kernels_pallas.common import MatmulConfig
from kernels_pallas.dispatch import quantize_rows, w4a4_matmul, w4a16_matmul, w8a8_matmul

__all__ = ["MatmulConfig", "quantize_rows", "w4a4_matmul", "w4a16_matmul", "w8a8_matmul"]
