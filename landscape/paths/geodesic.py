"""The normalized geodesic length of level sets against the loss level (Freeman & Bruna, ICLR 2017, Fig. 3).

For each level L0: minima are trained until their loss first drops to L0 (all seeds one batched
problem), consecutive seeds are paired, each pair is connected at level ``level_factor · L0``,
and the lengths of the certified paths over their chords are summarised. Freeman & Bruna find
that the length grows as L0 falls: the level sets stay connected but become more curved.

With ``train_to`` the minima are trained once, to that loss, and the same pairs are connected at
every level. Then the comparison is one of nested sets: {L ≤ u'} ⊂ {L ≤ u} for u' < u, so the
shortest path between fixed endpoints can only get longer as the level falls.
"""

from __future__ import annotations

import statistics
import time

import torch

from .._errors import LandscapeError
from ..problems.problem import Problem
from ..minima.train import train


def geodesic_lengths(problem: Problem, levels, *, pairs: int = 4, first_pair: int = 0, method: str = "string",
                     level_factor: float = 1.0, train_to: float | None = None, optimizer: str = "adam",
                     lr: float = 0.005, steps: int = 50000, dtype: torch.dtype = torch.float64, device="cpu",
                     options: dict | None = None) -> list[dict]:
    """Mean normalized geodesic length of certified paths between minima trained to each level.

    Parameters
    ----------
    problem : Problem
    levels : sequence of float
        The levels L0 (e.g. 0.05, 0.025, 0.01 for the quadratic regression).
    pairs : int
        Pairs of minima per level; seeds 0 … 2·pairs − 1, paired (0, 1), (2, 3), …; the same seeds
        at every level, so a level's minima lie on the same training trajectories as another's.
    first_pair : int
        Start at pair k instead (seeds 2k, 2k + 1, …), so that a sweep can run its pairs apart;
        pair k's path is the same whichever call computes it.
    method : str
        Path method (a key of ``landscape.METHODS``).
    level_factor : float
        Paths are certified at u = level_factor · L0 (1: the level set the minima were trained to).
    train_to : float, optional
        Train the minima once, to this loss, and connect the same pairs at every level (which
        should then lie above it), instead of training new minima to each L0.
    optimizer, lr, steps, dtype, device
        Training of the minima (:func:`landscape.train` with ``until_loss=L0``).
    options : dict, optional
        Passed to :func:`landscape.connect`: the method's options and ``resolution``
        (``{"step_size": 0.05}``; kept apart from the training options above, since DSS has an
        ``lr`` too).

    Returns
    -------
    list of dict
        One row per level: ``level``, ``pairs`` (both minima reached L0), ``connected``,
        ``normalized_length`` (mean over connected pairs) with ``normalized_length_std``, ``_min``,
        ``_max``, ``lengths`` (every connected pair's), ``beads`` (mean), ``evaluations`` (total),
        ``chord`` (mean distance between the minima), ``max_losses`` and ``linear_max_losses`` (every
        pair's path and straight segment), ``train_seconds`` and ``seconds`` (connecting).
    """
    from .connect import connect

    if pairs < 1 or first_pair < 0:
        raise LandscapeError(f"pairs must be >= 1 and first_pair >= 0, got pairs={pairs}, first_pair={first_pair}")
    levels = [float(v) for v in levels]

    def minima_at(level):
        began = time.perf_counter()
        seeds = range(2 * first_pair, 2 * (first_pair + pairs))
        found = train(problem, seeds, optimizer=optimizer, lr=lr, steps=steps, until_loss=level, dtype=dtype,
                      device=device, record_every=steps, max_records=2)
        return found, time.perf_counter() - began

    fixed = minima_at(train_to) if train_to is not None else None
    rows = []
    for level in levels:
        minima, trained = fixed if fixed is not None else minima_at(level)
        began = time.perf_counter()
        paths = []
        for i in range(pairs):
            if not (minima.reached_target[2 * i] and minima.reached_target[2 * i + 1]):
                continue
            a, b = (minima.thetas[j].to(device) for j in (2 * i, 2 * i + 1))
            paths.append(connect(problem, a, b, method=method, level=level_factor * level,
                                 generator=torch.Generator().manual_seed(first_pair + i), **(options or {})))
        good = [p for p in paths if p.status == "connected"]
        lengths = [p.normalized_length for p in good]
        rows.append({
            "level": level, "pairs": len(paths), "connected": len(good),
            "normalized_length": statistics.fmean(lengths) if lengths else float("nan"),
            "normalized_length_std": statistics.stdev(lengths) if len(lengths) > 1 else 0.0,
            "normalized_length_min": min(lengths, default=float("nan")),
            "normalized_length_max": max(lengths, default=float("nan")),
            "lengths": lengths, "beads": statistics.fmean([p.n_beads for p in good]) if good else float("nan"),
            "evaluations": sum(p.evaluations for p in paths),
            "chord": statistics.fmean([p.chord for p in paths]) if paths else float("nan"),
            "max_losses": [p.max_loss for p in paths], "linear_max_losses": [p.info["linear_max_loss"] for p in paths],
            "train_seconds": trained if fixed is None or level == levels[0] else 0.0,
            "seconds": time.perf_counter() - began,
        })
    return rows
