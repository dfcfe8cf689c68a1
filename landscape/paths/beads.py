"""How DSS beads descend: level steps (Polyak's step, and the same step against a bead's last few
linearisations at once) or Adam, all beads of a round in one batched problem.

Polyak's step (*Introduction to Optimization*, 1987, §5.3) moves a bead to the nearest point where its
linearised loss meets an aim ℓ below its target: the projection onto the half-space
{y : L(x) + ∇L(x)·(y − x) ≤ ℓ}. In a narrow valley of the loss that half-space is tilted across the
valley, and successive steps zigzag from wall to wall: on the main job's pair the first bead travels
~18 times the distance it ends up from where it started, in ~570 steps. The level method of Lemaréchal,
Nemirovskii & Nesterov ("New variants of bundle methods", *Math. Programming* 69, 1995) projects instead
onto the intersection of the half-spaces of several linearisations, the level set of a cutting-plane
model of the loss; two cuts from opposite walls of a valley pin its floor. Here each bead keeps its last
``cuts`` linearisations (a bundle of fixed size, oldest dropped first) and steps to the nearest point of
their intersection (a quadratic programme in ``cuts`` unknowns, solved exactly by non-negative least
squares); with one cut it is Polyak's step. The loss is not convex, so the cuts are only a model: a
model with no point within a step's reach (cuts that contradict each other, as where the target lies
below what the loss reaches nearby) is dropped down to its newest cut, and that bead takes Polyak's steps
for the rest of its descent. On networks of a few dozen parameters the model's steps reach farther
sideways than Polyak's and strings come out a few percent longer (docs/guide/connect.md, "How beads descend").
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._errors import NonFiniteLoss
from .._random import resolve_generator
from .._registry import Registry
from ..minima.optim import RowOptimizer
from ._common import Counted, scaled_lr

#: A bead is making progress while its loss sets a new low by this fraction within ``patience`` steps.
PROGRESS = 0.01

#: How a bead descends: level steps toward a loss under its target (Polyak's, with ``cuts``), or Adam.
DESCENTS = Registry("descent", ("polyak", "adam"))

#: Linearisations a bead's level step satisfies at once by default (1: Polyak's step).
CUTS = 10

#: The most memory the cuts of a round's descending beads take (bytes): fewer cuts a bead where they would not fit.
CUT_BYTES = 2**30

#: A projection that leaves a cut farther than this fraction of the newest cut's distance unmet means the cuts
#: have no common point (it is exact to rounding where they have).
MISSED = 1e-3


class Cuts:
    """The last ``size`` linearisations of each of ``n`` beads' losses, and the level step they define.

    A cut of bead i, made at a point x_j where its loss was L_j with gradient g_j, is the half-space
    {y : L_j + g_j·(y − x_j) ≤ ℓ}. Each is kept as its unit normal n_j = g_j/‖g_j‖ and its signed
    distance r_j = (L_j − ℓ + g_j·(x − x_j))/‖g_j‖ from the bead's current point x (updated as the bead
    moves, so that no large ‖x‖ enters the differences), with the Gram matrix of the normals.
    """

    def __init__(self, n: int, dim: int, size: int, like: torch.Tensor):
        self.size = size
        self.normals = like.new_zeros(n, size, dim)
        self.distances = torch.zeros(n, size, dtype=torch.float64)
        self.gram = torch.zeros(n, size, size, dtype=torch.float64)
        self.held = torch.zeros(n, dtype=torch.long)
        self.single = torch.zeros(n, dtype=torch.bool)  # beads whose model failed once: Polyak's step from then on
        self.dropped = 0  # models dropped to their newest cut

    def step(self, rows: torch.Tensor, value: torch.Tensor, grad: torch.Tensor, aim: float,
             cap: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
        """Add each bead's cut at its current point and return the move (to subtract) to the nearest point
        of its cuts' intersection, no longer than ``cap``.

        rows : (B,) beads; value : (B,) losses; grad : (B, D); cap, limit : (B, 1). A model whose cuts have no
        common point (its projection misses one of them by more than :data:`MISSED` of the newest cut's
        distance) or whose step would be longer than ``limit`` is dropped to its newest cut, and the bead takes
        Polyak's steps from then on (this happens where the target lies below what the loss reaches nearby,
        and the cuts aim at a point that is not there); the step is then shortened to ``cap``.
        """
        # the normals and the move live on the device; the bookkeeping (counts, distances, Gram matrices) on the CPU
        dev = grad.device
        norm = grad.norm(dim=1, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
        unit = grad / norm
        every = rows.numel() == self.held.numel()  # rows are always sorted: then they are every bead
        normals = self.normals if every else self.normals[rows]  # (B, size, D): one copy at most
        rows_cpu, at = rows.cpu(), torch.arange(rows.numel())
        self.held[rows_cpu[self.single[rows_cpu]]] = 0  # a bead whose model failed keeps one cut: Polyak's step
        slot_cpu = self.held[rows_cpu] % self.size
        slot = slot_cpu.to(dev)
        normals[at.to(dev), slot] = unit
        if not every:
            self.normals[rows, slot] = unit
        distances, gram = self.distances[rows_cpu], self.gram[rows_cpu]  # (B, size), (B, size, size)
        distances[at, slot_cpu] = ((value - aim).double() / norm[:, 0].double()).cpu()
        cos = _dots(normals, unit).double().cpu()
        gram[at, slot_cpu], gram[at, :, slot_cpu] = cos, cos
        self.held[rows_cpu] += 1
        held = self.held[rows_cpu].clamp(max=self.size)
        weights = torch.stack([_nearest(gram[i], distances[i], int(held[i]), s)
                               for i, s in enumerate(slot_cpu.tolist())])
        move = torch.bmm(weights.to(dev, grad.dtype)[:, None, :], normals)[:, 0]
        length = move.norm(dim=1, keepdim=True)
        # where the cuts have no common point, the projection misses some of them: the model is wrong here
        past = distances - _dots(normals, move).double().cpu()
        past = past.masked_fill(torch.arange(self.size)[None] >= held[:, None], -math.inf)
        missed = past.max(1).values > MISSED * distances[at, slot_cpu]
        far = ((length > limit)[:, 0].cpu() | missed) & (held > 1)
        if far.any():  # contradicting cuts, or a model too far from here: keep the newest only, Polyak's step
            self.dropped += int(far.sum())
            far_dev = far.to(dev)
            newest = distances[at[far], slot_cpu[far]].clamp_min(0)
            move[far_dev] = unit[far_dev] * newest.to(dev, unit.dtype)[:, None]
            for i in at[far].tolist():
                normals[i, 0], distances[i, 0] = unit[i], distances[i, slot_cpu[i]]
                gram[i].zero_()
                gram[i, 0, 0] = 1.0
            self.held[rows_cpu[far]] = 1
            self.single[rows_cpu[far]] = True
            if not every:
                self.normals[rows[far_dev], 0] = unit[far_dev]
            length = move.norm(dim=1, keepdim=True)
        move = move * (cap / length.clamp_min(torch.finfo(move.dtype).tiny)).clamp(max=1)
        distances -= _dots(normals, move).double().cpu()
        self.distances[rows_cpu], self.gram[rows_cpu] = distances, gram
        return move


def _dots(normals: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``normals[b] @ v[b]`` for each row b: shape (B, size). On the CPU one matrix-vector product a row: a
    batched product with one column (``bmm``) measured 6–9× slower there for 4–16 rows of 10 × 17,010."""
    if normals.is_cuda or normals.shape[0] == 1:
        return torch.bmm(normals, v[:, :, None])[:, :, 0]
    return torch.stack([n @ x for n, x in zip(normals, v)])


