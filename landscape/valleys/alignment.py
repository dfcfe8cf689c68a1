"""Moving a set of minima onto the lowest by their network's symmetry, one at a time, before the valley search."""

from __future__ import annotations

import time

import torch

from .._progress import Progress


def align_minima(problem, thetas: torch.Tensor, names: list[str], method: str, *, shown: Progress,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Align every minimum onto the lowest (:func:`landscape.align`), a minimum at a time, shown as ``aligning i/n``.

    Parameters
    ----------
    thetas : Tensor, shape (N, D)
    names : list of str
        One per minimum; the summary names the reference and the minima moved.
    method : str
        A key of ``landscape.ALIGNERS``.

    Returns
    -------
    thetas : Tensor, shape (N, D)
        The aligned minima (the reference unchanged).
    summary : dict
        ``method``, ``reference`` (name) and ``reference_index``, ``aligned`` (minima aligned onto it),
        ``moved`` (names of those the alignment changed), ``distance_before`` / ``distance_after`` (each
        minimum's distance to the reference, in order, the reference's 0), their means over the aligned
        minima, ``seconds``.
    """
    from ..symmetries.align import align as align_points

    start = time.perf_counter()
    best = int(problem.loss(thetas).argmin())
    shown.count(thetas.shape[0])
    out = thetas.clone()
    others = [i for i in range(thetas.shape[0]) if i != best]
    before, after = [0.0] * thetas.shape[0], [0.0] * thetas.shape[0]
    moved, onto = [], f"aligning ({method}) onto {names[best].rsplit('/', 1)[-1]}"
    for done, i in enumerate(others):
        shown.stage(onto, done, len(others))
        result = align_points(problem, thetas[best], thetas[i], method=method, generator=generator)
        out[i] = result.theta.to(thetas)
        before[i], after[i] = float(result.distance_before), float(result.distance_after)
        if not torch.equal(out[i], thetas[i]):
            moved.append(names[i])
    shown.stage(onto, len(others), len(others))
    mean = (lambda d: sum(d[i] for i in others) / len(others)) if others else (lambda d: 0.0)
    return out, {"method": method, "reference": names[best], "reference_index": best, "aligned": len(others),
                 "moved": moved, "distance_before": before, "distance_after": after,
                 "mean_distance_before": mean(before), "mean_distance_after": mean(after),
                 "seconds": time.perf_counter() - start}
