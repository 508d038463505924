"""Hopper (sm_90) kernels in the Pallas Mosaic GPU lowering: wgmma, TMA, warp specialization. Call them through
`kernels_pallas.ops`; each module's docstring gives its layout, math and measured speed."""
