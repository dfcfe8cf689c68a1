"""One row-wise optimiser: B independent optimisers over the rows of a [B, D] tensor, stepped together.

Training (:func:`landscape.train`: one row per seed) and the path methods (string beads, NEB pivots,
curve control points) all descend many points at once, each with its own learning rate, and stop
some of them early. :class:`RowOptimizer` holds one state per row; :meth:`RowOptimizer.step` moves
only the rows chosen. The update rules are small functions in :data:`OPTIMIZERS`.

``decay=w`` adds decoupled weight decay (Loshchilov & Hutter, ICLR 2019): θ ← θ − lr·(update + w·θ), the
update of the rule taken at the same point; with Adam this is AdamW (``torch.optim.AdamW``'s iterates), the
optimiser of the grokking papers. It is not a term of the loss: the loss, and so what is a minimum, is unchanged.
"""

from __future__ import annotations

import torch

from .._errors import LandscapeError
from .._registry import Registry


def adam(opt: RowOptimizer, grad: torch.Tensor, rows) -> torch.Tensor:
    """Adam (Kingma & Ba, ICLR 2015): the update of ``rows``, bias-corrected per row's own step count."""
    b1, b2 = opt.betas
    opt.t[rows] += 1
    m = b1 * opt.m[rows] + (1 - b1) * grad
    v = b2 * opt.v[rows] + (1 - b2) * grad * grad
    opt.m[rows], opt.v[rows] = m, v
    t = opt.t[rows]
    return opt.lr[rows] * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + opt.eps)


def gd(opt: RowOptimizer, grad: torch.Tensor, rows) -> torch.Tensor:
    """Gradient descent with heavy-ball momentum (Polyak 1964): m ← μ m + g, update lr · m."""
    m = opt.momentum * opt.m[rows] + grad
    opt.m[rows] = m
    return opt.lr[rows] * m


#: Update rules by name; keys equal function names. ``rule(optimizer, grad, rows) -> update``.
OPTIMIZERS = Registry("optimizer", (adam, gd), shared=("opt", "grad", "rows"))


class RowOptimizer:
    """One optimiser per row of ``x`` [B, D], each row with its own learning rate; only chosen rows step.

    Equivalent to B independent optimisers stepped together: a row that does not step keeps its
    state (moments and step count) untouched.

    Parameters
    ----------
    x : Tensor, shape (B, D)
        The points; the state takes its dtype and device.
    lr : float or Tensor, shape (B,)
        Learning rate, one per row or one for all.
    method : str
        A key of :data:`OPTIMIZERS`: ``"adam"`` or ``"gd"``.
    momentum : float
        Heavy-ball momentum of ``"gd"``.
    betas, eps : Adam's moment decays and denominator floor.
    decay : float
        Decoupled weight decay w ≥ 0: each step also moves a row by −lr·w·θ (AdamW with ``"adam"``); 0: none.
    """

    def __init__(self, x: torch.Tensor, lr, *, method: str = "adam", momentum: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, decay: float = 0.0):
        self.rule = OPTIMIZERS.lookup(method)
        if not (decay >= 0 and decay < float("inf")):
            raise LandscapeError(f"decoupled weight decay must be a finite number >= 0, got {decay}")
        self.decay = float(decay)
        self.lr = torch.as_tensor(lr, dtype=x.dtype, device=x.device).expand(x.shape[0]).reshape(-1, 1)
        self.momentum, self.betas, self.eps = momentum, betas, eps
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x) if self.rule is adam else None
        self.t = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)

    def step(self, x: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor | None = None,
             normal: torch.Tensor | None = None) -> None:
        """Move ``x[rows]`` by one step, in place.

        Parameters
        ----------
        x : Tensor, shape (B, D)
        grad : Tensor, shape (R, D)
            One gradient per chosen row.
        rows : LongTensor, shape (R,), optional
            The rows that step (all B when None).
        normal : Tensor, shape (R, D), optional
            Unit rows: the update's component along each is removed, so that each row moves
            within the hyperplane orthogonal to its normal.
        """
        rows = slice(None) if rows is None else rows
        update = self.rule(self, grad, rows)
        if self.decay:
            update = update + self.decay * self.lr[rows] * x[rows]
        if normal is not None:
            update = update - (update * normal).sum(1, keepdim=True) * normal
        x[rows] = x[rows] - update


__all__ = ["OPTIMIZERS", "RowOptimizer", "adam", "gd"]
