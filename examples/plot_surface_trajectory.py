"""
A rendered surface with trajectories
====================================

Two minima of a small MLP on the two moons, trained with their trajectories recorded, drawn on the plane
through both minima and the string's farthest bead: the loss surface warped by loss and coloured, the
sublevel set below u shaded, the minima as spheres, each gradient-descent trajectory as a line from its
start (a cube) to its minimum, and the path as a tube at its own losses. Whatever lies off the plane is
drawn at its projection, and the legend says how far off it is.

The command line: ``landscape train moons_mlp --seeds 0,1 -o m/``, ``landscape connect ... -o ab.pt``,
``landscape render m/*.pt --path ab.pt -o view.png``.
"""

import os

import torch

import landscape
import landscape.viz

quick = os.environ.get("LANDSCAPE_GALLERY_QUICK") == "1"
problem = landscape.make_problem("moons_mlp")
minima = landscape.train(problem, seeds=[0, 1], steps=300 if quick else 2000, lr=0.01)
a, b = minima.thetas
path = landscape.connect(problem, a, b, generator=torch.Generator().manual_seed(0))
print(f"D = {problem.dim}; losses {[round(v, 5) for v in minima.losses.tolist()]}; path {path.status}, "
      f"max loss {path.max_loss:.4g} at u = {path.level:.4g}, normalized length {path.normalized_length:.3f}")

scene = landscape.build_scene(problem, minima={"seed 0": a, "seed 1": b}, paths={"string": path},
                              trajectories={f"seed {s}": t for s, t in zip(minima.seeds, minima.trajectories)},
                              grid=(25, 25) if quick else (41, 41))
plotter, meshes = landscape.viz.plot_scene(scene, log=True, level=path.level, window_size=(900, 650))
print("\n".join(text for text, _colour, _symbol in meshes.legend))  # the legend drawn in the view
plotter.show()
