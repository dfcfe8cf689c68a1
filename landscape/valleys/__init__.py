"""Valleys of the sublevel sets {θ : L(θ) ≤ u}: how many, which are spurious, and where they merge.

- :mod:`.graph` — :class:`ValleyGraph` (minima and certified paths), the merge tree, the one
  :func:`spurious_tolerance` rule.
- :mod:`.search` — :func:`find_valleys`: straight checks first, path refinement only between minima still apart.
- :mod:`.sampling` — points of a sublevel set by batched hit-and-run; new minima seeded from them.
- :mod:`.grid` — exact valley counts of 2-D problems from a fine grid (the ground truth for tests).
"""

from .graph import Merge, ValleyGraph, event_levels, read_graph, spurious_tolerance, write_graph
from .grid import GridValleys, grid_valleys
from .sampling import SublevelSamples, sample_sublevel_set, seed_minima
from .search import build_merge_tree, connect_at_level, find_valleys

__all__ = ["GridValleys", "Merge", "SublevelSamples", "ValleyGraph", "build_merge_tree", "connect_at_level",
           "event_levels", "find_valleys", "grid_valleys", "read_graph", "sample_sublevel_set", "seed_minima", "spurious_tolerance",
           "write_graph"]
