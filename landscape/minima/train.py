"""Training to minima: all seeds descend together as one batched [S, D] problem.

Gradient descent and Adam act coordinate-wise, so one optimiser over the stacked parameters is
S independent optimisers; a seed that reaches its target loss is frozen while the others go on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .._errors import LandscapeError
from ..problems.problem import Problem
from .optim import OPTIMIZERS, RowOptimizer


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
    reached : Tensor of bool, shape (S,)
        Whether the seed reached ``until_loss`` (all True when no target was set).
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
    reached: torch.Tensor
    trajectories: list[dict] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    seconds: float = 0.0


def train(problem: Problem, seeds, *, optimizer: str = "adam", lr: float = 1e-3, steps: int = 2000,
          until_loss: float | None = None, momentum: float = 0.0, batch_size: int | None = None,
          record_every: int = 10, max_records: int = 100, device="cpu", dtype=torch.float32,
          init: torch.Tensor | None = None, progress: bool = False) -> TrainResult:
    """Train one network per seed, all seeds in one batched problem.

    Parameters
    ----------
    problem : Problem
    seeds : sequence of int
        Seed ``s`` draws the initial point from ``torch.Generator().manual_seed(s)`` (and the
        minibatches from seed ``s`` too), so a seed's minimum does not depend on the other seeds.
    optimizer : {"adam", "gd"}
    lr, momentum : float
        Learning rate; heavy-ball momentum for ``"gd"``.
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

    Returns
    -------
    TrainResult
    """
    OPTIMIZERS.lookup(optimizer)
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
    state = RowOptimizer(theta, lr, method=optimizer, momentum=momentum)
    records = _Recorder(record_every, max_records)
    bar = _progress(steps, problem.name, progress)
    loss = None
    for step in range(steps + 1):
        if full:
            loss, grad = problem.loss_and_grad(theta)
        else:
            idx = torch.stack([torch.randint(n_train, (batch_size,), generator=g) for g in gens])
            _, grad = problem.loss_and_grad(theta, batch=idx)
            loss = problem.loss(theta) if step % record_every == 0 or until_loss is not None else loss
        if not torch.isfinite(loss[active]).all():
            bad = [seeds[i] for i in torch.nonzero(active & ~torch.isfinite(loss)).flatten().tolist()]
            raise LandscapeError(f"training {problem.name} diverged at step {step} for seed(s) {bad}; "
                                 f"lower the learning rate (--lr {lr:g})")
        if until_loss is not None:
            active &= loss > until_loss
        records.maybe_add(step, theta, loss)
        if step == steps or not active.any():
            break
        rows = None if bool(active.all()) else torch.nonzero(active).flatten()
        state.step(theta, grad if rows is None else grad[rows], rows)
        taken += active.cpu().long()
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.min().item():.4g}..{loss.max().item():.4g}", active=int(active.sum()))
    bar.close()
    final = problem.loss(theta)
    reached = torch.ones(s_count, dtype=torch.bool) if until_loss is None else (final <= until_loss).cpu()
    options = _recorded_options(optimizer=optimizer, lr=lr, steps=steps, until_loss=until_loss, momentum=momentum,
                                batch_size=batch_size, record_every=record_every, max_records=max_records,
                                dtype=dtype)
    return TrainResult(seeds, theta.cpu(), final.cpu(), taken, reached,
                       records.per_seed(taken, theta.cpu(), final.cpu()), options, time.perf_counter() - start)


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
                mininterval=0.5)


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
        One row per seed: ``file``, ``seed``, ``loss``, ``steps``, ``reached``, ``status``
        (``"trained"`` or ``"kept"``).
    """
    from pathlib import Path

    from ..problems.checkpoint import load_checkpoint, save_checkpoint

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LandscapeError(f"-o {out_dir} is a file; name a folder for the checkpoints")
    wanted = _recorded_options(**options)
    rows, todo = [], []
    for seed in [int(s) for s in seeds]:
        path = out_dir / checkpoint_name(problem, seed)
        if path.exists() and not overwrite:
            try:
                ck = load_checkpoint(path, problem=problem)
            except LandscapeError:
                ck = None
            if ck is not None and ck.problem.spec == problem.spec and ck.meta.get("train") == wanted:
                rows.append({"file": str(path), "seed": seed, "loss": ck.loss, "steps": ck.meta.get("steps"),
                             "reached": ck.meta.get("reached", True), "status": "kept"})
                continue
            raise LandscapeError(f"{path} exists from another run; pass --overwrite or choose another -o folder")
        todo.append(seed)
    if todo:
        result = train(problem, todo, **options)
        for i, seed in enumerate(result.seeds):
            path = out_dir / checkpoint_name(problem, seed)
            meta = {"train": result.options, "steps": int(result.steps[i]), "reached": bool(result.reached[i]),
                    "seconds": result.seconds}
            save_checkpoint(path, problem, result.thetas[i], loss=float(result.losses[i]), seed=seed,
                            trajectory=result.trajectories[i] if trajectory else None, meta=meta)
            rows.append({"file": str(path), "seed": seed, "loss": float(result.losses[i]),
                         "steps": int(result.steps[i]), "reached": bool(result.reached[i]), "status": "trained"})
    return sorted(rows, key=lambda r: r["seed"])


def _recorded_options(**options) -> dict:
    """The JSON-able training options stored in a checkpoint, defaults filled in."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(train).parameters.items()
                if p.default is not inspect.Parameter.empty}
    merged = {**defaults, **options}
    keep = ("optimizer", "lr", "steps", "until_loss", "momentum", "batch_size", "record_every", "max_records")
    return {**{k: merged[k] for k in keep}, "dtype": str(merged["dtype"])}
