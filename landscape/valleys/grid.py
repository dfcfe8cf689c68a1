"""Exact valley counts of 2-D problems: connected components of a fine grid of Ω_u.

The path-based count of :mod:`landscape.valleys.graph` certifies connections; this one sees every
connected component directly (scipy.ndimage.label on the grid cells below u), so on the analytic
landscapes the two must agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._errors import LandscapeError
from ..problems.problem import Problem


@dataclass
class GridValleys:
    """Components of {L ≤ u} on a grid.

    Attributes
    ----------
    level : float
    xs, ys : ndarray, shapes (W,) and (H,)
    losses : ndarray, shape (H, W)
    labels : ndarray of int, shape (H, W)
        0 above the level, 1..n for the components.
    n_valleys : int
        Components that contain at least one of the given minima.
    n_components : int
        All components of the grid (a component without a listed minimum holds an unlisted one).
    minima_labels : list of int
        The component of each minimum (0 if its cell is above the level).
    """

    level: float
    xs: np.ndarray
    ys: np.ndarray
    losses: np.ndarray
    labels: np.ndarray
    n_valleys: int
    n_components: int
    minima_labels: list


def grid_valleys(problem: Problem, level: float, *, minima: torch.Tensor | None = None, box=None,
                 shape: tuple[int, int] = (401, 401)) -> GridValleys:
    """Label the connected components of Ω_u on a grid over ``box`` (4-connectivity).

    Parameters
    ----------
    problem : Problem
        A 2-D problem (``problem.dim == 2``).
    level : float
    minima : Tensor, shape (m, 2), optional
        Defaults to ``problem.minima``.
    box : ((x0, x1), (y0, y1)), optional
        Defaults to ``problem.box``.
    shape : (int, int)
        Grid points along y and x.
    """
    from scipy import ndimage

    if problem.dim != 2:
        raise LandscapeError(f"grid valleys need a 2-D problem; {problem.name} has D = {problem.dim}")
    box = box or getattr(problem, "box", None)
    if box is None:
        raise LandscapeError(f"problem {problem.name} has no box; pass box=((x0, x1), (y0, y1))")
    minima = getattr(problem, "minima", None) if minima is None else minima
    (x0, x1), (y0, y1) = box
    xs = torch.linspace(x0, x1, shape[1], dtype=torch.float64)
    ys = torch.linspace(y0, y1, shape[0], dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    losses = problem.loss(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).reshape(shape).numpy()
    labels, n = ndimage.label(losses <= level)
    found = []
    if minima is not None:
        for p in minima.tolist():
            i = int(np.abs(ys.numpy() - p[1]).argmin())
            j = int(np.abs(xs.numpy() - p[0]).argmin())
            found.append(int(labels[i, j]))
    n_valleys = len({lab for lab in found if lab > 0})
    return GridValleys(float(level), xs.numpy(), ys.numpy(), losses, labels, n_valleys, int(n), found)
