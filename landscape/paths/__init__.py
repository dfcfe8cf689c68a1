"""Low-loss paths between two points, each certified at a level.

- :mod:`.path` — :class:`Path`: points, losses, t; length, normalized length, barrier, status.
- :mod:`.certify` — :func:`certify`: the one certificate every path passes through (dense evaluation of every
  segment, zoom on the highest maxima, and a proof by :mod:`.proof` where the problem can bound its loss).
- :mod:`.proof` — branch and bound on the segments with :meth:`Problem.segment_bounds`.
- :mod:`.connect` — :func:`connect`: the registry ``METHODS`` of path methods, one signature, one certificate.
- the methods, one module each: :mod:`.linear` (the straight segment, :func:`barrier`), :mod:`.string`
  (Dynamic String Sampling, Freeman & Bruna 2017), :mod:`.curves` (Bezier curves and polygonal chains,
  Garipov et al. 2018), :mod:`.neb` (nudged elastic band with AutoNEB insertion, Draxler et al. 2018);
  :mod:`._common` what they share (the :class:`~._common.Endpoints` ``connect`` checked once).
- :mod:`.files` — endpoints from checkpoint files, path files; :mod:`.geodesic` — normalized geodesic length
  against the level (Freeman & Bruna, Fig. 3).
"""

from .certify import CERTIFICATES, DEFAULT_RESOLUTION, certify, default_level
from .proof import Proof, prove_below
from .connect import DEFAULT_METHOD, METHODS, connect, method_options
from .files import load_endpoints, load_path, save_path
from .geodesic import geodesic_lengths
from .linear import barrier, linear_path, straight_max_losses, straight_path, straight_paths
from .path import STATUSES, Path

__all__ = ["CERTIFICATES", "DEFAULT_METHOD", "DEFAULT_RESOLUTION", "METHODS", "Path", "STATUSES", "barrier", "certify", "connect",
           "default_level", "geodesic_lengths", "linear_path", "load_endpoints", "load_path", "method_options",
           "Proof", "prove_below", "save_path", "straight_max_losses", "straight_path", "straight_paths"]
