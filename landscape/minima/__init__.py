"""Minima: batched training of many seeds at once, curvature at minima, and implicit bias of the dynamics.

- :mod:`.train` — :func:`train`: all seeds descend as one [S, D] problem (``OPTIMIZERS``), resumable to files.
- :mod:`.stationary` — when a point is a minimum (``‖∇L‖ ≤ 10⁻³·max(|L|, 0.1)``) and :func:`polish`, a batched
  descent to it (Barzilai & Borwein 1988, Armijo backtracking).
- :mod:`.curvature` — batched Hessian-vector products, top eigenvalue, Hutchinson trace, :func:`minimum_metrics`.
- :mod:`.margin` — the max-margin direction of separable data and the dynamics that approach it (``DYNAMICS``;
  Soudry et al. 2018; Poggio, Banburski & Liao 2020).
"""

from .curvature import hessian_trace, hvp, minimum_metrics, top_eigenvalue
from .margin import DYNAMICS, MaxMargin, implicit_bias, max_margin
from .stationary import GRAD_RTOL, LOSS_FLOOR, POLISH_STEPS, Polished, criterion_text, is_stationary, polish
from .train import OPTIMIZERS, TrainResult, train, train_checkpoints

__all__ = ["DYNAMICS", "GRAD_RTOL", "LOSS_FLOOR", "MaxMargin", "OPTIMIZERS", "POLISH_STEPS", "Polished",
           "TrainResult", "criterion_text", "hessian_trace", "is_stationary", "polish", "hvp", "implicit_bias",
           "max_margin", "minimum_metrics", "top_eigenvalue", "train", "train_checkpoints"]
