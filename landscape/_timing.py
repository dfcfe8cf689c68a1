"""Timers of ``landscape bench`` (:mod:`landscape.bench` and the modules of its sections): wall and CPU seconds a
call, and a short name for a problem in tables."""

from __future__ import annotations

import time

import torch

from .problems.problem import Problem


def timeit(fn, *, min_seconds: float = 0.5, min_repeats: int = 2) -> float:
    """Seconds per call of ``fn`` (one warm-up call, then repeats until ``min_seconds`` have passed)."""
    return clocks(fn, min_seconds=min_seconds, min_repeats=min_repeats)[0]


def clocks(fn, *, min_seconds: float = 0.5, min_repeats: int = 2) -> tuple[float, float]:
    """``(wall, cpu)`` seconds per call of ``fn``: one warm-up call, then repeats until ``min_seconds`` of wall
    time have passed. CPU time is the process's (all its threads: above the wall time when several work)."""
    fn()
    _sync()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while n < min_repeats or time.perf_counter() - start < min_seconds:
        fn()
        _sync()
        n += 1
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n


def label(problem: Problem) -> str:
    """A short name for tables: the problem's name, the parameters it does not take at their defaults, and D."""
    from .problems.embedded import PROBLEMS, describe_problem

    defaults = describe_problem(problem.name)["params"] if problem.name in PROBLEMS else {}
    changed = " ".join(f"{k}={v}" for k, v in problem.params.items() if defaults.get(k, v) != v)
    return f"{problem.name}{' ' + changed if changed else ''} (D={problem.dim:,})"


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
