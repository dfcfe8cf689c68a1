"""The straight segment: the baseline every report shows."""

from __future__ import annotations

import torch

from .._errors import LandscapeError
from .path import Path
from ._common import check_count, prepare


def linear(problem, start, end, *, level=None, generator=None, n_points: int = 2) -> Path:
    """The straight segment from ``start`` to ``end``, with ``n_points`` evenly spaced knots.

    Its dense max loss is the linear-interpolation barrier of Goodfellow et al. (2015), the
    number every other method is compared with.

    Parameters
    ----------
    problem : Problem
    start, end : Tensor, shape (D,)
    level : float, optional
        Recorded on the path; :func:`landscape.paths.default_level` of the endpoint losses when None.
    generator : torch.Generator, optional
        Unused (the segment is deterministic); accepted for the common signature.
    n_points : int
        Knots, endpoints included (≥ 2).

    Returns
    -------
    Path
        Uncertified (``status="unchecked"``); :func:`landscape.connect` certifies it.
    """
    counted, start, end, la, lb, level = prepare(problem, start, end, level)
    check_count(n_points=n_points)
    if n_points < 2:
        raise LandscapeError(f"option n_points of linear must be >= 2 (the endpoints), got {n_points}")
    s = torch.linspace(0, 1, n_points, dtype=start.dtype, device=start.device)[:, None]
    points = (1 - s) * start + s * end
    inner = counted.loss(points[1:-1]) if n_points > 2 else points.new_empty(0)
    losses = torch.cat([points.new_tensor([la]), inner, points.new_tensor([lb])])
    return Path(points, losses, method="linear", level=level, evaluations=counted.evaluations,
                info=counted.figures())