def _nearest(gram: torch.Tensor, distances: torch.Tensor, held: int, newest: int) -> torch.Tensor:
    """Weights λ ≥ 0 of the nearest point of ∩ {y : n_j·y ≤ n_j·x − r_j}: x − Σ λ_j n_j, where λ minimises
    ½λᵀGλ − λᵀr over λ ≥ 0 (the dual of the projection; G the Gram matrix of the unit normals).

    Solved as non-negative least squares on G's Cholesky factor (Lawson & Hanson's active set: exact), with a
    small ridge where rounding leaves G singular, and the newest cut alone where even that fails.
    """
    from scipy.linalg import solve_triangular
    from scipy.optimize import nnls

    out = torch.zeros(gram.shape[0], dtype=torch.float64)
    r = distances.numpy()[:held]
    if held == 1 or r.max() <= 0:
        out[newest] = max(float(distances[newest]), 0.0)
        return out
    g = gram.numpy()[:held, :held]
    for ridge in (0.0, 1e-9, 1e-6):  # normals computed in float32 can be dependent to rounding
        try:
            factor = np.linalg.cholesky(g + ridge * np.eye(held))
            break
        except np.linalg.LinAlgError:
            continue
    else:
        out[newest] = max(float(distances[newest]), 0.0)
        return out
    weights, _ = nnls(factor.T, solve_triangular(factor, r, lower=True), maxiter=50 * held)
    out[:held] = torch.from_numpy(weights)
    return out


