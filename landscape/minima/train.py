"""Training to minima: all seeds descend together as one batched [S, D] problem.

Gradient descent and Adam act coordinate-wise, so one optimiser over the stacked parameters is
S independent optimisers; a seed that reaches its target loss is frozen while the others go on.
Without a target loss the seeds are minima: after the optimiser's steps every seed that does not yet
meet the stationarity criterion of :mod:`.stationary` (‖∇L‖ ≤ 10⁻³·max(|L|, 0.1)) is polished,
all together, until it does; ``converged`` and ``grad_norms`` say where each one ended.

A network with BatchNorm (``bn="recompute"``: statistics of the training split at every point) trains with
training-mode BatchNorm, full batch (:class:`landscape.problems.bn_stats.OnePass`: one pass computes the batch
statistics and the loss, a third of the cost of a statistics pass and a loss pass); the polish then runs on it,
and finally on the problem itself, so the criterion is checked on the problem's own loss. The two differ by the
variance's n/(n−1) only (batch against population): the final polish takes few or no steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .._errors import LandscapeError
from .._progress import Progress, redraw_interval
from ..problems.bn_stats import one_pass
from ..problems.problem import Problem
from .optim import OPTIMIZERS, RowOptimizer
from .stationary import POLISH_STEPS, polish


@dataclass
class TrainResult:
    """Minima of one problem, one row per seed.

    Attributes
    ----------
    seeds : list of int
    thetas : Tensor, shape (S, D)
    losses : Tensor, shape (S,)
        Full-batch training loss at ``thetas``.
    steps : Tensor, shape (S,)
        Optimiser steps each seed took.
    grad_norms : Tensor, shape (S,)
        ‖∇L‖ at ``thetas``.
    converged : Tensor of bool, shape (S,)
        Whether ``thetas`` meets the stationarity criterion (:func:`landscape.minima.stationary.is_stationary`).
    reached_target : Tensor of bool, shape (S,), or None
        Whether the seed's loss is ≤ ``until_loss``; None when no target was set.
    polish_steps : Tensor, shape (S,)
        Descent steps of the final polish (0 where none was needed or ``until_loss`` was set).
    trajectories : list of dict
        Per seed ``{"step": [T], "theta": [T, D], "loss": [T]}``, its last record at the minimum.
    options : dict
        The training options, JSON-able.
    seconds : float
    """

    seeds: list[int]
    thetas: torch.Tensor
    losses: torch.Tensor
    steps: torch.Tensor
    grad_norms: torch.Tensor
    converged: torch.Tensor
    reached_target: torch.Tensor | None
    polish_steps: torch.Tensor
    trajectories: list[dict] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    seconds: float = 0.0


#: Adam's learning rate by default: 1e-3, and 1e-2 for networks with BatchNorm (digits_cnn, seeds 0 and 1, 2000
#: steps: |grad L| 4e-3 at 1e-3, 1.2e-4 and 1.6e-4 at 1e-2; BatchNorm makes the loss invariant to the scale of
#: the weights before it, so their effective step shrinks as they grow).
LEARNING_RATES = {"default": 1e-3, "batchnorm": 1e-2}


def default_lr(problem: Problem) -> float:
    """The learning rate :func:`train` uses when none is given: the problem's own ``train_lr`` where it has one
    (the built-in transformer's 3e-3), else :data:`LEARNING_RATES`."""
    if getattr(problem, "train_lr", None) is not None:
        return problem.train_lr
    return LEARNING_RATES["batchnorm" if getattr(problem, "bn", None) is not None else "default"]


def train(problem: Problem, seeds, *, optimizer: str = "adam", lr: float | None = None, steps: int = 2000,
          until_loss: float | None = None, momentum: float = 0.0, batch_size: int | None = None,
          record_every: int = 10, max_records: int = 100, device="cpu", dtype=torch.float32,
          init: torch.Tensor | None = None, polish_steps: int = POLISH_STEPS, decoupled_decay: float = 0.0,
          progress: bool = False) -> TrainResult:
    """Train one network per seed, all seeds in one batched problem.

    Parameters
    ----------
    problem : Problem
    seeds : sequence of int
        Seed ``s`` draws the initial point from ``torch.Generator().manual_seed(s)`` (and the
        minibatches from seed ``s`` too), so a seed's minimum does not depend on the other seeds.
    optimizer : {"adam", "gd"}
    lr, momentum : float
        Learning rate (default :func:`default_lr`: 1e-3, 1e-2 with BatchNorm); heavy-ball momentum for ``"gd"``.
    steps : int
        Maximum number of steps.
    until_loss : float, optional
        Stop each seed as soon as its full-batch training loss is ≤ this level (Freeman & Bruna's
        protocol for comparing minima of the same loss L0).
    batch_size : int, optional
        Minibatch size (sampled per seed); full batch when None.
    record_every, max_records : int
        Record the trajectory every ``record_every`` steps; when more than ``max_records`` are
        held, every other one is dropped and the interval doubles.
    init : Tensor, shape (S, D), optional
        Starting points instead of the seeded initialisation.
    polish_steps : int
        Without ``until_loss``: at most this many batched descent steps (:func:`landscape.minima.polish`)
        for the seeds that end the optimiser's steps short of the stationarity criterion (0: none); with
        BatchNorm, as many again on the problem's own loss after the training-mode polish.
    decoupled_decay : float
        The optimiser's own weight decay w (AdamW with ``"adam"``: θ ← θ − lr·(update + w·θ), every coordinate;
        :class:`.optim.RowOptimizer`). The loss is unchanged, so the polish descends the problem's loss without
        it and the result is a checked minimum of that loss (grokking: Power et al. 2022 train with AdamW).

    Returns
    -------
    TrainResult
    """
    OPTIMIZERS.lookup(optimizer)
    lr = default_lr(problem) if lr is None else lr
    if not (lr > 0 and math.isfinite(lr)):
        raise LandscapeError(f"learning rate must be a positive number, got {lr}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise LandscapeError("no seeds to train")
    start = time.perf_counter()
    if init is None:
        theta = torch.stack([problem.init(torch.Generator().manual_seed(s)) for s in seeds])
    else:
        theta = init.detach().clone()
    theta = theta.to(device=device, dtype=dtype)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    n_train = problem.n_samples("train")
    full = batch_size is None or batch_size >= n_train

    s_count = len(seeds)
    active = torch.ones(s_count, dtype=torch.bool, device=theta.device)
    taken = torch.zeros(s_count, dtype=torch.long)
    state = RowOptimizer(theta, lr, method=optimizer, momentum=momentum, decay=decoupled_decay)
    records = _Recorder(record_every, max_records)
    fast = one_pass(problem)  # with recomputed BatchNorm: training mode, one pass
    bar = _progress(steps, problem.name if until_loss is None else f"{problem.name} (until loss <= {until_loss:g})",
                    progress)
    loss = None
    for step in range(steps + 1):
        if full:
            loss, grad = fast.loss_and_grad(theta)
        else:
            idx = torch.stack([torch.randint(n_train, (batch_size,), generator=g) for g in gens])
            _, grad = fast.loss_and_grad(theta, batch=idx)
            loss = fast.loss(theta) if step % record_every == 0 or until_loss is not None else loss
        if not torch.isfinite(loss[active]).all():
            bad = [seeds[i] for i in torch.nonzero(active & ~torch.isfinite(loss)).flatten().tolist()]
            raise LandscapeError(f"training {problem.name} diverged at step {step} for seed(s) {bad}; "
                                 f"lower the learning rate (--lr {lr:g})")
        if until_loss is not None:
            active &= loss > until_loss
        records.maybe_add(step, theta, loss)
        if step == steps or not active.any():
            bar.total = bar.n  # stopped early: the bar ends full, not at a fraction of --steps
            bar.refresh()
            break
        rows = None if bool(active.all()) else torch.nonzero(active).flatten()
        state.step(theta, grad if rows is None else grad[rows], rows)
        taken += active.cpu().long()
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.min().item():.4g}..{loss.max().item():.4g}", active=int(active.sum()),
                            refresh=False)
    bar.close()
    polished = _polish(problem, fast, theta, polish_steps if until_loss is None else 0, progress)
    theta, final = polished.thetas, polished.losses
    reached = None if until_loss is None else (final <= until_loss).cpu()
    options = _recorded_options(optimizer=optimizer, lr=lr, steps=steps, until_loss=until_loss, momentum=momentum,
                                batch_size=batch_size, record_every=record_every, max_records=max_records,
                                dtype=dtype, polish_steps=polish_steps, decoupled_decay=decoupled_decay)
    return TrainResult(seeds, theta.cpu(), final.cpu(), taken, polished.grad_norms.cpu(), polished.converged.cpu(),
                       reached, polished.steps.cpu(), records.per_seed(taken, theta.cpu(), final.cpu()), options,
                       time.perf_counter() - start)


