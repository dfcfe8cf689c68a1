"""Throughput of the batched evaluator on this machine, against a loop and the matmul peak."""

from __future__ import annotations

import time

import torch

from ._problem import Problem


def timeit(fn, *, min_seconds: float = 0.5, min_repeats: int = 2) -> float:
    """Seconds per call of ``fn`` (one warm-up call, then repeats until ``min_seconds`` have passed)."""
    fn()
    _sync()
    n, start = 0, time.perf_counter()
    while n < min_repeats or time.perf_counter() - start < min_seconds:
        fn()
        _sync()
        n += 1
    return (time.perf_counter() - start) / n


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_peak(n: int = 2048, device="cpu", dtype=torch.float32, min_seconds: float = 0.5) -> float:
    """GFLOP/s of ``torch.mm`` on two n×n matrices."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    return 2.0 * n**3 / timeit(lambda: torch.mm(a, b), min_seconds=min_seconds) / 1e9


def evaluator_throughput(problem: Problem, k: int = 64, *, device="cpu", min_seconds: float = 0.5) -> dict:
    """Loss-and-gradient throughput of ``k`` points: batched (chunked) call against a loop over points.

    Returns
    -------
    dict
        ``points_per_s`` and ``gflops`` (forward + backward ≈ 3 × forward FLOPs) for ``batched`` and
        ``loop``, the chunk size used, and ``speedup`` = batched / loop.
    """
    thetas = problem.init(torch.Generator().manual_seed(0), n=k, device=device)
    t_batched = timeit(lambda: problem.loss_and_grad(thetas), min_seconds=min_seconds)
    t_loop = timeit(lambda: [problem.loss_and_grad(thetas[i:i + 1]) for i in range(k)], min_seconds=min_seconds)
    flops = getattr(problem, "flops_per_point", lambda: float("nan"))() * 3 * k
    return {
        "problem": repr(problem), "k": k, "dim": problem.dim, "chunk": problem.chunk_size(
            problem.n_samples(), torch.device(device)),
        "batched_points_per_s": k / t_batched, "loop_points_per_s": k / t_loop,
        "batched_gflops": flops / t_batched / 1e9, "loop_gflops": flops / t_loop / 1e9,
        "speedup": t_loop / t_batched,
    }
