"""landscape: level sets, low-loss paths and valleys of neural-network losses.

The core object is :class:`Problem`, a loss over flat parameter vectors evaluated K points at a
time. Registries are plain dicts: ``PROBLEMS`` (embedded problems), ``LOSSES``, ``METHODS`` (path
methods, run by :func:`connect`), ``ALIGNERS``, ``PLANES``, ``TASKS`` (study tasks).
"""

__version__ = "0.1.0"

from .symmetries.align import ALIGNERS, Alignment, align
from .problems.checkpoint import Checkpoint, atomic_save, describe_checkpoint, load_checkpoint, read_file, save_checkpoint
from ._device import resolve_device
from ._errors import LandscapeError
from ._io import atomic_write, atomic_write_bytes, atomic_write_file
from .problems.layout import Layout
from .paths.path import STATUSES, Path
from .paths.certify import DEFAULT_RESOLUTION, certify, default_level
from .paths.linear import barrier, linear_path
from .paths.files import load_path, save_path
from ._info import describe_file
from .paths.connect import DEFAULT_METHOD, METHODS, connect, method_options
from .paths.files import load_endpoints
from .paths.geodesic import geodesic_lengths
from .problems.module import BN_POLICIES, LOSSES, NetworkProblem, Square, from_module, mlp
from .problems.problem import Problem
from .problems.embedded import DEFAULT_PROBLEM, PROBLEMS, make_problem, problem_from_spec
from .symmetries.groups import Symmetry, UnitGroup
from .symmetries.trace import symmetry
from .views.planes import PLANES, Plane, filter_normalized_direction, make_plane
from .views.scene import Curve, Marker, Scene, build_scene, scene_from_files
from .views.surface import Surface, evaluate_plane
from .minima.train import OPTIMIZERS, TrainResult, train
from .minima.margin import DYNAMICS, MaxMargin, implicit_bias, max_margin
from .studies.report import study_results, study_tables, write_report
from .studies.run import run_study, study_status
from .studies.study import Study, builtin_studies, load_study
from .studies.tasks import TASKS
from .valleys.grid import GridValleys, grid_valleys
from .minima.curvature import hessian_trace, hvp, minimum_metrics, top_eigenvalue
from .valleys.sampling import SublevelSamples, sample_sublevel_set, seed_minima
from .paths.linear import straight_max_losses
from .valleys.graph import Merge, ValleyGraph, event_levels, write_graph
from .valleys.search import build_merge_tree, connect_at_level, find_valleys

__all__ = [
    "Checkpoint", "DEFAULT_PROBLEM", "DEFAULT_RESOLUTION", "Path", "STATUSES", "barrier", "certify", "default_level",
    "linear_path", "load_path", "save_path", "LOSSES", "LandscapeError", "Layout", "NetworkProblem", "OPTIMIZERS",
    "PROBLEMS", "Problem", "Square", "TrainResult", "atomic_save", "describe_checkpoint", "from_module",
    "load_checkpoint", "make_problem", "mlp", "problem_from_spec", "read_file", "resolve_device",
    "save_checkpoint", "train", "atomic_write", "atomic_write_bytes", "atomic_write_file",
    "ALIGNERS", "Alignment", "Symmetry", "UnitGroup", "align", "symmetry",
    "DYNAMICS", "MaxMargin", "Study", "TASKS", "builtin_studies", "implicit_bias", "load_study", "max_margin",
    "run_study", "study_results", "study_status", "study_tables", "write_report",
    "PLANES", "Plane", "filter_normalized_direction", "make_plane", "Curve", "Marker", "Scene", "build_scene",
    "scene_from_files", "Surface", "evaluate_plane",
    "BN_POLICIES", "DEFAULT_METHOD", "METHODS", "connect", "describe_file", "geodesic_lengths", "load_endpoints",
    "method_options",
    "GridValleys", "grid_valleys", "hessian_trace", "hvp", "minimum_metrics", "top_eigenvalue",
    "SublevelSamples", "sample_sublevel_set", "seed_minima", "Merge", "ValleyGraph", "build_merge_tree", "connect_at_level",
    "event_levels", "find_valleys", "straight_max_losses", "write_graph",
]
