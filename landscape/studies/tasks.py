"""What a study measures: ``TASKS`` maps a name to ``task(params, *, device) -> dict of figures``.

A task is a plain function of JSON-able parameters that returns JSON-able figures (numbers,
strings, lists, dicts); a figure named ``series`` holds equal-length lists recorded over time,
which reports draw as curves. Tasks are deterministic given their parameters (randomness comes
from seeds in the parameters), so a result computed on a laptop and on a cluster worker agree.
Each task declares its parameters and their defaults (:func:`task_options` checks a study's
parameters against them before anything runs).
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback

import torch

from .._errors import LandscapeError
from .._registry import Registry
from .._version import versions
from .level_tasks import count_valleys, geodesic_length
from .task_params import REQUIRED, declared
from .task_params import declares as _declares
from .task_params import task_problem as _problem


def task_options(task: str, params: dict, *, where: str = "study") -> dict:
    """``params`` with the task's defaults filled in; an unknown or missing parameter is an error."""
    defaults = TASKS.check_options(task, params, where=where)
    missing = sorted(k for k, v in defaults.items() if v is REQUIRED and k not in params)
    if missing:
        raise LandscapeError(f"{where}: task {task!r} needs parameter(s) {missing}")
    return {**{k: v for k, v in defaults.items() if v is not REQUIRED}, **params}


# ---------------------------------------------------------------- tasks
@_declares(problem=REQUIRED, seed=0, seeds=None, optimizer="adam", lr=1e-3, steps=2000, until_loss=None,
           momentum=0.0, batch_size=None, float64=False)
def train_minima(params: dict, *, device) -> dict:
    """Train minima of a problem, all seeds as one batched problem (:func:`landscape.train`).

    Parameters (``params``)
    -----------------------
    problem : spec; seed : int, or seeds : list of int (trained together); optimizer, lr, steps,
    until_loss, momentum, batch_size : as for :func:`landscape.train`; float64 : bool.

    Figures
    -------
    loss, test_loss, steps, converged, grad_norm, norm, and reached (with ``until_loss``) : per seed
    (lists when ``seeds`` is given, else numbers); loss_min, loss_mean, loss_max, converged_fraction,
    reached_fraction (None without ``until_loss``) : over the seeds; and for problems whose minima
    are known in closed form, ``minimum`` (index of the nearest) and ``minimum_distance``.
    """
    from ..minima.train import train

    problem = _problem(params["problem"])
    seeds = [int(params["seed"])] if params["seeds"] is None else [int(s) for s in params["seeds"]]
    result = train(problem, seeds, optimizer=params["optimizer"], lr=params["lr"], steps=params["steps"],
                   until_loss=params["until_loss"], momentum=params["momentum"], batch_size=params["batch_size"],
                   device=device, dtype=torch.float64 if params["float64"] else torch.float32, max_records=2)
    per = {
        "loss": result.losses.tolist(),
        "steps": result.steps.tolist(),
        "converged": result.converged.tolist(),
        "grad_norm": result.grad_norms.tolist(),
        "norm": result.thetas.norm(dim=1).tolist(),
    }
    if result.reached_target is not None:
        per["reached"] = result.reached_target.tolist()
    if "test" in problem.splits:
        per["test_loss"] = problem.loss(result.thetas.to(result.losses.dtype), split="test").tolist()
    known = getattr(problem, "minima", None)
    if isinstance(known, torch.Tensor) and known.numel():
        dist = torch.cdist(result.thetas.double(), known.double())
        per["minimum"] = dist.argmin(1).tolist()
        per["minimum_distance"] = dist.min(1).values.tolist()
    figures = per if params["seeds"] is not None else {k: v[0] for k, v in per.items()}
    losses = per["loss"]
    figures.update(loss_min=min(losses), loss_mean=sum(losses) / len(losses), loss_max=max(losses),
                   converged_fraction=sum(per["converged"]) / len(seeds),
                   reached_fraction=sum(per["reached"]) / len(seeds) if "reached" in per else None)
    return figures


