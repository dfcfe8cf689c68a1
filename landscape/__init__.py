"""landscape: level sets, low-loss paths and valleys of neural-network losses.

The pipeline, one subpackage a stage (each ``__init__`` lists its modules and algorithms):

- :mod:`landscape.problems` — :class:`Problem`, a loss over flat parameter vectors evaluated K points at a time;
  the embedded problems (``PROBLEMS``), ``nn.Module`` problems (:func:`from_module`), checkpoints.
- :mod:`landscape.minima` — :func:`train` many seeds as one batch; curvature; implicit bias (``DYNAMICS``).
- :mod:`landscape.paths` — :func:`connect` two minima below a level (``METHODS``), :func:`certify` a path.
- :mod:`landscape.symmetries` — a network's permutation/rescaling symmetry, :func:`align` (``ALIGNERS``).
- :mod:`landscape.valleys` — :func:`find_valleys`: valleys, spurious valleys, the merge tree; sublevel sampling.
- :mod:`landscape.views` — planes (``PLANES``), surfaces and scenes; :mod:`landscape.viz` draws them (optional).
- :mod:`landscape.studies` — studies over grids of problems and seeds (``TASKS``), resumable, local or on Dask.

Helpers (atomic writers, :class:`~landscape.problems.Layout`, chunking) stay in their subpackage.
"""

from ._device import keep_freed_memory, resolve_device
from ._errors import LandscapeError
from ._info import describe_file
from ._version import __version__
from .minima import (DYNAMICS, OPTIMIZERS, MaxMargin, TrainResult, implicit_bias, is_stationary, max_margin,
                     minimum_metrics, polish, train)
from .paths import (DEFAULT_METHOD, METHODS, Path, barrier, certify, connect, geodesic_lengths, load_endpoints,
                    load_path, method_options, save_path)
from .problems import (BN_POLICIES, DEFAULT_PROBLEM, LOSSES, PROBLEMS, Checkpoint, NetworkProblem, Problem,
                       from_module, load_checkpoint, make_problem, save_checkpoint)
from .studies import (TASKS, Study, builtin_studies, load_study, run_study, study_results, study_status,
                      write_report)
from .symmetries import ALIGNERS, Alignment, Symmetry, align, symmetry
from .valleys import (GridValleys, Merge, SublevelSamples, ValleyGraph, find_valleys, grid_valleys,
                      sample_sublevel_set, seed_minima)
from .views import PLANES, Plane, Scene, Surface, build_scene, evaluate_plane, make_plane

__all__ = [
    "__version__", "LandscapeError", "resolve_device", "keep_freed_memory", "describe_file",
    # problems
    "PROBLEMS", "LOSSES", "BN_POLICIES", "DEFAULT_PROBLEM", "Problem", "NetworkProblem", "make_problem",
    "from_module", "Checkpoint", "load_checkpoint", "save_checkpoint",
    # minima
    "OPTIMIZERS", "DYNAMICS", "TrainResult", "MaxMargin", "train", "minimum_metrics", "max_margin", "implicit_bias",
    "polish", "is_stationary",
    # paths
    "METHODS", "DEFAULT_METHOD", "Path", "connect", "certify", "barrier", "method_options", "load_endpoints",
    "load_path", "save_path", "geodesic_lengths",
    # symmetries
    "ALIGNERS", "Alignment", "Symmetry", "align", "symmetry",
    # valleys
    "ValleyGraph", "Merge", "GridValleys", "SublevelSamples", "find_valleys", "grid_valleys", "sample_sublevel_set",
    "seed_minima",
    # views
    "PLANES", "Plane", "Surface", "Scene", "make_plane", "evaluate_plane", "build_scene",
    # studies
    "TASKS", "Study", "load_study", "run_study", "study_status", "study_results", "write_report", "builtin_studies",
]