def descend(counted: Counted, chain: torch.Tensor, rows: torch.Tensor, centre: torch.Tensor, target: float, *,
            steps: int, patience: int | None = None, descent: str = "polyak", aim: float = 0.5,
            max_step: float = 0.25, step_size: float = 0.01, lr: float | None = None, penalty: float = 0.0,
            bisector: bool = False, batch_size: int | None = None, cuts: int = CUTS,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Descend the beads ``chain[rows]`` together until each one's loss is ≤ ``target`` or ``steps`` run out.

    One batched ``loss_and_grad`` per step over the beads still above the target. Each bead has its
    own step: a level step (``descent="polyak"``) toward ``aim``·target against its last ``cuts``
    linearisations (:class:`Cuts`; one: Polyak's step), at most ``max_step`` of the distance between its
    neighbours and half its last reach after a step that raised its loss (so that a bead whose aim lies
    below what the loss can reach settles), or Adam's (own state, learning rate scaled to its segment); and
    its own constraint centre (``centre``, shape (len(rows), D): where it was inserted) at a scale set
    by its two neighbours. A bead stops early once its loss has set no new low by 1% (``PROGRESS``) for
    ``patience`` steps (None: never); one that stops above the target stays at the lowest point it reached.

    Returns
    -------
    beads : Tensor, shape (len(rows), D)
    figures : dict
        ``descent_steps`` (batched steps taken) and ``reached`` (beads at or below the target); for level steps
        with more than one cut, ``models_dropped`` (steps that fell back to Polyak's) and ``cuts`` where
        :data:`CUT_BYTES` held fewer than asked.
    """
    generator = resolve_generator(generator)
    left, right = chain[rows - 1], chain[rows + 1]
    span = (right - left).norm(dim=1, keepdim=True)
    half2 = (span / 2).pow(2).clamp_min(torch.finfo(chain.dtype).tiny)
    x = chain[rows].clone()
    normal = None
    if bisector:  # move within the hyperplane through the bead, orthogonal to its chord
        normal = (right - left) / span.clamp_min(torch.finfo(x.dtype).tiny)
    n_samples = counted.problem.n_samples("train")
    stochastic = batch_size is not None and 0 < batch_size < n_samples
    polyak = descent == "polyak"
    if polyak:
        aimed = target - (1 - aim) * abs(target)
        reach = max_step * span  # each bead's longest step: halved when a step raised its loss
        last = torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
        # minibatches are not one function, so their linearisations are not cuts of one; and the store is bounded
        size = 1 if stochastic else max(1, min(cuts, CUT_BYTES // (x.shape[0] * x.shape[1] * x.element_size())))
        model = Cuts(x.shape[0], x.shape[1], size, x)
    else:
        rates = (torch.full((x.shape[0],), float(lr), dtype=x.dtype, device=x.device) if lr is not None
                 else scaled_lr(span[:, 0], x.shape[1], step_size))
        adam = RowOptimizer(x, rates)
    best, lowest = x.clone(), torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
    mark, since = lowest.clone(), torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    patience = steps + 1 if patience is None else patience
    active = torch.arange(x.shape[0], device=x.device)
    taken = 0
    for _ in range(steps + 1):
        if stochastic:  # the stop is judged on the full loss, the step on one minibatch per bead
            loss = counted.loss(x[active])
            idx = torch.randint(n_samples, (active.numel(), batch_size), generator=generator)
            value, grad = counted.loss_and_grad(x[active], batch=idx)
        else:
            loss, grad = counted.loss_and_grad(x[active])
            value = loss
        if not torch.isfinite(loss).all():
            raise NonFiniteLoss("the loss became NaN or infinite while a bead descended; lower the step size "
                                 "(option step_size, or max_step for Polyak steps) or set a learning rate (option lr)")
        lower = loss < lowest[active]
        best[active[lower]], lowest[active[lower]] = x[active[lower]], loss[lower]
        # a new low that closes 1% of its last low's gap to the target (or the first loss)
        better = ~(loss >= mark[active] - PROGRESS * (mark[active] - target))
        mark[active[better]] = loss[better]
        since[active] = torch.where(better, 0, since[active] + 1)
        going = (loss > target) & (since[active] < patience)
        active, grad, value = active[going], grad[going], value[going]
        if active.numel() == 0 or taken == steps:
            break
        if penalty:
            pull = (x[active] - centre[active]) / half2[active]
            value = value + penalty * (pull * (x[active] - centre[active])).sum(1)
            grad = grad + 2 * penalty * pull
        if polyak:
            rose = loss[going] > last[active]
            reach[active] = torch.where(rose[:, None], reach[active] / 2, torch.minimum(reach[active] * 1.5,
                                                                                        max_step * span[active]))
            last[active] = loss[going]
            if normal is not None:  # the step stays in the bead's hyperplane: so do its cuts
                grad = grad - (grad * normal[active]).sum(1, keepdim=True) * normal[active]
            x[active] -= model.step(active, value, grad, aimed, reach[active], max_step * span[active])
        else:
            adam.step(x, grad, active, None if normal is None else normal[active])
        taken += 1
    figures = {"descent_steps": taken, "reached": int((lowest <= target).sum())}
    if polyak and model.size > 1:  # how often the model fell back to Polyak's step, and its size if not cuts
        figures |= {"models_dropped": model.dropped} | ({"cuts": model.size} if model.size < cuts else {})
    return best, figures

