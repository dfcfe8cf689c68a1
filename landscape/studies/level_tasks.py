"""Study tasks about level sets: geodesic lengths of certified paths, and valley counts.

``geodesic_length`` measures one pair of minima of Freeman & Bruna's protocol at one level;
``count_valleys`` trains a set of minima and counts the valleys (and spurious valleys) of the
sublevel sets they see. Both are plain functions of JSON-able parameters (see ``landscape.studies.tasks``).
"""

from __future__ import annotations

import statistics

import torch

from .._errors import LandscapeError
from .._registry import Registry
from .task_params import REQUIRED, declares, task_problem

#: The two protocols of the geodesic-length study.
PROTOCOLS = Registry("protocol", ("trained_to_level", "fixed_minima"))

#: How the levels of ``count_valleys`` are scaled: from the best loss L* by a fraction of L*, or of
#: the way from L* up to the loss of the zero network.
LEVEL_SCALES = Registry("level_scale", ("best", "zero"))


@declares(problem=REQUIRED, level=REQUIRED, pair=0, protocol="trained_to_level", train_to=0.005, level_factor=1.0,
          method="string", optimizer="adam", lr=0.005, steps=50000, options={})
def geodesic_length(params: dict, *, device) -> dict:
    """Normalized geodesic length of one pair of minima at one level (Freeman & Bruna, ICLR 2017, Fig. 3).

    Runs :func:`landscape.geodesic_lengths` for pair ``pair`` (seeds 2·pair and 2·pair + 1) at level
    L0 = ``level``, the path certified at u = ``level_factor``·L0.

    Parameters (``params``)
    -----------------------
    problem : spec; level : float (L0); pair : int
    protocol : {"trained_to_level", "fixed_minima"}
        ``trained_to_level``: Freeman & Bruna's protocol, the minima trained until their loss first
        reaches L0 (new minima at each level). ``fixed_minima``: the minima trained once, to
        ``train_to``, and connected at every level: the level sets are nested, so the shortest path
        between fixed endpoints can only lengthen as the level falls.
    train_to : float
        The loss of the fixed minima (below every level).
    level_factor, method, optimizer, lr, steps : as for :func:`landscape.geodesic_lengths`
    options : dict
        Options of the path method (``{"alpha": 0.5}``).

    Figures
    -------
    reached (both minima reached their target), connected, normalized_length (None when not
    connected), beads, chord (distance between the minima), max_loss (the certified path's),
    linear_max_loss (the straight segment's) and linear_ratio (it over the level), evaluations,
    train_seconds, connect_seconds.
    """
    from ..paths.geodesic import geodesic_lengths

    protocol = params["protocol"]
    PROTOCOLS.lookup(protocol)
    level = float(params["level"])
    train_to = float(params["train_to"]) if protocol == "fixed_minima" else None
    if train_to is not None and train_to >= level:
        raise LandscapeError(f"fixed minima must be trained below the level: train_to={train_to:g} >= level={level:g}")
    options = params["options"] or {}
    if not isinstance(options, dict):
        raise LandscapeError(f"options must be a table of path-method options, got {options!r}")
    problem = task_problem(params["problem"])
    (row,) = geodesic_lengths(problem, [level], pairs=1, first_pair=int(params["pair"]), method=params["method"],
                              level_factor=float(params["level_factor"]), train_to=train_to,
                              optimizer=params["optimizer"], lr=float(params["lr"]), steps=int(params["steps"]),
                              device=device, options=options)
    reached = row["pairs"] == 1
    connected = row["connected"] == 1
    linear = row["linear_max_losses"][0] if reached else None
    return {
        "reached": reached,
        "connected": connected,
        "normalized_length": row["lengths"][0] if connected else None,
        "beads": row["beads"] if connected else None,
        "chord": row["chord"] if reached else None,
        "max_loss": row["max_losses"][0] if reached else None,
        "linear_max_loss": linear,
        "linear_ratio": linear / (float(params["level_factor"]) * level) if reached else None,
        "evaluations": row["evaluations"],
        "train_seconds": row["train_seconds"],
        "connect_seconds": row["seconds"],
    }