def _polish(problem, fast, theta, steps, progress):
    """:func:`polish` on ``fast`` (training-mode BatchNorm), then on the problem itself; progress on stderr."""
    shown = Progress(progress and steps > 0, f"train {problem.name}")
    try:
        first = polish(fast, theta, steps=steps, shown=shown) if fast is not problem else None
        out = polish(problem, theta if first is None else first.thetas, steps=steps, shown=shown)
    finally:
        shown.close()
    if first is not None:
        out.steps += first.steps.to(out.steps.device)
    return out


class _Recorder:
    """Keeps every k-th iterate; halves itself (and doubles k) when it holds more than ``limit``."""

    def __init__(self, every, limit):
        self.every, self.limit = max(1, int(every)), max(2, int(limit))
        self.steps, self.thetas, self.losses = [], [], []

    def maybe_add(self, step, theta, loss):
        if step % self.every:
            return
        self.steps.append(step)
        self.thetas.append(theta.detach().cpu().clone())
        self.losses.append(loss.detach().cpu().clone())
        if len(self.steps) > self.limit:
            self.every *= 2
            keep = [i for i, s in enumerate(self.steps) if s % self.every == 0]
            self.steps = [self.steps[i] for i in keep]
            self.thetas = [self.thetas[i] for i in keep]
            self.losses = [self.losses[i] for i in keep]

    def per_seed(self, taken, final_theta, final_loss):
        out = []
        steps = torch.tensor(self.steps, dtype=torch.long)
        thetas = torch.stack(self.thetas, 1) if self.thetas else None  # [S, T, D]
        losses = torch.stack(self.losses, 1) if self.losses else None
        for i in range(final_theta.shape[0]):
            keep = steps < taken[i]
            out.append({
                "step": torch.cat([steps[keep], taken[i:i + 1]]),
                "theta": torch.cat([thetas[i][keep], final_theta[i:i + 1]]),
                "loss": torch.cat([losses[i][keep], final_loss[i:i + 1]]),
            })
        return out


