"""Timing and comparison: the training-step benchmark, delays per sample, latency, the A/B comparison."""
