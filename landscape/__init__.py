"""landscape: level sets, low-loss paths and valleys of neural-network losses.

The core object is :class:`Problem`, a loss over flat parameter vectors evaluated K points at a
time. Registries are plain dicts: ``PROBLEMS`` (embedded problems), ``LOSSES``.
"""

__version__ = "0.1.0"

from ._checkpoint import Checkpoint, atomic_save, atomic_write, describe_checkpoint, load_checkpoint, read_file, save_checkpoint
from ._device import resolve_device
from ._errors import LandscapeError
from ._layout import Layout
from ._path import DEFAULT_RESOLUTION, STATUSES, Path, certify, default_level, linear_path, load_path, save_path
from ._paths import METHODS, connect, method_options
from ._network import LOSSES, NetworkProblem, Square, from_module, mlp
from ._problem import Problem
from ._problems import DEFAULT_PROBLEM, PROBLEMS, make_problem, problem_from_spec
from ._train import OPTIMIZERS, TrainResult, train
from ._grid_valleys import GridValleys, grid_valleys
from ._hessian import hessian_trace, hvp, minimum_metrics, top_eigenvalue
from ._sampling import SublevelSamples, sample_sublevel_set
from ._valleys import (Merge, ValleyGraph, build_merge_tree, connect_at_level, event_levels, find_valleys,
                       straight_max_losses, write_graph)

__all__ = [
    "Checkpoint", "DEFAULT_PROBLEM", "DEFAULT_RESOLUTION", "Path", "STATUSES", "certify", "default_level",
    "linear_path", "load_path", "save_path", "LOSSES", "LandscapeError", "Layout", "NetworkProblem", "OPTIMIZERS",
    "PROBLEMS", "Problem", "Square", "TrainResult", "atomic_save", "describe_checkpoint", "from_module",
    "load_checkpoint", "make_problem", "mlp", "problem_from_spec", "read_file", "resolve_device",
    "save_checkpoint", "train",
    "atomic_write", "GridValleys", "grid_valleys", "hessian_trace", "hvp", "minimum_metrics", "top_eigenvalue",
    "SublevelSamples", "sample_sublevel_set", "Merge", "ValleyGraph", "build_merge_tree", "connect_at_level",
    "event_levels", "find_valleys", "straight_max_losses", "write_graph",
    "METHODS", "connect", "method_options",
]
