"""Former name of `kernels_pallas.ops` (the one public entry); kept so that older imports keep working."""

from kernels_pallas.ops import (BACKENDS, PATHS, PreparedWeight, prepare_weight, quantize_rows,  # noqa: F401
                                w4a4_matmul, w4a16_matmul, w8a8_matmul)
