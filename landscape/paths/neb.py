"""Nudged elastic band with improved tangents, a climbing image, and AutoNEB pivot insertion.

- Henkelman & Jónsson, "Improved tangent estimate in the nudged elastic band method for finding
  minimum energy paths and saddle points", J. Chem. Phys. 113, 9978 (2000): the tangent of a pivot
  points to its higher neighbour (an energy-weighted mix at extrema), which removes kinks.
- Henkelman, Uberuaga & Jónsson, J. Chem. Phys. 113, 9901 (2000): the climbing image, the highest
  pivot, feels the gradient with its tangential part inverted and no spring, and climbs to the saddle.
- Draxler, Veschgini, Salmhofer & Hamprecht, "Essentially No Barriers in Neural Network Energy
  Landscape", ICML 2018 (AutoNEB): cycles of NEB, each followed by new pivots where the loss between
  two pivots deviates most from their linear interpolation.

All pivots move together: one batched ``loss_and_grad`` per step.
"""

from __future__ import annotations

import torch

from .._errors import NonFiniteLoss
from .._random import resolve_generator
from ..minima.optim import RowOptimizer
from ._common import Endpoints, check_count, check_positive, noise, scaled_lr
from .certify import DEFAULT_RESOLUTION
from .path import Path


def neb(ends: Endpoints, *, generator=None, pivots: int = 3, cycles: int = 12, steps: int = 100,
        spring: float = 1.0, climb: bool = True, insert: int = 2, insert_tol: float = 0.05, max_pivots: int = 64,
        converge: float = 1e-3, saddle: bool = False,
        step_size: float = 0.01, lr: float | None = None, jitter: float = 1e-3,
        resolution: int = DEFAULT_RESOLUTION) -> Path:
    """AutoNEB: a nudged elastic band refined by pivot insertion (Draxler et al. 2018).

    Parameters
    ----------
    ends : Endpoints
        The endpoints, their losses and the level u, as :func:`landscape.connect` checked them.
        Segments above u get new pivots. The band relaxes to a minimum-energy path whatever the level (its max estimates the barrier).
    generator : torch.Generator, optional
        Draws the initial pivots' small offsets from the straight segment. Seeded 0 when None (``landscape._random``).
    pivots : int
        Initial interior pivots, evenly spaced on the straight segment.
    cycles, steps : int
        AutoNEB cycles at most, and NEB steps (Adam on the NEB force) per cycle. A band that is below u or
        has converged stops sooner (``converge``); on the digits main pair the band comes below the default
        level in its 11th cycle.
    spring : float
        Spring constant in units of (u − the lower endpoint loss) / ℓ², ℓ the mean pivot spacing:
        a spacing error of ℓ pulls as hard as a loss rising by that much over ℓ.
    climb : bool
        From the second cycle on, the highest pivot climbs to the saddle (the band's max then
        estimates the barrier; Henkelman, Uberuaga & Jónsson 2000).
    insert, insert_tol : int, float
        After each cycle, up to ``insert`` new pivots go where the dense loss between two pivots rises
        most above their linear interpolation, if by more than ``insert_tol``·(u − the lower
        endpoint loss), or where a segment exceeds u.
    max_pivots : int
        Bound on the interior pivots.
    converge : float
        Cycles stop (``info["stop"]``) once no pivot is to be inserted and either the relaxed band is
        below u (``"below_level"``) or, over the last cycle, its max loss moved by less than
        ``converge``·(u − the lower endpoint loss) and its length by less than ``converge`` of itself
        (``"converged"``); else after ``cycles`` (``"cycles"``).
    saddle : bool
        Go on relaxing once the band is below u, so that the climbing pivot reaches the saddle and the
        band's max estimates the barrier (what a merge tree asks); by default a band below u stops.
    step_size, lr : float
        Adam's learning rate, as a fraction of the pivot spacing (scaled like DSS) or fixed.
    jitter : float
        Offset of the initial pivots, relative to the spacing.
    resolution : int
        Sub-intervals per segment in the dense check after each cycle.

    Returns
    -------
    Path
        The band; ``info``: per cycle the pivots, max loss and insertions, ``climbing`` (index of the
        climbing pivot, or None), ``stop``, evaluation counts.
    """
    counted, start, end, level = ends.problem, ends.start, ends.end, ends.level
    la, lb = ends.loss_start, ends.loss_end
    check_count(pivots=pivots, cycles=cycles, steps=steps, insert=insert, max_pivots=max_pivots)
    check_positive(spring=spring, step_size=step_size, lr=lr, jitter=jitter, insert_tol=insert_tol, converge=converge)
    gen = resolve_generator(generator)
    dim = start.shape[0]
    scale = max(level - min(la, lb), 1e-12)
    s = torch.linspace(0, 1, pivots + 2, dtype=start.dtype, device=start.device)[:, None]
    band = (1 - s) * start + s * end
    spacing = (end - start).norm() / (pivots + 1)
    band[1:-1] += noise((pivots, dim), gen, band) * (jitter * spacing / dim**0.5)
    history, stop, climber, previous = [], "cycles", None, None
    for cycle in range(cycles + 1):
        seg = counted.segments(band, resolution)
        values = torch.cat([seg[:, 0], seg[-1:, -1]])
        peak, length = float(seg.max()), float((band[1:] - band[:-1]).norm(dim=1).sum())
        row = {"cycle": cycle, "pivots": int(band.shape[0] - 2), "max_loss": peak, "length": length}
        history.append(row)
        new = _insertions(seg, level, insert_tol * scale, insert if cycle < cycles else 0,
                          max_pivots - (band.shape[0] - 2))
        if cycle > 0 and not new and peak <= level and not saddle:
            stop = "below_level"  # the relaxed band is under u and wants no pivot: the question is answered
            break
        if previous is not None and not new and abs(peak - previous[0]) <= converge * scale \
                and abs(length - previous[1]) <= converge * previous[1]:
            stop = "converged"
            break
        if cycle == cycles:
            break
        if new:
            band = _insert(band, seg, new, resolution)
            row["inserted"] = len(new)
        climber = _relax(counted, band, (la, lb), steps=steps, spring=spring, scale=scale,
                         climb=climb and cycle > 0, step_size=step_size, lr=lr)
        row["climbing"] = climber
        previous = (peak, length)
    info = {"cycles": history, "stop": stop, "climbing": climber, **counted.figures()}
    return Path(band, values.clone(), method="neb", level=level, evaluations=counted.evaluations, info=info)


