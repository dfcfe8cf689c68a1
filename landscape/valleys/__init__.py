"""Valleys of the sublevel sets {θ : L(θ) ≤ u}: how many, which are spurious, and where they merge.

- :mod:`.graph` — :class:`ValleyGraph` (minima and certified paths), the merge tree, the one
  :func:`spurious_tolerance` rule; :mod:`.files` — the graph as JSON/GraphML and back (:func:`read_graph`).
- :mod:`.separation` — ``SEPARATIONS``: a problem's own proof that minima lie in different valleys, which
  alone makes a count exact (without one, a count is an upper bound: no path found is not a proof).
- :mod:`.search` — :func:`find_valleys`: straight checks first, path refinement only between minima still apart.
- :mod:`.sampling` — points of a sublevel set by batched hit-and-run; new minima seeded from them.
- :mod:`.grid` — exact valley counts of 2-D problems from a fine grid (the ground truth for tests).
"""

from .graph import Merge, ValleyGraph, event_levels, spurious_tolerance
from .files import read_graph, write_graph
from .separation import SEPARATIONS, Separation, proven_separations
from .grid import GridValleys, grid_valleys
from .sampling import SublevelSamples, sample_sublevel_set, seed_minima
from .search import build_merge_tree, connect_at_level, find_valleys

__all__ = ["GridValleys", "Merge", "SEPARATIONS", "Separation", "SublevelSamples", "ValleyGraph", "build_merge_tree",
           "connect_at_level", "event_levels", "find_valleys", "grid_valleys", "proven_separations", "read_graph",
           "sample_sublevel_set", "seed_minima", "spurious_tolerance", "write_graph"]
