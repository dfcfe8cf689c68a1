"""Low-loss paths between minima: the Path type, its certification, the straight segment and the methods."""

from .linear import barrier, straight_path, straight_paths

__all__ = ["barrier", "straight_path", "straight_paths"]
