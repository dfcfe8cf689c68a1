"""The wide evaluator of conv nets against its own layout without this release's three changes, a loop over the
module and torch.func: loss and gradient, CPU µs a point, one thread, the ways interleaved, best of the rounds.

    python benchmarks/wide_conv.py [--rounds 4] [--seconds 0.5] [--what cnn|real] [--problem NAME] [--ks 1,16,64]

``cnn``: ``--problem`` (``digits_cnn``) at its defaults, K in ``--ks``, recomputed and frozen BatchNorm. ``real``: one gradient of
the 1M-parameter CNN of ``landscape bench --real`` (5,000 images). "without" is the same evaluator with the three
changes undone in this process: no reordering of pooling and activations (``wide_conv.pool_first`` and
``block_means`` find nothing), K·N rows channels first (``plan.channels_last = False``: the chain's rows come back
contiguous), and the cross-entropy normalized along the classes (torch's row-wise ``log_softmax``).
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

import landscape
from landscape._timing import clocks
from landscape.bench_conv import _generic, _loop, mm_rate
from landscape.problems import wide_conv


def rows_cross_entropy(out, y):
    """Mean cross-entropy of ``out`` [k, N, C], normalized along the classes (each row one ``log_softmax``)."""
    return -torch.log_softmax(out, dim=-1).gather(-1, y.long().unsqueeze(-1)).squeeze(-1).mean(-1)


def build(make, without: bool):
    kept = wide_conv.pool_first, wide_conv.block_means
    if without:
        wide_conv.pool_first = wide_conv.block_means = lambda *args: {}
    try:
        problem = make()
    finally:
        wide_conv.pool_first, wide_conv.block_means = kept
    assert problem.evaluator == "wide", problem.capture.get("notes")
    if without:
        problem._wide.channels_last, problem._batched_loss = False, rows_cross_entropy
    return problem


def best_of(ways: dict, rounds: int, seconds: float, per: int) -> dict:
    best = {w: float("inf") for w in ways}
    for r in range(rounds):
        for w, fn in (list(ways.items()) if r % 2 == 0 else list(ways.items())[::-1]):
            best[w] = min(best[w], clocks(fn, min_seconds=seconds, min_repeats=1)[1] / per)
    return best


def conv_table(rounds: int, seconds: float, name: str = "digits_cnn", ks=(1, 16, 64)):
    new, old = (build(lambda: landscape.make_problem(name), w) for w in (False, True))
    flops = 3 * new.flops_per_point()
    peak = mm_rate("cpu", min_seconds=1.0)
    print(f"{name}: torch.mm {peak:.1f} GFLOP/s (CPU), useful FLOPs a point {flops / 1e6:.1f} M", flush=True)
    print("| BatchNorm | K | without | batched (wide) | loop over the module | torch.func | loop / batched "
          "| of matmul rate |")
    for policy in ("recompute", "frozen"):
        new.bn = old.bn = policy
        for k in ks:
            thetas = new.init(torch.Generator().manual_seed(0), n=k)
            ways = {"without": lambda: old.loss_and_grad(thetas), "batched": lambda: new.loss_and_grad(thetas),
                    "loop": _loop(new, thetas, train=policy == "recompute"), "torch.func": _generic(new, thetas)}
            b = {w: v * 1e6 for w, v in best_of(ways, rounds, seconds, k).items()}
            print(f"| {policy} | {k} | {b['without']:,.0f} | {b['batched']:,.0f} | {b['loop']:,.0f} "
                  f"| {b['torch.func']:,.0f} | {b['loop'] / b['batched']:.2f} | {100 * flops / b['batched'] / 1e3 / peak:.0f}% |",
                  flush=True)
    print(f"torch.mm at the end {mm_rate('cpu', min_seconds=1.0):.1f} GFLOP/s")


def real_cnn(rounds: int, seconds: float):
    from landscape.bench import real_cnn as make

    new, old = build(make, False), build(make, True)
    theta = new.init(torch.Generator().manual_seed(0), n=1)
    model = copy.deepcopy(new.module())
    x, y = new.data("train")

    def loop():
        torch.nn.utils.vector_to_parameters(theta[0], model.parameters())
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    a, b = new.loss_and_grad(theta), old.loss_and_grad(theta)
    gap = float((a[1] - b[1]).abs().max() / b[1].abs().max())
    ways = {"without": lambda: old.loss_and_grad(theta), "batched": lambda: new.loss_and_grad(theta), "loop": loop}
    best = best_of(ways, rounds, seconds, 1)
    print(f"real_cnn, CPU s a gradient: without {best['without']:.3f}, batched {best['batched']:.3f}, module loop "
          f"(whole split) {best['loop']:.3f}; losses equal: {bool(a[0] == b[0])}, gradients {gap:.1e} apart (float32)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--what", choices=("cnn", "real"), default="cnn")
    ap.add_argument("--problem", default="digits_cnn")
    ap.add_argument("--ks", default="1,16,64")
    args = ap.parse_args()
    torch.set_num_threads(1)
    landscape.keep_freed_memory()
    if args.what == "real":
        real_cnn(args.rounds, args.seconds)
    else:
        conv_table(args.rounds, args.seconds, args.problem, [int(k) for k in args.ks.split(",")])


if __name__ == "__main__":
    main()
