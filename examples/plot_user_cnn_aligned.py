"""
Your own CNN, connected and aligned
===================================

``examples/user_resnet.py`` writes a small ResNet as torchvision writes ``resnet18`` (``BasicBlock``,
BatchNorm, a 1×1 projection skip) and trains it with an ordinary torch loop. Its ``build`` function is a
problem factory: ``landscape.make_problem("user_resnet:build", ...)`` evaluates the module's own
function, K parameter vectors at a time, with BatchNorm statistics recomputed at every point.

Two seeds are trained and saved as plain ``state_dict`` files, as any torch code would; then the straight
segment between them is checked, the second network is aligned onto the first by weight matching (its
units permuted: the same function), and both are connected by a string.
"""

import os
import sys
import tempfile
from pathlib import Path

import torch

import landscape

here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(here))  # user_resnet.py sits beside this script
import user_resnet  # noqa: E402

quick = os.environ.get("LANDSCAPE_GALLERY_QUICK") == "1"
width, n_train, steps = (3, 96, 15) if quick else (4, 128, 30)

folder = Path(tempfile.mkdtemp())
files = []
for name, seed in (("a", 0), ("b", 1)):
    model = user_resnet.train(seed, width=width, n_train=n_train, steps=steps)  # plain torch: SGD, BatchNorm
    torch.save(model.state_dict(), folder / f"{name}.pt")
    files.append(folder / f"{name}.pt")

problem = landscape.make_problem("user_resnet:build", width=width, n_train=n_train)
a = landscape.load_checkpoint(files[0], problem=problem).theta
b = landscape.load_checkpoint(files[1], problem=problem).theta
print(f"D = {problem.dim:,}, BatchNorm policy {problem.bn!r}, endpoint losses "
      f"{float(problem.loss(a[None])[0]):.4f}, {float(problem.loss(b[None])[0]):.4f}")

aligned = landscape.align(problem, a, b, method="weight")
moved = aligned.summary()
print(f"weight matching moved {moved['moved_units']} units; distance to a "
      f"{moved['distance_before']:.3f} -> {moved['distance_after']:.3f}")
x = problem.data()[0]
with torch.no_grad():  # the aligned network computes the same logits as b
    same = torch.allclose(problem.to_module(aligned.theta)(x), problem.to_module(b)(x), atol=1e-5)
print("same function after alignment:", same)

path = landscape.connect(problem, a, aligned.theta, generator=torch.Generator().manual_seed(0))
print(f"string: {path.status} at u = {path.level:.4f}, max loss {path.max_loss:.4f}, "
      f"certificate {path.certificate} ({path.info['proof'].get('reason') or 'proof'})")

# %%
# The loss along the straight segment before and after alignment, and along the string:

import matplotlib.pyplot as plt

import landscape.viz

paths = {"straight, b as trained": landscape.connect(problem, a, b, method="linear", level=path.level),
         "straight, b aligned": landscape.connect(problem, a, aligned.theta, method="linear", level=path.level),
         "string, b aligned": path}
fig, ax = plt.subplots(figsize=(6.5, 3.5), layout="constrained")
landscape.viz.plot_path_losses(paths, problem, level=path.level, ax=ax)
