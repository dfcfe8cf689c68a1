"""
The ring: a valley path around the hill
=======================================

The ``ring`` problem is an annular valley: its two minima sit on opposite sides of a hill of height 1.
The straight segment between them crosses the hill; Dynamic String Sampling (``method="string"``) finds a
path that goes round it, below the level u = 0.3, and its certificate says for which points that is
guaranteed. Any path below u is at least 1.236 times the chord (the closed-form bound for this level).
"""

import landscape

ring = landscape.make_problem("ring")
a, b = ring.minima.float()
paths = {method: landscape.connect(ring, a, b, method=method, level=0.3) for method in ("string", "linear")}
for method, path in paths.items():
    print(f"{method:7s} {path.status:10s} max loss {path.max_loss:.4f}  "
          f"length/chord {path.normalized_length:.3f}  certificate {path.certificate}")

# %%
# The loss along both paths, against the fraction of the way (matplotlib):

import matplotlib.pyplot as plt

import landscape.viz

fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
landscape.viz.plot_path_losses(paths, ring, level=0.3, ax=ax)

# %%
# The surface in 3-D (pyvista, off-screen), the paths as tubes at their own losses:

scene = landscape.build_scene(ring, minima={"a": a, "b": b}, paths=paths, grid=(61, 61))
plotter, _ = landscape.viz.plot_scene(scene, log=True, level=0.3, window_size=(800, 600))
plotter.show()