def _insertions(seg: torch.Tensor, level: float, tol: float, most: int, room: int) -> list[tuple[int, int]]:
    """(segment, sub-point) pairs where new pivots go: the largest rise above the pivots' chord first."""
    most = min(most, room)
    if most <= 0:
        return []
    r = seg.shape[1] - 1
    s = torch.arange(r + 1, dtype=seg.dtype, device=seg.device) / r
    chord = seg[:, :1] * (1 - s) + seg[:, -1:] * s
    rise = seg - chord
    best, where = rise.max(1)
    over = seg.max(1).values > level
    wanted = (best > tol) | over
    order = torch.argsort(torch.where(over, best + float("inf"), best), descending=True)
    picks = [int(i) for i in order if wanted[i]][:most]
    out = []
    for i in picks:
        j = int(where[i]) if 0 < int(where[i]) < r else r // 2
        out.append((i, j))
    return sorted(out)


def _insert(band: torch.Tensor, seg: torch.Tensor, picks, resolution: int) -> torch.Tensor:
    rows = []
    picked = dict(picks)
    for i in range(band.shape[0]):
        rows.append(band[i])
        if i in picked:
            f = picked[i] / resolution
            rows.append((1 - f) * band[i] + f * band[i + 1])
    return torch.stack(rows)


def _relax(counted, band: torch.Tensor, ends: tuple[float, float], *, steps: int, spring: float, scale: float,
           climb: bool, step_size: float, lr: float | None) -> int | None:
    """``steps`` NEB steps on the interior pivots of ``band`` (in place); returns the climbing pivot's index."""
    n = band.shape[0]
    inner = band[1:-1].clone()
    length = (band[1:] - band[:-1]).norm(dim=1).sum()
    ell = float(length) / (n - 1)
    k = spring * scale / max(ell, 1e-30) ** 2
    rates = (torch.full((n - 2,), float(lr), dtype=band.dtype, device=band.device) if lr is not None
             else scaled_lr(torch.full((n - 2,), ell, dtype=band.dtype, device=band.device), band.shape[1],
                            step_size))
    adam = RowOptimizer(inner, rates)
    climber = None
    for _ in range(steps):
        full = torch.cat([band[:1], inner, band[-1:]])
        loss, grad = counted.loss_and_grad(inner)
        if not torch.isfinite(loss).all():
            raise NonFiniteLoss("the loss became NaN or infinite in the elastic band; lower the step size "
                                 "(option step_size)")
        e = torch.cat([loss.new_tensor([ends[0]]), loss, loss.new_tensor([ends[1]])])
        tau = improved_tangents(full, e)
        along = (grad * tau).sum(1, keepdim=True)
        d_next = (full[2:] - full[1:-1]).norm(dim=1, keepdim=True)
        d_prev = (full[1:-1] - full[:-2]).norm(dim=1, keepdim=True)
        force = grad - along * tau - k * (d_next - d_prev) * tau  # descent direction: perpendicular + spring
        if climb:
            climber = int(loss.argmax()) + 1
            force[climber - 1] = grad[climber - 1] - 2 * along[climber - 1] * tau[climber - 1]
        adam.step(inner, force)
    band[1:-1] = inner
    return climber


def improved_tangents(band: torch.Tensor, energies: torch.Tensor) -> torch.Tensor:
    """Unit tangents at the interior pivots (Henkelman & Jónsson 2000), shape (N − 2, D).

    Towards the higher neighbour when the pivot lies between its neighbours in energy; at a local
    extremum, both directions mixed with weights ΔV_max (towards the higher neighbour) and ΔV_min.
    """
    plus = band[2:] - band[1:-1]
    minus = band[1:-1] - band[:-2]
    e_prev, e, e_next = energies[:-2], energies[1:-1], energies[2:]
    up = (e_next > e) & (e > e_prev)
    down = (e_next < e) & (e < e_prev)
    dv_max = torch.maximum((e_next - e).abs(), (e_prev - e).abs())[:, None]
    dv_min = torch.minimum((e_next - e).abs(), (e_prev - e).abs())[:, None]
    mixed = torch.where((e_next > e_prev)[:, None], plus * dv_max + minus * dv_min, plus * dv_min + minus * dv_max)
    tau = torch.where(up[:, None], plus, torch.where(down[:, None], minus, mixed))
    norm = tau.norm(dim=1, keepdim=True)
    fallback = (plus + minus) / (plus + minus).norm(dim=1, keepdim=True).clamp_min(1e-30)
    return torch.where(norm > 0, tau / norm.clamp_min(1e-30), fallback)
