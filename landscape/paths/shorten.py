"""Shortening a path that is below a level while it stays below it.

A path below u is an upper bound on the geodesic of its valley; how tight depends on where the method
left its beads (a DSS bead stops wherever its descent first crossed α·u, NEB pivots sit on the
minimum-energy path, not the shortest one). :func:`shorten` takes the path as found and, round after
round while its length falls by more than ``tol``:

1. **Shortcuts.** A bead whose two neighbours see each other below the target is dropped: every
   candidate segment is checked in one batched evaluation, and non-adjacent beads go together, the
   largest saving first.
2. **Pulls.** Every other bead moves toward the midpoint of its neighbours (an elastic band at rest
   is straight), by the largest of 1, ½, ¼, ⅛ of the way for which the bead and both its segments
   stay below the target; odd and even beads alternate, so no two moving beads share a segment.
   Moving a point toward the midpoint of two fixed points never lengthens the two segments (their
   summed length is convex along the move and least at the midpoint), so the path never grows.

Every move is checked densely (``resolution`` sub-intervals a segment) against a target a little
under u: ``margin`` of the gap between u and the worse endpoint, so that the certificate that follows
(:func:`landscape.certify`, a proof where the problem allows one) has room. All beads of a round are
one batched evaluation.
"""

from __future__ import annotations

import math

import torch

from ._common import Counted, polyak_step

#: Fractions of the way to the neighbours' midpoint a pulled bead tries, largest first.
FRACTIONS = (1.0, 0.5, 0.25, 0.125)


def shorten(counted: Counted, points: torch.Tensor, level: float, floor: float, *, rounds: int = 30,
            resolution: int = 8, margin: float = 0.1, tol: float = 1e-3) -> tuple[torch.Tensor, dict]:
    """Shorten the polyline ``points`` while every segment stays below ``level``.

    Parameters
    ----------
    counted : Counted
        The problem, counting its evaluations.
    points : Tensor, shape (N, D)
        Knots of a path below ``level``; the endpoints stay where they are.
    level : float
        The level u.
    floor : float
        The worse endpoint loss; the moves are checked against u − margin·(u − floor).
    rounds : int
        Most rounds of shortcuts and pulls.
    resolution : int
        Sub-intervals per segment in the checks of a move.
    tol : float
        A round that shortens the path by less than this fraction of its length is the last.

    Returns
    -------
    points : Tensor, shape (M, D), M ≤ N
    info : dict
        ``length_before``, ``length_after``, ``rounds``, ``dropped`` (beads removed), ``moves``
        (pulls accepted), ``target``.
    """
    target = level - margin * max(level - floor, 0.0)
    before = _length(points)
    dropped = moves = done = 0
    for done in range(1, rounds + 1):
        start = _length(points)
        points, cut = _shortcuts(counted, points, target, resolution)
        dropped += cut
        for parity in (1, 2):
            points, moved = _pull(counted, points, parity, target, resolution)
            moves += moved
        if start - _length(points) <= tol * start:
            break
    return points, {"length_before": before, "length_after": _length(points), "rounds": done,
                    "dropped": dropped, "moves": moves, "target": target}


def _length(points: torch.Tensor) -> float:
    return float((points[1:] - points[:-1]).norm(dim=1).sum())


def _below(counted: Counted, starts: torch.Tensor, ends: torch.Tensor, target: float, resolution: int) -> torch.Tensor:
    """Whether each segment ``starts[k] → ends[k]`` stays ≤ target at its ``resolution − 1`` inner points."""
    s = torch.arange(1, resolution, dtype=starts.dtype, device=starts.device) / resolution
    inner = starts[:, None, :] + s[None, :, None] * (ends - starts)[:, None, :]
    losses = counted.loss(inner.reshape(-1, starts.shape[1])).reshape(starts.shape[0], -1)
    return (losses <= target).all(1)  # NaN is not below


def _shortcuts(counted: Counted, points: torch.Tensor, target: float, resolution: int
               ) -> tuple[torch.Tensor, int]:
    n = points.shape[0]
    if n < 3:
        return points, 0
    inner = torch.arange(1, n - 1, device=points.device)
    ok = _below(counted, points[inner - 1], points[inner + 1], target, resolution)
    if not ok.any():
        return points, 0
    seg = (points[1:] - points[:-1]).norm(dim=1)
    saving = seg[inner - 1] + seg[inner] - (points[inner + 1] - points[inner - 1]).norm(dim=1)
    chosen: set[int] = set()
    for k in torch.argsort(saving, descending=True).tolist():
        i = int(inner[k])
        if ok[k] and i - 1 not in chosen and i + 1 not in chosen:
            chosen.add(i)
    keep = [i for i in range(n) if i not in chosen]
    return points[keep], len(chosen)


def _pull(counted: Counted, points: torch.Tensor, parity: int, target: float, resolution: int,
          project: int = 3) -> tuple[torch.Tensor, int]:
    idx = torch.arange(parity, points.shape[0] - 1, 2, device=points.device)
    if idx.numel() == 0:
        return points, 0
    left, right, here = points[idx - 1], points[idx + 1], points[idx]
    middle = (left + right) / 2
    fractions = torch.tensor(FRACTIONS, dtype=points.dtype, device=points.device)
    plain = here[:, None, :] + fractions[None, :, None] * (middle - here)[:, None, :]  # [B, F, D]
    projected = _project(counted, middle, right - left, target, project)  # the midpoint, pushed back below u
    candidates = torch.cat([projected[:, None, :], plain], 1)  # [B, 1 + F, D], best first
    losses = counted.loss(candidates.reshape(-1, points.shape[1])).reshape(idx.numel(), -1)
    span = lambda c: (c - left[:, None, :]).norm(dim=-1) + (right[:, None, :] - c).norm(dim=-1)  # noqa: E731
    fine = (losses <= target) & (span(candidates) < span(here[:, None, :]))  # below, and shorter
    has = fine.any(1)
    if not has.any():
        return points, 0
    first = fine.to(torch.int8).argmax(1)
    rows = torch.nonzero(has).flatten()
    moved = candidates[rows, first[rows]]
    both = _below(counted, torch.cat([left[rows], moved]), torch.cat([moved, right[rows]]), target, resolution)
    ok = both[: rows.numel()] & both[rows.numel():]  # one batched check of both segments of every bead
    out = points.clone()
    out[idx[rows[ok]]] = moved[ok]
    return out, int(ok.sum())


def _project(counted: Counted, x: torch.Tensor, chord: torch.Tensor, target: float, steps: int) -> torch.Tensor:
    """Push points back under ``target`` across their chords: Polyak steps x ← x − (L − t)/‖g⊥‖² g⊥, with g⊥
    the gradient without its component along the chord (the bead slides toward the valley, not along it)."""
    unit = chord / chord.norm(dim=1, keepdim=True).clamp_min(1e-30)
    aim = target - 0.05 * abs(target)  # a little under: the segments on both sides bulge above the bead
    for _ in range(steps):
        loss, grad = counted.loss_and_grad(x)
        above = loss > aim
        if not above.any():
            break
        step = polyak_step(loss, grad, aim, torch.full_like(loss[:, None], math.inf), unit)
        x = torch.where(above[:, None], x - step, x)
    return x
