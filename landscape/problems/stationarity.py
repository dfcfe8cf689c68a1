"""The stationarity criterion: when a point of a problem counts as a minimum.

One rule for the whole package (training, checkpoints, valley counting; see
:mod:`landscape.minima.stationary` for why these constants and for :func:`~landscape.minima.polish`)::

    ‖∇L(θ)‖ ≤ GRAD_RTOL · max(|L(θ)|, LOSS_FLOOR)        GRAD_RTOL = 1e-3, LOSS_FLOOR = 0.1
"""

from __future__ import annotations

import torch

from .._errors import LandscapeError

#: c in ‖∇L‖ ≤ c·max(|L|, floor).
GRAD_RTOL = 1e-3
#: The loss below which the criterion is absolute: ‖∇L‖ ≤ GRAD_RTOL·LOSS_FLOOR = 1e-4.
LOSS_FLOOR = 0.1


def gradient_tolerance(loss: torch.Tensor, *, rtol: float = GRAD_RTOL, floor: float = LOSS_FLOOR) -> torch.Tensor:
    """The largest gradient norm a minimum of loss ``loss`` may have: ``rtol · max(|loss|, floor)``.

    Parameters
    ----------
    loss : Tensor, shape (K,)

    Returns
    -------
    Tensor, shape (K,)
    """
    if not (rtol > 0 and floor > 0):
        raise LandscapeError(f"the stationarity criterion needs rtol > 0 and floor > 0, got {rtol}, {floor}")
    return rtol * loss.abs().clamp_min(floor)


def is_stationary(loss: torch.Tensor, grad_norm: torch.Tensor, **criterion) -> torch.Tensor:
    """Whether each point meets the criterion, ``‖∇L‖ ≤ rtol·max(|L|, floor)`` (finite values only).

    Parameters
    ----------
    loss, grad_norm : Tensor, shape (K,)
    **criterion
        ``rtol`` and ``floor`` (:data:`GRAD_RTOL`, :data:`LOSS_FLOOR` by default).

    Returns
    -------
    Tensor of bool, shape (K,)
    """
    return torch.isfinite(loss) & (grad_norm <= gradient_tolerance(loss, **criterion))


def criterion_text(**criterion) -> str:
    """The criterion in words, for messages: ``|grad L| <= 0.001 * max(|L|, 0.1)``."""
    rtol, floor = criterion.get("rtol", GRAD_RTOL), criterion.get("floor", LOSS_FLOOR)
    return f"|grad L| <= {rtol:g} * max(|L|, {floor:g})"
