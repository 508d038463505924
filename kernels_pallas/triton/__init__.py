"""Portable kernels in the Pallas Triton lowering (any CUDA GPU; interpret mode on the CPU for CI). Call them through
`kernels_pallas.ops`; each module's docstring gives its layout and math."""
