"""int4jax: a JAX/Flax reproduction of "Understanding INT4 Quantization for Transformer Models" (Wu et al. 2023)."""
__version__ = "0.1.0"