@declares(problem=REQUIRED, seeds=list(range(8)), optimizer="adam", lr=0.01, steps=3000, float64=True,
          levels=[0.01, 0.1], level_scale="zero", margin=0.01, method="string", attempts=2, tol=None, align="none",
          options={})
def count_valleys(params: dict, *, device) -> dict:
    """Valleys and spurious valleys of the sublevel sets seen by a set of trained minima.

    Trains one minimum per seed (one batched problem; seeds short of the stationarity criterion are
    polished by training and once more here; a seed that still is not a minimum is left out and listed
    in ``not_minima``, never counted as a valley), then counts valleys among the minima at
    the levels u = L* + f·S for each f in ``levels``, L* the best minimum's loss and S the scale:
    L* itself (``level_scale = "best"``: u = (1 + f)·L*) or the way from L* up to the loss of the
    zero network (``"zero"``: comparable across widths whose L* differ by orders of magnitude).
    With ``margin``, each minimum above the best is also probed at its own level u_i = L_i +
    margin·S: does it lie in a spurious valley there (a valley of Ω_u holding no minimum within
    ``tol`` of L*; Venturi, Bandeira & Bruna, JMLR 2019)? Separate valleys mean "no certified path
    below u was found within ``attempts`` refinements per pair of valleys": the figures count the
    refinements and the failures.

    Parameters (``params``)
    -----------------------
    problem : spec; seeds : list of int; optimizer, lr, steps, float64 : training (:func:`landscape.train`)
    levels : list of float
        The fractions f.
    level_scale : {"best", "zero"}
    margin : float or None
        Own-level probes (None: none).
    method, attempts, tol, align : as for :func:`landscape.find_valleys`
    options : dict
        Options of the path method.

    Figures
    -------
    n_minima, global_loss (L*), zero_loss, worst_loss, global_ratio (L* over the zero network's loss);
    max_grad_norm (the largest ‖∇L‖ among the minima counted), not_minima (seeds left out: not stationary, or
    saddles); at the levels f: n_valleys_low (at the lowest), n_valleys_max, n_spurious_max, spurious_levels
    (fraction of the levels with a spurious valley); spurious_minima (fraction of the minima lying in
    a spurious valley at their own level); spurious_any (1 if some level, of either kind, has a
    spurious valley, else 0); spurious_proven_any (1 if some level has a valley proven spurious: apart
    from every valley holding a global minimum — the other spurious figures count valleys no path joined
    to one, upper bounds unless the problem proves separations); refinements, failed, straight_checks, evaluations,
    train_seconds, valley_seconds; for problems that know the components of their global minima
    (:meth:`DeepLinearProblem.orientation_classes`), n_orientations (the classes among the minima
    within ``tol`` of L*); and ``series``: fraction, level, minima_below, n_valleys, n_spurious,
    n_spurious_at_least, spurious (0 or 1) per level f.
    """
    from ..minima.stationary import criterion_text, negative_curvature, polish
    from ..minima.train import train
    from ..valleys.graph import spurious_tolerance
    from ..valleys.search import find_valleys

    scale_kind = params["level_scale"]
    LEVEL_SCALES.lookup(scale_kind)
    fractions = [float(f) for f in params["levels"]]
    if not fractions or min(fractions) < 0:
        raise LandscapeError(f"levels must be a non-empty list of fractions >= 0, got {params['levels']!r}")
    seeds = [int(s) for s in params["seeds"]]
    if len(seeds) < 2:
        raise LandscapeError("count_valleys needs at least two seeds")
    margin = params["margin"]
    options = params["options"] or {}
    problem = task_problem(params["problem"])
    dtype = torch.float64 if params["float64"] else torch.float32
    minima = train(problem, seeds, optimizer=params["optimizer"], lr=float(params["lr"]), steps=int(params["steps"]),
                   device=device, dtype=dtype, record_every=int(params["steps"]), max_records=2)
    thetas, grad_norms = minima.thetas.to(device=device, dtype=dtype), minima.grad_norms.double()
    if not minima.converged.all():  # one more polish; a seed that still fails is not a minimum: left out, counted
        off = torch.nonzero(~minima.converged).flatten()
        again = polish(problem, thetas[off])
        thetas, grad_norms = thetas.clone(), grad_norms.clone()
        thetas[off], grad_norms[off] = again.thetas, again.grad_norms.double()
        keep = torch.ones(len(seeds), dtype=torch.bool)
        keep[off.cpu()] = again.converged.cpu()
    else:
        keep = torch.ones(len(seeds), dtype=torch.bool)
    keep[keep.clone()] &= ~negative_curvature(problem, thetas[keep.to(thetas.device)])[0].cpu()  # saddles: left out
    if int(keep.sum()) < 2:
        raise LandscapeError(f"only {int(keep.sum())} of {len(seeds)} seeds reached a minimum ({criterion_text()}); "
                             "train longer (steps) or use more seeds")
    not_minima = [s for s, k in zip(seeds, keep.tolist()) if not k]
    seeds, thetas, grad_norms = [s for s, k in zip(seeds, keep.tolist()) if k], thetas[keep.to(thetas.device)], \
        grad_norms[keep]
    losses = problem.loss(thetas).double().cpu()
    best = float(losses.min())
    zero = float(problem.loss(torch.zeros(1, problem.dim, device=device, dtype=dtype))[0])
    scale = best if scale_kind == "best" else zero - best
    tol = spurious_tolerance(best, params["tol"])
    at = {f: best + f * scale for f in fractions}
    own = {i: float(losses[i]) + float(margin) * scale for i in range(len(seeds))
           if margin is not None and float(losses[i]) > best + tol}
    names = [f"seed{s}" for s in seeds]
    _, report = find_valleys(problem, thetas, names=names, levels=sorted(set(at.values()) | set(own.values())),
                             method=params["method"], attempts=int(params["attempts"]), tol=params["tol"],
                             align=params["align"], generator=torch.Generator().manual_seed(seeds[0]),
                             connect_options=options)
    rows = {r["level"]: r for r in report["levels"]}
    series = {"fraction": fractions, "level": [at[f] for f in fractions],
              "minima_below": [int((losses <= at[f]).sum()) for f in fractions],
              "n_valleys": [rows[at[f]]["n_valleys"] for f in fractions],
              "n_spurious": [rows[at[f]]["n_spurious"] for f in fractions],
              "n_spurious_at_least": [rows[at[f]]["n_spurious_at_least"] for f in fractions]}
    series["spurious"] = [int(n > 0) for n in series["n_spurious"]]
    stranded = [i for i, u in own.items() if any(names[i] in v for v in rows[u]["spurious"])]
    figures = {
        "n_minima": len(seeds), "global_loss": best, "zero_loss": zero, "worst_loss": float(losses.max()),
        "global_ratio": best / zero if zero > 0 else None,
        "max_grad_norm": float(grad_norms.max()), "not_minima": not_minima,
        "n_valleys_low": series["n_valleys"][fractions.index(min(fractions))],
        "n_valleys_max": max(series["n_valleys"]), "n_spurious_max": max(series["n_spurious"]),
        "spurious_proven_any": int(any(rows[u]["n_spurious_at_least"] for u in rows)),
        "spurious_levels": statistics.fmean(series["spurious"]),
        "spurious_minima": len(stranded) / len(seeds) if margin is not None else None,
        "spurious_any": int(bool(stranded) or any(series["spurious"])),
        **{k: report[k] for k in ("refinements", "failed", "straight_checks", "evaluations")},
        "train_seconds": minima.seconds, "valley_seconds": report["seconds"], "series": series,
    }
    classes = getattr(problem, "orientation_classes", None)
    if classes is not None:
        near = [i for i in range(len(seeds)) if float(losses[i]) <= best + tol]
        figures["n_orientations"] = len(set(classes(thetas[near])))
    return figures
