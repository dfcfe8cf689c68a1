"""Do a grokked and a memorizing minimum of the same train loss lie in one valley? (modadd_transformer)

Grokked minima: Adam with the optimiser's own (decoupled, AdamW) weight decay, then the polish on the loss itself
(no decay term), so each is a checked minimum of the λ = 0 train loss; test accuracy before and after the polish.
Memorizing minima: the same problem trained without the decay. Then ``landscape.connect`` between a grokked and a
memorizing minimum, and between two grokked ones, at the default level and the given levels, each with what backs
its answer (a proof by bounds, or the dense grid with its spacing; "not found" is never "separate"), and the test
accuracy along every connecting path (the train loss stays below the level all along it).

    python benchmarks/grokking_valley.py [--grokked 0,1] [--memorizers 1] [--levels 1e-4,1e-2]

The same with the CLI (one thread, ``-p train_fraction=0.6`` on every command)::

    landscape train modadd_transformer -p train_fraction=0.6 --seeds 0..3 --decoupled-decay 2 --lr 3e-3 \\
        --steps 12000 -o grok
    landscape train modadd_transformer -p train_fraction=0.6 --seeds 0..3 --lr 3e-3 --steps 3000 -o mem
    landscape connect grok/modadd_transformer_s0.pt mem/modadd_transformer_s1.pt [--level 1e-4]
"""

from __future__ import annotations

import argparse
import time

import torch

import landscape
from landscape.minima import polish


def seeds(text):
    return [int(s) for s in text.split(",") if s]


def accuracies(problem, thetas, split="test"):
    return [f"{100 * float(a):.1f}%" for a in problem.accuracy(thetas, split)]


def along(problem, path, per_segment=8):
    """Test accuracy and the largest train loss at ``per_segment`` points a segment of the path's polyline."""
    pts = path.points.to(torch.float32)
    t = torch.linspace(0, 1, per_segment + 1, dtype=pts.dtype)[:-1, None]
    dense = torch.cat([pts[i] + t * (pts[i + 1] - pts[i]) for i in range(len(pts) - 1)] + [pts[-1:]])
    acc = problem.accuracy(dense, "test")
    return acc, problem.accuracy(dense, "train").min(), problem.loss(dense).max()


def backing(path):
    if path.certificate == "bound" and path.bound is not None:
        return f"proven <= {path.bound:.4g}"
    if path.certificate == "grid":
        return f"grid check, spacing {path.spacing:.3g}"
    return str(path.certificate)


def connect(problem, a, b, name, level, proof_seconds):
    clock = time.process_time()
    path = landscape.connect(problem, a, b, level=level, proof_seconds=proof_seconds)
    seconds = time.process_time() - clock
    text = (f"{name:<26} level {path.level:<10.4g} {path.status:<10} max loss {path.dense_max_loss:.4g}  "
            f"{backing(path)}  normalized length {path.normalized_length:.3f}  "
            f"{seconds:.1f} CPU s")
    if path.status == "connected":
        acc, train_acc, top = along(problem, path)
        text += (f"\n{'':<26} along it: test accuracy {100 * acc[0]:.1f}% -> {100 * acc[-1]:.1f}% "
                 f"(min {100 * acc.min():.1f}%), train accuracy >= {100 * train_acc:.1f}%, train loss <= {top:.3g}")
    print(text, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grokked", type=seeds, default=[0, 1], help="Seeds trained with the decay.")
    parser.add_argument("--memorizers", type=seeds, default=[1], help="Seeds trained without it.")
    parser.add_argument("--train-fraction", type=float, default=0.6)
    parser.add_argument("--decay", type=float, default=2.0, help="Decoupled weight decay of the grokked seeds.")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--steps", type=int, default=12000, help="Adam steps of the grokked seeds.")
    parser.add_argument("--memorizer-steps", type=int, default=3000)
    parser.add_argument("--levels", default="1e-4,1e-2", help="Levels besides the default one.")
    parser.add_argument("--proof-seconds", type=float, default=300.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem = landscape.make_problem("modadd_transformer", train_fraction=args.train_fraction)
    print(f"{problem!r}; {problem.n_samples('train')} training pairs, {problem.n_samples('test')} test pairs")

    clock = time.process_time()
    grok = landscape.train(problem, args.grokked, lr=args.lr, steps=args.steps, decoupled_decay=args.decay,
                           polish_steps=0)
    print(f"grokked seeds {args.grokked} (decoupled decay {args.decay:g}, {args.steps} steps, "
          f"{time.process_time() - clock:.1f} CPU s): loss {[f'{x:.3g}' for x in grok.losses.tolist()]}, "
          f"|grad L| {[f'{x:.3g}' for x in grok.grad_norms.tolist()]}, "
          f"test accuracy {accuracies(problem, grok.thetas)}")
    clock = time.process_time()
    polished = polish(problem, grok.thetas)
    print(f"  after the polish on the loss ({time.process_time() - clock:.1f} CPU s, steps {polished.steps.tolist()}): "
          f"loss {[f'{x:.3g}' for x in polished.losses.tolist()]}, "
          f"|grad L| {[f'{x:.3g}' for x in polished.grad_norms.tolist()]}, minima {polished.converged.tolist()}, "
          f"train accuracy {accuracies(problem, polished.thetas, 'train')}, "
          f"test accuracy {accuracies(problem, polished.thetas)}")
    clock = time.process_time()
    mem = landscape.train(problem, args.memorizers, lr=args.lr, steps=args.memorizer_steps)
    print(f"memorizing seeds {args.memorizers} (no decay, {args.memorizer_steps} steps, "
          f"{time.process_time() - clock:.1f} CPU s): loss {[f'{x:.3g}' for x in mem.losses.tolist()]}, "
          f"minima {mem.converged.tolist()}, test accuracy {accuracies(problem, mem.thetas)}")

    levels = [None] + [float(x) for x in args.levels.split(",") if x]
    g, m = polished.thetas, mem.thetas
    for level in levels:
        for j, seed in enumerate(args.memorizers):
            connect(problem, g[0], m[j], f"grok s{args.grokked[0]} - mem s{seed}", level, args.proof_seconds)
        if len(args.grokked) > 1:
            connect(problem, g[0], g[1], f"grok s{args.grokked[0]} - grok s{args.grokked[1]}", level,
                    args.proof_seconds)


if __name__ == "__main__":
    main()
