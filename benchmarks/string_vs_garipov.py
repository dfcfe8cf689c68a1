"""The default ``connect`` (DSS, Polyak beads; with and without ``--shorten``, and with ``-O bend=0.5``) against
Garipov et al.'s Bezier protocol on the same pair, one thread, CPU time, interleaved in one run.

    landscape train --seeds 0,1 -o minima/          # the main job's pair
    python benchmarks/string_vs_garipov.py [REPEATS] [THREADS] [A.pt B.pt]

The protocol (Garipov et al., NeurIPS 2018): a Bezier curve with one bend, one t a step, Adam, the loss
averaged along the curve, up to 10,000 steps; it is stopped at its first check (every 250 steps) that finds
barrier 0 (the dense max loss at most the worse endpoint's). Prints, per repeat (the seed of both), each
run's CPU and wall seconds, steps, normalized length, max loss, level, status, certificate and evaluations.
"""

from __future__ import annotations

import sys
import time

import torch

import landscape


def main(repeats: int = 2, threads: int = 1, a_file: str = "minima/digits_mlp_w100_s0.pt",
         b_file: str = "minima/digits_mlp_w100_s1.pt") -> None:
    torch.set_num_threads(threads)
    landscape.keep_freed_memory()
    problem, a, b = landscape.load_endpoints(a_file, b_file)
    top = float(problem.loss(torch.stack([a, b])).max())  # barrier 0: no point above the worse endpoint
    runs = {"string": dict(method="string"), "string+shorten": dict(method="string", shorten=True),
            "string bend=0.5": dict(method="string", bend=0.5),
            "garipov": dict(method="bezier", objective="mean", samples=1, steps=10000, check_every=250, level=top,
                            certificate="grid")}
    print("repeat run cpu_s wall_s steps normalized_length max_loss level status certificate evaluations")
    for rep in range(repeats):
        for name, options in runs.items():
            cpu, wall = time.process_time(), time.perf_counter()
            path = landscape.connect(problem, a, b, generator=torch.Generator().manual_seed(rep), **options)
            print(rep, name, round(time.process_time() - cpu, 2), round(time.perf_counter() - wall, 2),
                  path.info.get("steps"), round(path.normalized_length, 3), f"{path.max_loss:.4g}", f"{path.level:.4g}",
                  path.status, path.certificate, path.evaluations, flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*(int(v) for v in args[:2]), *args[2:4])
