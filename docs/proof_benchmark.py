"""The proof against the dense check on a digits_cnn pair with frozen BatchNorm (docs/benchmarks.md, bench-proof).

Trains two minima with the ``frozen`` policy, takes the straight path between them at a level 5% above
its dense maximum (a margin the proof can use), then certifies that path three alternating times each
way (``certificate="grid"`` and ``"auto"``) and prints evaluations, seconds and pieces. Run from the
repository root::

    python docs/proof_benchmark.py --width 4 --depth 2 --n-train 256
"""

import argparse
import time


import landscape


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    problem = landscape.make_problem("digits_cnn", width=args.width, depth=args.depth, n_train=args.n_train)
    problem.bn = "frozen"
    minima = landscape.train(problem, [0, 1], steps=args.steps, lr=0.01)
    a, b = minima.thetas
    path = landscape.connect(problem, a, b, method="linear", level=1e9, certificate="grid")
    level = 1.05 * path.max_loss
    print(f"D={problem.dim} N={args.n_train} endpoints {minima.losses.tolist()} straight path max loss "
          f"{path.max_loss:.6g}, level {level:.6g}")
    for _ in range(args.repeats):
        for certificate in ("grid", "auto"):
            before = path.evaluations
            clock = time.perf_counter()
            out = landscape.certify(problem, path, level, certificate=certificate)
            seconds = time.perf_counter() - clock
            proof = out.info.get("proof") or {}
            print(f"{certificate:5s} -> {out.certificate:5s} {out.status:10s} {seconds:6.2f} s  "
                  f"evaluations {out.evaluations - before:5d}  pieces {proof.get('pieces', 0):5d}  "
                  f"rounds {proof.get('rounds', 0)}  bound {out.bound}")


if __name__ == "__main__":
    main()
