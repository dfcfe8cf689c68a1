"""``landscape bench``'s conv rows: the loss and gradient of K conv nets (:func:`landscape.problems.convnets.
digits_cnn` at its defaults) three ways, at K = 1, 16, 64, with recomputed and with frozen BatchNorm statistics.

- **batched**: the problem's own ``loss_and_grad`` (the wide evaluator, :mod:`landscape.problems.grouped`: K
  networks in one forward of the module's code, in chunks of :data:`landscape.problems.grouped.CHUNK_BYTES`);
- **module loop**: the ``nn.Module`` itself, one point at a time (θ copied in, forward, loss, ``backward``), as a
  user's loop runs it: in training mode for recomputed statistics (one pass, batch statistics, biased variance:
  the cost of the nearest thing torch has, not the same function), in evaluation mode for frozen ones (the same
  function);
- **torch.func**: the generic batched evaluator the problem falls back to (``functional_call`` under ``vmap``).

Useful FLOPs are the forward's convolutions and linear layers (:meth:`NetworkProblem.flops_per_point`) × 3 for
forward and backward, per CPU second: recomputed statistics do about 1.8× that work (a statistics pass and a loss
pass), which the figure does not count.
"""

from __future__ import annotations

import copy
import math

import torch

from ._timing import clocks, label
from .problems.embedded import make_problem

#: The K of the rows.
KS = (1, 16, 64)


def _loop(problem, thetas, train: bool):
    module = copy.deepcopy(problem.module_).to(thetas.device, thetas.dtype).train(train)
    x, y = (t.to(thetas.device) for t in problem.data("train"))
    x = x.to(thetas.dtype)
    params = [module.get_parameter(n) for n in problem.layout.names]

    def run():
        for theta in thetas:
            with torch.no_grad():
                for p, value in zip(params, problem.layout.unflatten(theta).values()):
                    p.copy_(value)
            module.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(module(x), y).backward()

    return run


def _generic(problem, thetas):
    def run():
        wide, problem._wide = problem._wide, None
        try:
            problem.loss_and_grad(thetas)
        finally:
            problem._wide = wide

    return run


def mm_rate(device="cpu", n: int = 2048, min_seconds: float = 0.5) -> float:
    """GFLOP/s of ``torch.mm`` on two n×n matrices, per CPU second on a CPU (a busy machine's wall time is not the
    process's), per wall second on CUDA."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device) for _ in range(2))
    wall, cpu = clocks(lambda: torch.mm(a, b), min_seconds=min_seconds)
    return 2.0 * n**3 / (cpu if torch.device(device).type == "cpu" else wall) / 1e9


def conv_speed(problem=None, ks=KS, *, device="cpu", min_seconds: float = 0.5, rounds: int = 3) -> dict:
    """Loss and gradient of K conv nets: batched, a loop over the module, torch.func; per K in ``ks`` and per
    BatchNorm policy (recompute, frozen); the three ways timed in turn, ``rounds`` times (the order reversed every
    other round), each way's best round kept.

    Parameters
    ----------
    problem : NetworkProblem, optional
        Default: ``digits_cnn`` at its defaults.
    ks : sequence of int
    device : str or torch.device
    min_seconds : float
        Least wall time of each timing (:func:`landscape.bench.clocks`).
    rounds : int

    Returns
    -------
    dict
        ``label``, ``dim``, ``samples``, ``flops`` (useful FLOPs of a point's loss and gradient, 3 × forward),
        ``mm_gflops`` (:func:`mm_rate`); ``rows``: per policy and K, ``us`` and ``cpu_us`` (wall and CPU µs a point)
        of each way, ``fastest`` (least CPU time), ``gflops`` (useful GFLOP/s of the batched way, per CPU second on
        a CPU) and ``of_peak`` (its fraction of ``mm_gflops``).
    """
    problem = make_problem("digits_cnn") if problem is None else problem
    flops = 3 * problem.flops_per_point()
    peak, on_cpu = mm_rate(device, min_seconds=min_seconds), torch.device(device).type == "cpu"
    before, rows = problem.bn, []
    try:
        for policy in ("recompute", "frozen"):
            problem.bn = policy
            for k in ks:
                thetas = problem.init(torch.Generator().manual_seed(0), n=k, device=device)
                ways = {"batched": lambda: problem.loss_and_grad(thetas),
                        "module loop": _loop(problem, thetas, train=policy == "recompute"),
                        "torch.func": _generic(problem, thetas)}
                row = {"bn": policy, "k": k}
                for r in range(rounds):  # the ways interleaved, each its best round: a drifting load hits all alike
                    for name, fn in (list(ways.items()) if r % 2 == 0 else list(ways.items())[::-1]):
                        wall, cpu = clocks(fn, min_seconds=min_seconds, min_repeats=1)
                        best = row.setdefault(name, {"us": math.inf, "cpu_us": math.inf})
                        best["us"], best["cpu_us"] = min(best["us"], wall / k * 1e6), min(best["cpu_us"], cpu / k * 1e6)
                row["fastest"] = min(ways, key=lambda n: row[n]["cpu_us"])
                row["gflops"] = flops / row["batched"]["cpu_us" if on_cpu else "us"] / 1e3
                row["of_peak"] = row["gflops"] / peak
                rows.append(row)
    finally:
        problem.bn = before
    return {"label": label(problem), "dim": problem.dim, "samples": problem.n_samples(), "flops": flops,
            "mm_gflops": peak,
            "evaluator": problem.evaluator, "rows": rows}
