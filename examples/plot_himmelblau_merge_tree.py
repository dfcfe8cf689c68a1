"""
Himmelblau's function: valleys and the merge tree
=================================================

Himmelblau's function has four minima at loss 0 and saddles at known levels. ``find_valleys`` builds the
merge tree from trained minima alone — certified paths between them, refined where two valleys first
meet — and the merge levels land on the analytic saddles (13.3119, 67.7192, 104.0152). On a 2-D problem
the count can also be read off a fine grid of the sublevel set (``grid_valleys``), the ground truth the
tests use: both counts agree at every level.
"""

import os

import torch

import landscape

quick = os.environ.get("LANDSCAPE_GALLERY_QUICK") == "1"
problem = landscape.make_problem("himmelblau")
minima = landscape.train(problem, seeds=range(8 if quick else 16))
graph, report = landscape.find_valleys(problem, minima.thetas, names=[f"seed {s}" for s in minima.seeds],
                                       generator=torch.Generator().manual_seed(0))

levels = [row["level"] for row in report["levels"]]
for row, above in zip(report["levels"], levels[1:] + [1.1 * levels[-1]]):
    between = (row["level"] + above) / 2  # the count holds from this merge up to the next one
    grid = landscape.grid_valleys(problem, between, minima=minima.thetas, shape=(201, 201) if quick else (401, 401))
    bound = " at most" if row["count_is_upper_bound"] else ""
    print(f"from u = {row['level']:9.4f}: {row['n_valleys']}{bound} valley(s); "
          f"a {grid.losses.shape[0]}² grid of the set at u = {between:.2f}: {grid.n_valleys}")

# %%
# The merge tree (disconnectivity graph): a merge proven by a bound is drawn solid, one checked on a grid
# dashed; the title says when a count is only an upper bound.

import matplotlib.pyplot as plt

import landscape.viz

fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
landscape.viz.plot_disconnectivity(report["minima"], report["merges"], ax=ax, separations=report["separations"])
