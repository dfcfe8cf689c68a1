"""What a view shows, computed without any drawing library (``landscape.viz`` draws it).

- :mod:`.planes` — :class:`Plane`: an origin and two directions (``PLANES``: random filter-normalized, PCA of
  trajectories, through three points; Li et al. 2018).
- :mod:`.surface` — :func:`evaluate_plane`: the loss over a grid of a plane in one batched sweep, cached.
- :mod:`.levels` — :class:`Levels`: the valleys at a level u from the merge tree, and a level slider's scale.
- :mod:`.scene` — :class:`Scene`: the surface, minima, paths and trajectories projected on a plane.
"""

from .levels import LevelState, Levels
from .planes import BIASES, NORMALIZATIONS, PLANES, Plane, filter_normalized_direction, make_plane
from .scene import SCENE_PLANES, Curve, Marker, Scene, build_scene, scene_from_files
from .surface import Surface, default_cache_dir, evaluate_plane

__all__ = ["BIASES", "Curve", "LevelState", "Levels", "Marker", "NORMALIZATIONS", "PLANES", "SCENE_PLANES", "default_cache_dir", "Plane", "Scene", "Surface", "build_scene", "evaluate_plane",
           "filter_normalized_direction", "make_plane", "scene_from_files"]
