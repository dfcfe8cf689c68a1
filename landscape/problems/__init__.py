"""The problem core: a loss as a batched function of flat parameter vectors, and where problems come from.

- :mod:`.problem` — :class:`Problem`: ``loss(thetas [K, D]) -> [K]`` and ``loss_and_grad``, chunked to the cache.
- :mod:`.layout` — :class:`Layout`: named tensors <-> slices of a flat [..., D] vector.
- :mod:`.module` — :class:`NetworkProblem` from an ``nn.Module``, data and a loss (BatchNorm policies
  ``BN_POLICIES``); :mod:`.user` — :func:`from_module` and ``package.module:factory`` problems.
- :mod:`.capture` — the differential check: the fast evaluators and the bound graph against the module's own
  ``forward`` in float64, at every problem built from a module and at the endpoints of every connection.
- :mod:`.mlp`, :mod:`.losses` — plain MLPs (:func:`mlp`) run K at a time, their loss and gradient written out by
  hand; the batched losses ``LOSSES`` and their gradients.
- :mod:`.batchnorm` — BatchNorm with statistics recomputed at every point.
- :mod:`.bounds`, :mod:`.traced`, :mod:`.operations`, :mod:`.relaxed` — upper bounds of the loss over whole
  segments (plain MLPs; what a traced ``forward`` does: conv and residual nets, functional calls), for proofs
  that a path stays below a level.
- :mod:`.analytic`, :mod:`.networks`, :mod:`.convnets`, :mod:`.venturi` — the embedded problems;
  :mod:`.embedded` holds their registry ``PROBLEMS`` and :func:`make_problem`.
- :mod:`.memory` — a memory budget for K, the points evaluated at once (:func:`plan_memory`).
- :mod:`.checkpoint` — checkpoint files: safe to load (``weights_only``), atomic to write.
"""

from .checkpoint import Checkpoint, atomic_save, describe_checkpoint, load_checkpoint, read_file, save_checkpoint
from .embedded import DEFAULT_PROBLEM, PROBLEMS, describe_problem, make_problem, problem_from_spec
from .layout import Layout
from .memory import MemoryPlan, parse_memory, plan_memory
from .mlp import Square, mlp
from .module import BN_POLICIES, LOSSES, NetworkProblem
from .user import from_module
from .problem import Problem

__all__ = ["BN_POLICIES", "Checkpoint", "DEFAULT_PROBLEM", "LOSSES", "Layout", "MemoryPlan", "NetworkProblem", "PROBLEMS",
           "Problem", "Square", "atomic_save", "describe_checkpoint", "describe_problem", "from_module", "load_checkpoint",
           "make_problem", "mlp", "parse_memory", "plan_memory", "problem_from_spec", "read_file", "save_checkpoint"]
