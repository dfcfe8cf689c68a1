"""How far a loss evaluated in float32 may lie from its float64 value near a level: the band in which a
float32 loss decides nothing, and the dense check (:func:`landscape.paths.certify.recheck`) and the proof's
refutation (:mod:`.proof`) evaluate again in float64."""

from __future__ import annotations

import torch

#: The margin around a level u, in units of the dtype's machine epsilon ε:
#: ``ε · (ROUNDING_RELATIVE · |u| + ROUNDING_ABSOLUTE)`` (see :func:`rounding_margin`).
ROUNDING_RELATIVE, ROUNDING_ABSOLUTE = 256, 4


def rounding_margin(level: float, dtype: torch.dtype) -> float:
    """How far from its float64 value a mean loss evaluated in ``dtype`` may lie near ``level``.

    ``ε · (ROUNDING_RELATIVE · |u| + ROUNDING_ABSOLUTE)``, ε the dtype's machine epsilon (2⁻²³ for
    float32); 0 for float64, which is the reference. A float32 mean loss carries the rounding of its forward
    pass (a dot product of k terms: up to k ulps relative, about √k typically) and of the mean over N samples
    (a cascade sum: about log₂ N ulps relative): a few ulps of u relative. Where the mean is small next to
    the per-sample terms it averages (cross-entropy's log-sum-exp at a trained minimum, whose logits are of
    order ten), the rounding is absolute instead, about one ulp of 1. Measured in float32 against float64 on
    the embedded problems (digits MLP and CNN, moons, teacher-student, deep linear, exponential; random points,
    trained minima and the segments between them): at losses ≥ 0.05 at most 18 ulps relative (the digits
    CNN; 2 for the MLPs), at most 7.9 ε absolute (the digits CNN at loss 3.6); at trained minima up to 640
    ulps relative (losses near 5e-5) but under 0.13 ε absolute; and never more than 0.22 of ε·(64|L| + 1)
    (the digits CNN at loss 0.05). The margin is four times that expression: the worst rounding measured is
    under 1/18 of it. A loss whose per-sample terms are far larger than their mean (a squared error of 1e-4 between outputs
    of order 100) can round by more; beyond the margin a float32 value decides.

    Parameters
    ----------
    level : float
    dtype : torch.dtype
        The dtype the loss was evaluated in (the points').

    Returns
    -------
    float
        m: a loss in (u − m, u + m] decides nothing about u until it is evaluated in float64.
    """
    if dtype == torch.float64:
        return 0.0
    return torch.finfo(dtype).eps * (ROUNDING_RELATIVE * abs(level) + ROUNDING_ABSOLUTE)


def precision(dtype: torch.dtype) -> str:
    """The name of a dtype as results give it (``"float32"``)."""
    return str(dtype).removeprefix("torch.")
