"""Training: the loop, checkpoints (the only orbax user), KD losses, the run directory."""
