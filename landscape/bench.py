"""Throughput of the batched evaluator on this machine, against a loop and the matmul peak; and at real size
(:func:`real_size`: a CNN of about 1M parameters on 5,000 images, ``landscape bench --real``)."""

from __future__ import annotations

import copy
import time

import torch

from ._progress import Progress
from ._timing import _sync, clocks, label, timeit  # noqa: F401 - re-exported: landscape.bench is the public module
from .problems.problem import Problem
from .bench_conv import conv_speed  # noqa: F401  (landscape bench's conv rows; its timers in landscape._timing)
from .bench_transformer import transformer_speed  # noqa: F401  (landscape bench's transformer rows)


class BenchRows:
    """A line on stderr naming the row measured now, ``bench: digits_mlp (D=…) K=64 batched loss+grad (row 3/9)``,
    gone when the ``with`` block ends; disabled, it prints nothing. Call it with each row's name as it starts."""

    def __init__(self, enabled: bool, total: int):
        self.shown, self.total, self.done = Progress(enabled, "bench", evaluations=False), total, 0

    def __call__(self, row: str) -> None:
        self.done += 1
        self.shown.stage(f"{row} (row {self.done}/{self.total})")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shown.close()


def matmul_peak(n: int = 2048, device="cpu", dtype=torch.float32, min_seconds: float = 0.5) -> float:
    """GFLOP/s of ``torch.mm`` on two n×n matrices."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    return 2.0 * n**3 / timeit(lambda: torch.mm(a, b), min_seconds=min_seconds) / 1e9


def evaluator_throughput(problem: Problem, k: int = 64, *, device="cpu", min_seconds: float = 0.5,
                         ks=(1, 4, 16)) -> dict:
    """Loss-and-gradient cost of ``k`` points: the batched (chunked) call, a loop over points, the problem's own
    ``nn.Module``; and the batched call's cost a point as K grows.

    Returns
    -------
    dict
        ``points_per_s`` and ``gflops`` (forward + backward ≈ 3 × forward FLOPs) for ``batched`` and
        ``loop``, the chunk size used, ``speedup`` = batched / loop; ``plain_points_per_s`` and
        ``plain_us`` / ``plain_cpu_us`` (wall and CPU µs of one forward and backward pass of the module, a
        point at a time, as a user's loop would run it; None without a module); ``scaling``: per K in
        ``ks`` and ``k``, the batched call's wall and CPU µs a point.
    """
    thetas = problem.init(torch.Generator().manual_seed(0), n=k, device=device)
    t_batched, c_batched = clocks(lambda: problem.loss_and_grad(thetas), min_seconds=min_seconds)
    t_loop = timeit(lambda: [problem.loss_and_grad(thetas[i:i + 1]) for i in range(k)], min_seconds=min_seconds)
    plain = plain_module_clocks(problem, thetas[0], min_seconds=min_seconds)
    flops = getattr(problem, "flops_per_point", lambda: float("nan"))() * 3 * k
    scaling = []
    for m in sorted({*[j for j in ks if j < k], k}):
        wall, cpu = (t_batched, c_batched) if m == k else clocks(lambda: problem.loss_and_grad(thetas[:m]),
                                                                  min_seconds=min_seconds)
        scaling.append({"k": m, "us": wall / m * 1e6, "cpu_us": cpu / m * 1e6})
    return {
        "plain_points_per_s": 1 / plain[0] if plain else None,
        "plain_us": plain[0] * 1e6 if plain else None, "plain_cpu_us": plain[1] * 1e6 if plain else None,
        "problem": repr(problem), "label": label(problem), "k": k, "dim": problem.dim, "chunk": problem.chunk_size(
            problem.n_samples(), torch.device(device)),
        "batched_points_per_s": k / t_batched, "loop_points_per_s": k / t_loop,
        "batched_gflops": flops / t_batched / 1e9, "loop_gflops": flops / t_loop / 1e9,
        "speedup": t_loop / t_batched, "scaling": scaling,
    }


def plane_speed(problem: Problem, *, grid: int = 51, device="cpu", min_seconds: float = 0.5) -> dict:
    """A ``grid``×``grid`` filter-normalized random plane (``landscape.evaluate_plane``) against the problem's own
    ``nn.Module`` run forward once a point, as a per-point plane sweep (e.g. the ``loss-landscapes`` package's)
    runs: wall and CPU seconds of each (the module's: one forward pass × grid², measured on a few)."""
    from .views.planes import make_plane
    from .views.surface import evaluate_plane

    theta = problem.init(torch.Generator().manual_seed(0), device=device)
    plane = make_plane("random", problem, theta, generator=torch.Generator().manual_seed(0))
    wall, cpu = clocks(lambda: evaluate_plane(problem, plane, grid=grid), min_seconds=min_seconds, min_repeats=1)
    plain = plain_module_clocks(problem, theta, min_seconds=min_seconds, backward=False)
    points = grid * grid
    return {"problem": repr(problem), "label": label(problem), "points": points, "wall_s": wall, "cpu_s": cpu,
            "module_wall_s": plain[0] * points if plain else None, "module_cpu_s": plain[1] * points if plain else None}


def plain_module_clocks(problem: Problem, theta: torch.Tensor, *, min_seconds: float = 0.5,
                        backward: bool = True) -> tuple[float, float] | None:
    """``(wall, cpu)`` seconds of one forward (and backward) pass of the problem's own ``nn.Module`` at ``theta``
    on the training split — what a user's loop over points costs — or None for a problem without a module (or
    with BatchNorm)."""
    module, data = getattr(problem, "module_", None), getattr(problem, "_splits", None)
    if module is None or not data or getattr(problem, "bn", None) is not None:
        return None
    module = copy.deepcopy(module).to(theta.device, theta.dtype)
    with torch.no_grad():
        for p, value in zip(module.parameters(), problem.layout.unflatten(theta[None]).values()):
            p.copy_(value[0])
    x, y = (t.to(theta.device) for t in data["train"])
    x = x.to(theta.dtype)
    y = y.to(theta.dtype) if y.is_floating_point() else y

    def step():
        module.zero_grad(set_to_none=True)
        problem._batched_loss(module(x).unsqueeze(0), y.unsqueeze(0))[0].backward()

    def forward():
        with torch.no_grad():
            problem._batched_loss(module(x).unsqueeze(0), y.unsqueeze(0))

    return clocks(step if backward else forward, min_seconds=min_seconds)


def dss_round_speed(problem: Problem, beads: int = 16, *, steps: int = 20, resolution: int = 32, device="cpu",
                    min_seconds: float = 0.5) -> dict:
    """One Dynamic String Sampling round with ``beads`` new beads: batched against bead by bead.

    The round is the method's own code (:func:`landscape.paths.string.refine` and the segment
    check): ``beads`` segments of the straight line between two random points each get a bead,
    every bead takes ``steps`` descent steps (the target is unreachable, so both variants do the
    same work), then every segment of the new chain is checked at ``resolution``. Batched: one
    ``loss_and_grad`` per step for all beads and one evaluation for all segments; bead by bead:
    a bead's steps, then a segment's check, one at a time.

    The two variants alternate, round by round, for ``2 × min_seconds`` (at least two rounds each), and each
    keeps its fastest round: measured one after the other on a busy machine, the drift of the machine's load
    between them was larger than their difference (the issue's 0.88× against 1.31× on an idle machine).

    Returns
    -------
    dict
        ``batched_s`` and ``bead_by_bead_s`` (wall seconds of the fastest round), ``batched_cpu_s`` and
        ``bead_by_bead_cpu_s`` (CPU seconds of the least costly round), ``speedup`` (wall), ``rounds``, and the
        round's size.
    """
    from .paths._common import Counted
    from .paths.string import check_segments, refine

    ends = problem.init(torch.Generator().manual_seed(0), n=2, device=device)
    s = torch.linspace(0, 1, beads + 1, device=device)[:, None]
    chain = (1 - s) * ends[0] + s * ends[1]
    bad = torch.ones(beads, dtype=torch.bool, device=device)
    stuck = torch.zeros(beads - 1, dtype=torch.bool, device=device)
    half = torch.full((beads,), 0.5, device=device)

    def one_round(batched):
        counted = Counted(problem)
        new, _ = refine(counted, chain, bad, stuck, float("-inf"), torch.Generator().manual_seed(1), at=half,
                        jitter=1e-3, batched=batched, steps=steps, descent="adam")
        check_segments(counted, new, resolution, batched=batched)
        return counted.evaluations

    evaluations = one_round(True)
    one_round(False)  # warm-up of both, then rounds alternate: a busy machine's drift falls on both alike
    runs, began = {True: [], False: []}, time.perf_counter()
    while len(runs[False]) < 2 or time.perf_counter() - began < 2 * min_seconds:
        for batched in (True, False):
            wall, cpu = time.perf_counter(), time.process_time()
            one_round(batched)
            _sync()
            runs[batched].append((time.perf_counter() - wall, time.process_time() - cpu))
    (t_batched, c_batched), (t_loop, c_loop) = (min(runs[b]) for b in (True, False))
    return {"problem": repr(problem), "label": label(problem), "beads": beads, "steps": steps, "resolution": resolution,
            "evaluations": evaluations, "batched_s": t_batched, "bead_by_bead_s": t_loop,
            "batched_cpu_s": min(c for _, c in runs[True]), "bead_by_bead_cpu_s": min(c for _, c in runs[False]),
            "speedup": t_loop / t_batched, "rounds": len(runs[True])}


def real_cnn(n_images: int = 5000, *, data_seed: int = 0):
    """A CNN of about 1M parameters on ``n_images`` 1×16×16 digits: scikit-learn's 8×8 digits upscaled (bilinear),
    with copies shifted by one pixel right or down to reach ``n_images`` (no download). Cross-entropy.

    Conv3×3(1→32)–ReLU–pool, Conv3×3(32→64)–ReLU–pool, Conv3×3(64→128)–ReLU, Linear(2048→448)–ReLU, Linear(448→10):
    1,015,114 parameters, about 6.7 MFLOP a forward pass per image.
    """
    from sklearn.datasets import load_digits
    from torch import nn

    from .problems.user import from_module

    xs, ys = load_digits(return_X_y=True)
    x = torch.nn.functional.interpolate(torch.tensor(xs, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0,
                                        size=(16, 16), mode="bilinear", align_corners=False)
    x = torch.cat([x, x.roll(1, dims=3), x.roll(1, dims=2)])
    y = torch.tensor(ys).repeat(3)
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(data_seed))[:n_images]
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(128 * 4 * 4, 448), nn.ReLU(), nn.Linear(448, 10))
    return from_module(model, (x[keep], y[keep]), "cross_entropy", name="real_cnn",
                       params={"n_images": n_images, "data_seed": data_seed})


def real_size(problem: Problem, k: int = 4, *, device="cpu", resolution: int = 8, memory=None) -> dict:
    """Loss+gradient of ``k`` points of a network problem at real size: the batched evaluator against a plain loop
    over its ``nn.Module`` (load θ, forward, backward, one point at a time), peak memory, and one ``connect``.

    Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA (reset before each part), else the process's
    peak resident set (``ru_maxrss``, a high-water mark over the whole process so far). The connect is
    ``method="linear"`` at ``resolution`` between two random initialisations: the straight segment, its
    dense certificate (``certificate="grid"``: this measures the evaluator) and its zoom, all on the full data.

    Returns
    -------
    dict
        ``batched_points_per_s``, ``loop_points_per_s``, ``speedup``, ``*_peak_bytes``, ``grad_difference``
        (‖batched − loop‖ / ‖loop‖ of the last point's gradient: the two compute one thing), ``connect`` (status,
        evaluations, seconds, memory plan) and the problem's size.
    """
    from .paths.connect import connect

    device = torch.device(device)
    thetas = problem.init(torch.Generator().manual_seed(0), n=k, device=device)
    model = copy.deepcopy(problem.module()).to(device)
    x, y = (t.to(device) for t in problem.data("train"))

    def loop():
        for theta in thetas:
            torch.nn.utils.vector_to_parameters(theta, model.parameters())
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()

    figures, batched = {}, []
    for name, fn in (("loop", loop), ("batched", lambda: batched.append(problem.loss_and_grad(thetas)[1][-1]))):
        _reset_peak(device)
        seconds = timeit(fn, min_seconds=0.0, min_repeats=1)
        figures[f"{name}_points_per_s"] = k / seconds
        figures[f"{name}_peak_bytes"] = _peak(device)
    looped = torch.cat([p.grad.flatten() for p in model.parameters()])  # the loop's last point
    figures["grad_difference"] = float((batched[-1] - looped).norm() / looped.norm())
    began = time.perf_counter()
    path = connect(problem, thetas[0], thetas[1], method="linear", resolution=resolution, memory=memory,
                   certificate="grid")  # the evaluator's speed, not the proof's (docs/guide/connect.md)
    return {"problem": repr(problem), "label": label(problem), "dim": problem.dim, "samples": problem.n_samples(), "device": str(device),
            "k": k, **figures, "speedup": figures["batched_points_per_s"] / figures["loop_points_per_s"],
            "connect": {"method": "linear", "resolution": resolution, "certificate": path.certificate,
                        "status": path.status,
                        "evaluations": path.evaluations, "seconds": time.perf_counter() - began,
                        "memory": path.info["memory"]}}


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kilobytes on Linux
