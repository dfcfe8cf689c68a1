"""Valleys of the sublevel sets {θ : L(θ) ≤ u}: how many, which are spurious, and where they merge.

- :mod:`.graph` — :class:`ValleyGraph` (minima and certified paths), :func:`find_valleys`, the merge tree.
- :mod:`.sampling` — points of a sublevel set by batched hit-and-run; new minima seeded from them.
- :mod:`.grid` — exact valley counts of 2-D problems from a fine grid (the ground truth for tests).
"""

from .graph import (Merge, ValleyGraph, build_merge_tree, connect_at_level, event_levels, find_valleys,
                    straight_max_losses, write_graph)
from .grid import GridValleys, grid_valleys
from .sampling import SublevelSamples, sample_sublevel_set, seed_minima

__all__ = ["GridValleys", "Merge", "SublevelSamples", "ValleyGraph", "build_merge_tree", "connect_at_level",
           "event_levels", "find_valleys", "grid_valleys", "sample_sublevel_set", "seed_minima",
           "straight_max_losses", "write_graph"]
