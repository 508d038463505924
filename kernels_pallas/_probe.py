import jax, jax.numpy as jnp, time
print(jax.__version__, jax.devices(), jax.devices()[0].compute_capability)
from kernels_pallas.hopper_w4a4 import packed_to_int4
x = jnp.zeros((28672, 4096), jnp.uint8) + 0x21
f = jax.jit(packed_to_int4)
print(f.lower(x).compile().as_text()[:1500])
