"""Analyses of trained runs (the decoder failure study)."""
