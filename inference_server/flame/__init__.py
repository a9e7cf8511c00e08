"""FLAME layer: model files, restricted loading, forward pass."""
