"""Evaluation: multi-hypothesis metrics, the synthetic occlusion benchmark and the NoW protocol."""