@_declares(problem=REQUIRED, dynamics="gd", lr=1.0, steps=100_000, seeds=[0, 1, 2, 3], records=50)
def implicit_bias(params: dict, *, device) -> dict:
    """Implicit regularization on separable data: does θ/‖θ‖ reach the max-margin direction?

    Runs :func:`landscape.implicit_bias` (``dynamics`` gd, normalized_gd or weight_norm) from the
    problem's initialisation of each seed, all seeds batched, and compares with the hard-margin
    SVM computed independently (:func:`landscape.max_margin`, checked by its KKT conditions).
    Soudry et al. (JMLR 2018); Poggio, Banburski & Liao (2019-2020); Nacson et al. (AISTATS 2019).

    The problem must be a linear classifier without bias under the exponential loss
    (``exp_linear``).

    Figures
    -------
    max_margin : γ*; n_support; svm_kkt_residual; at the last step, means over the seeds:
    cosine (with the max-margin direction), cosine_min, margin_ratio (normalized margin / γ*),
    norm ‖θ‖, log_loss, test_error (of sign(θ·x) on the test split); over the last decade of steps,
    norm_slope_ratio (d‖θ‖/d ln t × γ*, which tends to 1 under plain gradient descent, where
    θ(t) ≈ ŵ ln t) and norm_exponent (d ln‖θ‖/d ln t: → 0 for growth like ln t, 1 for linear growth);
    gap_log_t ((1 − margin_ratio)·ln t, bounded when the margin converges like 1/log t); and
    ``series``: step, cosine, margin_ratio, cosine_gap (1 − cosine), margin_gap (1 − margin_ratio),
    norm, log_loss over a log-spaced clock.
    """
    from ..minima.margin import implicit_bias as run, max_margin

    problem = _problem(params["problem"])
    if getattr(problem, "loss_name", None) != "exponential" or problem.layout.names != ("0.weight",):
        raise LandscapeError(f"implicit_bias needs a linear classifier without bias under the exponential loss "
                             f"(exp_linear), not {problem!r}")
    x, y = problem.data("train")
    ref = max_margin(x, y)
    seeds = [int(s) for s in params["seeds"]]
    if not seeds:
        raise LandscapeError("implicit_bias needs at least one seed")
    theta0 = torch.stack([problem.init(torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds])
    out = run(x, y, theta0.to(device), dynamics=params["dynamics"], lr=float(params["lr"]),
              steps=int(params["steps"]), records=int(params["records"]), reference=ref)
    gamma = ref.margin
    step = out["step"].double()
    ratio = out["margin"] / gamma
    final = {k: out[k][-1] for k in ("cosine", "norm", "log_loss")}
    decade = step >= max(1.0, step[-1].item() / 10)  # the last decade of the log-spaced clock
    slope, exponent = math.nan, math.nan
    if decade.sum() >= 2:
        lnt = torch.log(step[decade])
        design = torch.stack([lnt, torch.ones_like(lnt)], 1)
        norm = out["norm"][decade].mean(1, keepdim=True)
        slope = float(torch.linalg.lstsq(design, norm).solution[0, 0])  # d‖θ‖ / d ln t
        exponent = float(torch.linalg.lstsq(design, torch.log(norm)).solution[0, 0])  # d ln‖θ‖ / d ln t
    xt, yt = problem.data("test") if "test" in problem.splits else (x, y)
    theta = out["theta"][-1]
    test_error = ((xt.double() @ theta.T).sign() != yt.double().reshape(-1, 1)).double().mean(0)
    return {
        "max_margin": gamma,
        "n_support": int(ref.support.size),
        "svm_kkt_residual": ref.kkt_residual,
        "cosine": float(final["cosine"].mean()),
        "cosine_min": float(final["cosine"].min()),
        "margin_ratio": float(ratio[-1].mean()),
        "norm": float(final["norm"].mean()),
        "log_loss": float(final["log_loss"].mean()),
        "test_error": float(test_error.mean()),
        "norm_slope_ratio": slope * gamma,
        "norm_exponent": exponent,
        "gap_log_t": float((1 - ratio[-1].mean()) * math.log(max(step[-1].item(), 2.0))),
        "series": {
            "step": out["step"].tolist(),
            "cosine": out["cosine"].mean(1).tolist(),
            "margin_ratio": ratio.mean(1).tolist(),
            "cosine_gap": (1 - out["cosine"]).mean(1).tolist(),
            "margin_gap": (1 - ratio).mean(1).tolist(),
            "norm": out["norm"].mean(1).tolist(),
            "log_loss": out["log_loss"].mean(1).tolist(),
        },
    }


#: Study tasks by name; keys equal function names. Each takes ``(params, *, device)``.
TASKS = Registry("task", (train_minima, implicit_bias, geodesic_length, count_valleys), word="parameter",
                 options=declared)


# ---------------------------------------------------------------- running one task (on a worker)
def execute_task(task: str, params: dict, device: str = "auto", threads: int | None = None) -> dict:
    """Run one task and describe the outcome; never raises for a failing task.

    This is what workers run, locally or on a Dask cluster.

    Returns
    -------
    dict
        ``status`` ("done" or "failed"), ``figures`` (JSON-able, or None), ``error`` (the traceback
        text, or None), ``seconds``, ``started``, ``finished`` (Unix times), ``worker``
        (host:pid), ``device`` and ``versions``.
    """
    from .._device import resolve_device

    started, clock = time.time(), time.perf_counter()
    out = {"worker": f"{socket.gethostname()}:{os.getpid()}", "versions": versions(), "started": started,
           "device": str(device), "figures": None, "error": None}
    try:
        if threads:
            torch.set_num_threads(int(threads))
        dev = resolve_device(device)
        out["device"] = str(dev)
        figures = TASKS[task](task_options(task, params), device=dev)
        if not isinstance(figures, dict):
            raise TypeError(f"task {task!r} returned {type(figures).__name__}, not a dict of figures")
        out["figures"] = to_json(figures)
        out["status"] = "done"
    except Exception as err:  # noqa: BLE001 - a failing task is recorded, never fatal to the study
        out["status"] = "failed"
        if isinstance(err, LandscapeError):
            out["error"] = f"LandscapeError: {err}"
        else:
            out["error"] = "".join(traceback.format_exception(err)).rstrip()
    out["seconds"] = time.perf_counter() - clock
    out["finished"] = time.time()
    return out


def to_json(obj):
    """Figures as plain JSON values: tensors and numpy values become numbers and lists."""
    import json

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray, np.generic)):
        return to_json(obj.tolist())
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    json.dumps(obj)  # raises TypeError naming the type
    return obj


