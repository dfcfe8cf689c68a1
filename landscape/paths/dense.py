"""The dense grid of a path: its loss at evenly spaced points of every segment, in blocks of bounded memory.

:func:`dense_losses` evaluates a whole polygonal path (each knot once), :func:`segment_losses` any set of
segments; :func:`segment_view` gives one row per segment. :mod:`.certify` builds its dense check on these.
"""

from __future__ import annotations

import torch

from .._errors import LandscapeError
from ..problems.problem import Problem

#: Default sub-intervals per segment in the dense check. Grids of resolution R and 2R are nested,
#: so doubling the resolution only adds points.
DEFAULT_RESOLUTION = 32

#: Bytes of interpolated points one block of :func:`dense_losses` may hold (the loss itself is chunked
#: further by the problem). Keeps the dense check of a long path over a large network in bounded memory.
DENSE_BLOCK_BYTES = 64 << 20


def dense_losses(problem: Problem, points: torch.Tensor, resolution: int = DEFAULT_RESOLUTION) -> torch.Tensor:
    """Loss at every point of every segment cut into ``resolution`` sub-intervals, knots included.

    The points are those of :func:`interpolate` (same order, each knot once); they are generated
    a block of segments at a time (at most :data:`DENSE_BLOCK_BYTES`, and about ``problem.max_points``
    points when a memory budget set it), each block one batched ``problem.loss`` call, so memory stays
    bounded however long the path and large the network.

    Parameters
    ----------
    problem : Problem
    points : Tensor, shape (N, D)
    resolution : int

    Returns
    -------
    Tensor, shape ((N − 1)·resolution + 1,)
        Use :func:`segment_view` for the (N − 1, resolution + 1) view, one row per segment.
    """
    if resolution < 1:
        raise LandscapeError(f"resolution must be >= 1, got {resolution}")
    n, d = points.shape
    block = segments_per_block(problem, points, resolution)
    s = torch.arange(resolution, dtype=points.dtype, device=points.device) / resolution
    out = []
    for i in range(0, n - 1, block):
        j = min(i + block, n - 1)
        a, b = points[i:j], points[i + 1:j + 1]
        dense = (a[:, None, :] + s[None, :, None] * (b - a)[:, None, :]).reshape(-1, d)
        if j == n - 1:  # the last knot closes the last block: a short path is one batched call
            dense = torch.cat([dense, points[-1:]])
        out.append(problem.loss(dense))
    return torch.cat(out)


def segment_losses(problem: Problem, a: torch.Tensor, b: torch.Tensor, resolution: int = DEFAULT_RESOLUTION
                   ) -> torch.Tensor:
    """Loss at ``resolution`` + 1 evenly spaced points of each segment ``a[i] → b[i]``, both ends included:
    segments that need not be consecutive (a chain's changed segments), blocked as :func:`dense_losses`.

    Returns
    -------
    Tensor, shape (M, resolution + 1)
    """
    m, d = a.shape
    block = segments_per_block(problem, a, resolution + 1)
    s = torch.arange(resolution + 1, dtype=a.dtype, device=a.device) / resolution
    out = []
    for i in range(0, m, block):
        u, v = a[i:i + block], b[i:i + block]
        out.append(problem.loss((u[:, None, :] + s[None, :, None] * (v - u)[:, None, :]).reshape(-1, d)))
    return torch.cat(out).view(m, resolution + 1)


def segments_per_block(problem, points: torch.Tensor, per_segment: int) -> int:
    """Segments of ``per_segment`` points each that one block holds: at most :data:`DENSE_BLOCK_BYTES` of
    points, and about ``problem.max_points`` points when a memory budget set it (its K)."""
    block = max(1, DENSE_BLOCK_BYTES // max(per_segment * points.shape[1] * points.element_size(), 1))
    cap = getattr(problem, "max_points", None)
    return block if cap is None else max(1, min(block, cap // per_segment))


def segment_view(values: torch.Tensor, resolution: int) -> torch.Tensor:
    """The dense losses of :func:`dense_losses` as one row per segment, both knots included.

    Returns
    -------
    Tensor, shape (N − 1, resolution + 1)
        Row i holds the losses from knot i to knot i + 1 (a view; knots shared by two rows).
    """
    return values.unfold(0, resolution + 1, resolution)
