"""Quantization: numerics (quantizers, STE), formats (bit layouts), policy (which GEMM gets which quantizer)."""
