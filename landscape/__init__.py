"""landscape: level sets, low-loss paths and valleys of neural-network losses.

The core object is :class:`Problem`, a loss over flat parameter vectors evaluated K points at a
time. Registries are plain dicts: ``PROBLEMS`` (embedded problems), ``LOSSES``, ``METHODS`` (path
methods, run by :func:`connect`).
"""

__version__ = "0.1.0"

from ._checkpoint import Checkpoint, atomic_save, describe_checkpoint, load_checkpoint, read_file, save_checkpoint
from ._device import resolve_device
from ._errors import LandscapeError
from ._layout import Layout
from ._path import DEFAULT_RESOLUTION, STATUSES, Path, certify, default_level, linear_path, load_path, save_path
from ._info import describe_file
from ._paths import DEFAULT_METHOD, METHODS, connect, method_options
from ._paths.files import load_endpoints
from ._paths.geodesic import geodesic_lengths
from ._network import BN_POLICIES, LOSSES, NetworkProblem, Square, from_module, mlp
from ._problem import Problem
from ._problems import DEFAULT_PROBLEM, PROBLEMS, make_problem, problem_from_spec
from ._train import OPTIMIZERS, TrainResult, train

__all__ = [
    "Checkpoint", "DEFAULT_PROBLEM", "DEFAULT_RESOLUTION", "Path", "STATUSES", "certify", "default_level",
    "linear_path", "load_path", "save_path", "LOSSES", "LandscapeError", "Layout", "NetworkProblem", "OPTIMIZERS",
    "PROBLEMS", "Problem", "Square", "TrainResult", "atomic_save", "describe_checkpoint", "from_module",
    "load_checkpoint", "make_problem", "mlp", "problem_from_spec", "read_file", "resolve_device",
    "save_checkpoint", "train",
    "BN_POLICIES", "DEFAULT_METHOD", "METHODS", "connect", "describe_file", "geodesic_lengths", "load_endpoints",
    "method_options",
]
