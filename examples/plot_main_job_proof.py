"""
The main job: two digits minima and a proven path
=================================================

The set-up's main job, in Python: train two minima of the default problem (a 64-W-W-10 MLP on
scikit-learn's digits) as one batch, connect them by Dynamic String Sampling at the default level (10%
above the worse endpoint), and look at what the answer guarantees. For a plain MLP the certificate is a
**proof** (``certificate == "bound"``): the loss is ≤ the bound at every point of the path, not only at
the points that were evaluated. The straight segment between the same minima climbs far above the level.

The command line does the same: ``landscape train --seeds 0,1 -o minima/`` then
``landscape connect minima/digits_mlp_w100_s0.pt minima/digits_mlp_w100_s1.pt -o path.pt``.
"""

import os

import torch

import landscape

# the main job's size; the documentation's test build runs a narrow net for fewer steps
width, steps = (16, 400) if os.environ.get("LANDSCAPE_GALLERY_QUICK") == "1" else (100, 2000)

problem = landscape.make_problem("digits_mlp", width=width)
minima = landscape.train(problem, seeds=[0, 1], steps=steps)
print(f"D = {problem.dim:,}; losses {minima.losses.tolist()}; converged {minima.converged.tolist()}")

a, b = minima.thetas
path = landscape.connect(problem, a, b, generator=torch.Generator().manual_seed(0))
straight = landscape.connect(problem, a, b, method="linear", level=path.level)
print(f"string: {path.status} at u = {path.level:.4g}, max loss {path.max_loss:.4g}, "
      f"normalized length {path.normalized_length:.3f}, {path.n_beads} beads, {path.evaluations:,} evaluations")
print(f"straight segment: max loss {straight.max_loss:.4g} ({straight.status} at u = {path.level:.4g})")
print(f"certificate: {path.certificate}; the loss is <= {path.bound:.6g} at every point of the path"
      if path.certificate == "bound" else f"certificate: {path.certificate}, spacing {path.spacing}")

# %%
# The loss along both paths (log scale): the string stays under the level everywhere, the straight
# segment crosses a ridge.

import matplotlib.pyplot as plt

import landscape.viz

fig, ax = plt.subplots(figsize=(6.5, 3.5), layout="constrained")
landscape.viz.plot_path_losses({"string (DSS)": path, "straight": straight}, problem, level=path.level, log=True, ax=ax)
