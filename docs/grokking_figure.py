"""Make docs/grokking_path.png: along a path from a grokked to a memorizing minimum of modadd_transformer, the train
loss (below the level the path was proven under) and the test accuracy and loss (falling from the grokked value to
the memorizer's); the straight segment between the same two minima for comparison.

    landscape train modadd_transformer -p train_fraction=0.6 --seeds 2 --decoupled-decay 2 --lr 3e-3 --steps 12000 -o grok
    landscape train modadd_transformer -p train_fraction=0.6 --seeds 1 --lr 3e-3 --steps 3000 -o mem
    landscape connect grok/modadd_transformer_s2.pt mem/modadd_transformer_s1.pt --proof-seconds 400 -o grok_mem.pt
    python docs/grokking_figure.py grok_mem.pt -o docs/grokking_path.png

Every value is evaluated here in float64 at ``--per-segment`` points of each of the path's straight pieces.
"""

from __future__ import annotations

import argparse

import torch

import landscape


def dense(points: torch.Tensor, per_segment: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points of the polyline at ``per_segment`` steps a piece, and their arc length from the start (0 to 1)."""
    t = torch.linspace(0, 1, per_segment + 1, dtype=points.dtype)[:-1, None]
    pts = torch.cat([points[i] + t * (points[i + 1] - points[i]) for i in range(len(points) - 1)] + [points[-1:]])
    arc = torch.cat([torch.zeros(1, dtype=pts.dtype), (pts[1:] - pts[:-1]).norm(dim=1).cumsum(0)])
    return pts, arc / arc[-1]


def profile(problem, pts):
    return {"train loss": problem.loss(pts), "test loss": problem.loss(pts, split="test"),
            "test accuracy": problem.accuracy(pts, "test"), "train accuracy": problem.accuracy(pts, "train")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", help="A path file written by landscape connect.")
    parser.add_argument("-o", "--out", default="docs/grokking_path.png")
    parser.add_argument("--per-segment", type=int, default=16)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path, problem, _ = landscape.load_path(args.path)  # the file's claim is checked again on loading
    pts, arc = dense(path.points.to(torch.float64), args.per_segment)
    line, t = dense(torch.stack([path.points[0], path.points[-1]]).to(torch.float64), 200)
    along, straight = profile(problem, pts), profile(problem, line)
    claim = path.info.get("file_claim", {})
    proof = (f"proven ≤ {claim['bound']:.4g} by connect" if claim.get("certificate") == "bound" and claim.get("bound")
             else f"{path.certificate} check")

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6.2), sharex=True, constrained_layout=True)
    top.semilogy(arc, along["train loss"], color="C0", label=f"train loss along the path ({proof})")
    top.semilogy(t, straight["train loss"], color="C0", ls=":", label="train loss, straight segment")
    top.axhline(path.level, color="k", lw=0.8, ls="--", label=f"level u = {path.level:.4g}")
    top.semilogy(arc, along["test loss"], color="C3", label="test loss along the path")
    top.set_ylabel("loss (cross-entropy)")
    top.legend(fontsize=8, loc="center right")
    bottom.plot(arc, 100 * along["test accuracy"], color="C3", label="test accuracy along the path")
    bottom.plot(t, 100 * straight["test accuracy"], color="C3", ls=":", label="test accuracy, straight segment")
    bottom.plot(arc, 100 * along["train accuracy"], color="C0", label="train accuracy along the path")
    bottom.set_ylabel("accuracy (%)")
    bottom.set_xlabel("position along the path (fraction of its length; the straight segment by its own)")
    bottom.set_ylim(-3, 103)
    bottom.legend(fontsize=8, loc="center left")
    top.set_title(f"{problem.name}, train_fraction {problem.params.get('train_fraction')}: "
                  "a grokked minimum (left) to a memorizing one (right)", fontsize=10)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}: train loss <= {float(along['train loss'].max()):.4g} along the path, "
          f"test accuracy {100 * float(along['test accuracy'][0]):.1f}% -> {100 * float(along['test accuracy'][-1]):.1f}%")


if __name__ == "__main__":
    main()
