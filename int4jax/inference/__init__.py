"""Inference: packed checkpoints, the integer engine, decoding."""
