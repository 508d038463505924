"""Analyses of trained runs (the decoder failure study, the 4-bit format comparison)."""
