"""A 51×51 filter-normalized random plane: ``landscape.evaluate_plane`` against the ``loss-landscapes``
package (``random_plane``), one thread, CPU time, interleaved in one run, best of three.

    pip install loss-landscapes   # not a dependency of landscape; only this comparison uses it
    python benchmarks/planes.py

Prints, per problem, the CPU seconds of each and their ratio. Both evaluate the same model on the same
training data with the same loss; the planes differ (each draws its own random directions), the work
does not: 2,601 full-batch losses.
"""

from __future__ import annotations

import time

import torch

import landscape

STEPS = 51


def cpu_seconds(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def main():
    torch.set_num_threads(1)
    landscape.keep_freed_memory()  # as the landscape command does (loss-landscapes gains from it too)
    try:
        import loss_landscapes
        import loss_landscapes.metrics
    except ImportError:
        raise SystemExit("this comparison needs the loss-landscapes package: pip install loss-landscapes") from None
    problems = {"quadratic_regression 1-4-4-1, 10,000 samples": landscape.make_problem("quadratic_regression",
                                                                                      n_train=10000),
                "digits_mlp 64-100-100-10": landscape.make_problem("digits_mlp")}
    losses = {"l1": torch.nn.L1Loss(), "cross_entropy": torch.nn.CrossEntropyLoss()}
    print(f"{'problem':<46} {'landscape s':>12} {'loss-landscapes s':>18} {'speedup':>8}")
    for name, problem in problems.items():
        theta = problem.init(torch.Generator().manual_seed(0))
        x, y = problem._splits["train"]
        model = problem.module_
        with torch.no_grad():  # the model at theta, for loss-landscapes (it perturbs the module's own weights)
            for (pname, p), value in zip(model.named_parameters(), problem.layout.unflatten(theta).values()):
                p.copy_(value)
        metric = loss_landscapes.metrics.Loss(losses[problem.loss_name], x, y)
        plane = landscape.make_plane("random", problem, theta, generator=torch.Generator().manual_seed(0))
        ours = cpu_seconds(lambda: landscape.evaluate_plane(problem, plane, grid=STEPS))
        theirs = cpu_seconds(lambda: loss_landscapes.random_plane(model, metric, distance=1, steps=STEPS,
                                                                  normalization="filter", deepcopy_model=True))
        print(f"{name:<46} {ours:>12.3f} {theirs:>18.3f} {theirs / ours:>7.2f}x")


if __name__ == "__main__":
    main()
