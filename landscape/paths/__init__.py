"""Low-loss paths between two points, each certified at a level.

- :mod:`.path` — :class:`Path` (points, losses, t; length, normalized length, barrier) and its certification:
  :func:`certify` evaluates every segment densely and zooms on the highest maxima.
- :mod:`.connect` — :func:`connect`: the registry ``METHODS`` of path methods, one signature, one certificate.
- the methods, one module each: :mod:`.linear` (the straight segment), :mod:`.string` (Dynamic String Sampling,
  Freeman & Bruna 2017), :mod:`.curves` (Bezier curves and polygonal chains, Garipov et al. 2018),
  :mod:`.neb` (nudged elastic band with AutoNEB insertion, Draxler et al. 2018); :mod:`._common` what they share.
- :mod:`.files` — endpoints from checkpoint files, path files; :mod:`.geodesic` — normalized geodesic length
  against the level (Freeman & Bruna, Fig. 3).
"""

from .connect import DEFAULT_METHOD, METHODS, connect, method_options
from .files import load_endpoints
from .geodesic import geodesic_lengths
from .path import (DEFAULT_RESOLUTION, STATUSES, Path, certify, default_level, linear_path, load_path,
                   save_path)

__all__ = ["DEFAULT_METHOD", "DEFAULT_RESOLUTION", "METHODS", "Path", "STATUSES", "certify", "connect",
           "default_level", "geodesic_lengths", "linear_path", "load_endpoints", "load_path", "method_options",
           "save_path"]