def _progress(total, name, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"train {name}", disable=not enabled, leave=False, dynamic_ncols=True,
                mininterval=redraw_interval())


def checkpoint_name(problem: Problem, seed: int) -> str:
    """File name of a seed's minimum: ``digits_mlp_w100_s3.pt``."""
    name = problem.name
    if name == "user":
        name = str(problem.params.get("factory", "user")).rpartition(":")[2]
    width = problem.params.get("width")
    return f"{name}_w{width}_s{seed}.pt" if width is not None else f"{name}_s{seed}.pt"


def train_checkpoints(problem: Problem, seeds, out_dir, *, overwrite: bool = False, trajectory: bool = True,
                      **options) -> list[dict]:
    """Train the seeds that have no finished checkpoint in ``out_dir`` yet, and write one file per seed.

    A run that stops part-way resumes: a seed whose checkpoint exists for the same problem and the
    same training options is kept, not retrained (unless ``overwrite``). Each file is written
    atomically as soon as the batch finishes.

    Returns
    -------
    list of dict
        One row per seed: ``file``, ``seed``, ``loss``, ``grad_norm``, ``converged``, ``steps``,
        ``polish_steps``, ``reached_target`` (None without ``until_loss``), ``status`` (``"trained"`` or ``"kept"``).
    """
    from pathlib import Path

    from ..problems.bn_stats import mode_losses, running_statistics
    from ..problems.checkpoint import load_checkpoint, save_checkpoint

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LandscapeError(f"-o {out_dir} is a file; name a folder for the checkpoints")
    options["lr"] = default_lr(problem) if options.get("lr") is None else options["lr"]
    wanted = _recorded_options(**options)
    rows, todo = [], []
    for seed in [int(s) for s in seeds]:
        path = out_dir / checkpoint_name(problem, seed)
        if path.exists() and not overwrite:
            try:
                ck = load_checkpoint(path, problem=problem)
            except LandscapeError:
                ck = None
            if ck is not None and ck.problem.spec == problem.spec and _recorded(ck.meta) == wanted:
                rows.append(_row(path, seed, ck.loss, ck.grad_norm, ck.converged, ck.meta, "kept"))
                continue
            raise LandscapeError(f"{path} exists from another run; pass --overwrite or choose another -o folder")
        todo.append(seed)
    if todo:
        result = train(problem, todo, **options)
        for i, seed in enumerate(result.seeds):
            path = out_dir / checkpoint_name(problem, seed)
            reached = None if result.reached_target is None else bool(result.reached_target[i])
            meta = {"train": result.options, "steps": int(result.steps[i]), "polish_steps": int(result.polish_steps[i]),
                    "reached_target": reached, "seconds": result.seconds}
            grad_norm, converged = float(result.grad_norms[i]), bool(result.converged[i])
            # BatchNorm's running statistics of the minimum: bn="frozen" is then the trained network
            buffers = running_statistics(problem, result.thetas[i]) if getattr(problem, "bn", None) == "recompute" \
                else {}
            if buffers:
                meta["batchnorm"] = {"statistics": "training split at theta (mean, unbiased variance)",
                                     "losses": mode_losses(problem, result.thetas[i], buffers)}
            save_checkpoint(path, problem, result.thetas[i], loss=float(result.losses[i]), seed=seed,
                            trajectory=result.trajectories[i] if trajectory else None, meta=meta,
                            grad_norm=grad_norm, converged=converged, buffers=buffers)
            rows.append(_row(path, seed, float(result.losses[i]), grad_norm, converged, meta, "trained"))
    return sorted(rows, key=lambda r: r["seed"])


def _row(path, seed, loss, grad_norm, converged, meta, status) -> dict:
    return {"file": str(path), "seed": seed, "loss": loss, "grad_norm": grad_norm, "converged": converged,
            "steps": meta.get("steps"), "polish_steps": meta.get("polish_steps", 0),
            "reached_target": meta.get("reached_target"), "status": status,
            "batchnorm_losses": meta.get("batchnorm", {}).get("losses")}


def _recorded(meta: dict):
    """A checkpoint's training options; files written before the decoupled decay existed trained without it."""
    recorded = meta.get("train")
    return {"decoupled_decay": 0.0, **recorded} if isinstance(recorded, dict) else recorded


def _recorded_options(**options) -> dict:
    """The JSON-able training options stored in a checkpoint, defaults filled in."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(train).parameters.items()
                if p.default is not inspect.Parameter.empty}
    merged = {**defaults, **options}
    keep = ("optimizer", "lr", "steps", "until_loss", "momentum", "batch_size", "record_every", "max_records",
            "polish_steps", "decoupled_decay")
    return {**{k: merged[k] for k in keep}, "dtype": str(merged["dtype"])}
