"""Low-loss paths between minima: the Path type, its certification, the straight segment and the methods."""

from .linear import barrier

__all__ = ["barrier"]
