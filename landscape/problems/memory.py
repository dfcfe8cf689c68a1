"""A memory budget for K, the number of points evaluated at once.

Commands that evaluate many points (``connect``: beads per batch, curve points per step, the straight
segment's points, the certificate's dense grid; ``valleys``: the same for every pair) hand them to
:meth:`Problem.loss` / :meth:`Problem.loss_and_grad` K points a call. K is the budget divided by the
bytes one point needs, estimated from the problem (:func:`point_bytes`):

- its parameters: ``PARAM_COPIES`` vectors of D values (the point, its gradient, the gradient being
  accumulated, the copy of the weights a batched layer makes);
- its activations: ``ACTIVATION_COPIES`` × (values one forward pass creates per sample, summed over the
  layers) × (samples a call evaluates: the training split, or ``sample_chunk`` of it), kept for the
  backward pass with their gradients; twice that with BatchNorm statistics recomputed (the statistics
  pass runs on as many samples as the loss pass).

The point tensors the methods hold themselves (a handful of beads or control points) are outside K.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import asdict, dataclass

import torch

from .._errors import LandscapeError
from .params import available_memory, format_bytes
from .problem import Problem

#: Copies of a point's D parameters alive while it is evaluated (point, gradient, accumulator, batched weights).
PARAM_COPIES = 4
#: Copies of the activations alive in a backward pass (values saved by forward, their gradients, workspace).
ACTIVATION_COPIES = 3
#: The budget when none is given: this fraction of the device's free memory.
DEFAULT_FRACTION = 0.5

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 10**3, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
          "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}


@dataclass(frozen=True)
class MemoryPlan:
    """What a budget allows: K points a call.

    Attributes
    ----------
    budget : int or None
        Bytes (None: the free memory is unknown and no budget applies).
    source : str
        ``"--memory"`` when given, else ``"half of the free memory"`` (or ``"unknown"``).
    point_bytes : int
        Estimated bytes one point needs (:func:`point_bytes`).
    k : int or None
        Points evaluated at once, ``budget // point_bytes`` (None: no cap).
    samples : int
        Samples one evaluation holds activations for (the split, or ``sample_chunk``).
    """

    budget: int | None
    source: str
    point_bytes: int
    k: int | None
    samples: int

    def summary(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """One line: ``memory 2 GiB (--memory): 12.3 MiB a point (1,438 samples) -> K = 166 points at once``."""
        if self.budget is None:
            return f"memory unknown: {format_bytes(self.point_bytes)} a point, K not capped"
        return (f"memory {format_bytes(self.budget)} ({self.source}): {format_bytes(self.point_bytes)} a point "
                f"({self.samples:,} samples a call) -> K = {self.k:,} points at once")


def parse_memory(value) -> int:
    """Bytes from ``2GiB``, ``512 MiB``, ``1.5GB``, ``4e9`` or an int (binary ``K``/``M``/``G``/``T`` alone).

    Raises
    ------
    LandscapeError
        One line naming the value and how to write one.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        if match is None or match.group(2).lower() not in _UNITS:
            raise LandscapeError(f"--memory {value}: not a memory size; write e.g. 2GiB, 512MiB, 1.5GB or bytes")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = number * _UNITS[unit]
    if not (math.isfinite(size) and size >= 1):
        raise LandscapeError(f"--memory {value}: must be a positive size, e.g. 2GiB")
    return int(size)


def point_bytes(problem: Problem, dtype: torch.dtype = torch.float32) -> tuple[int, int]:
    """Estimated bytes one point needs while its loss and gradient are computed, and the samples counted.

    Returns
    -------
    bytes : int
        ``itemsize · (PARAM_COPIES · D + ACTIVATION_COPIES · A · n · (2 with recomputed BatchNorm, else 1))``
        where A is :meth:`Problem.activations_per_sample` and n the samples of one call.
    samples : int
    """
    n = problem.n_samples("train") if problem.splits else 0
    if problem.sample_chunk is not None:
        n = min(n, problem.sample_chunk)
    passes = 2 if getattr(problem, "bn", None) == "recompute" else 1
    values = PARAM_COPIES * problem.dim + ACTIVATION_COPIES * problem.activations_per_sample() * n * passes
    return torch.finfo(dtype).bits // 8 * values, n


def plan_memory(problem: Problem, memory=None, *, dtype: torch.dtype = torch.float32, device="cpu") -> MemoryPlan:
    """K, the points a call may take, from a budget: ``memory`` bytes (or ``"2GiB"``), default half the free memory.

    Parameters
    ----------
    problem : Problem
    memory : int, float or str, optional
        The budget (:func:`parse_memory`). None: :data:`DEFAULT_FRACTION` of what ``device`` has free
        now (:func:`landscape.problems.params.available_memory`); no cap where that is unknown.
    dtype : torch.dtype
    device : torch.device or str

    Raises
    ------
    LandscapeError
        When the budget is below one point: names ``--memory`` and what one point needs.
    """
    need, samples = point_bytes(problem, dtype)
    if memory is None:
        free = available_memory(device)
        if free is None:
            return MemoryPlan(None, "unknown", need, None, samples)
        budget, source = int(free * DEFAULT_FRACTION), "half of the free memory"
    else:
        budget, source = parse_memory(memory), "--memory"
    k = budget // max(need, 1)
    if k < 1:
        fix = "raise --memory" + (" or set --sample-chunk" if samples > 1 else "")
        raise LandscapeError(f"--memory {format_bytes(budget)} is less than one point needs ({format_bytes(need)}: "
                             f"{problem.dim:,} parameters, activations of {samples:,} samples); {fix}")
    return MemoryPlan(budget, source, need, k, samples)


@contextlib.contextmanager
def budgeted(problem: Problem, plan: MemoryPlan):
    """Within the ``with``, ``problem`` evaluates at most ``plan.k`` points a call (restored afterwards)."""
    before = problem.max_points
    problem.max_points = before if plan.k is None else plan.k if before is None else min(before, plan.k)
    try:
        yield plan
    finally:
        problem.max_points = before
