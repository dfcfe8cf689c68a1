"""
The explorer: a level slider in the browser
===========================================

``landscape explore`` serves a page with a level slider over the landscape: the sublevel set {L ≤ u}
shaded, the minima coloured by their valley at u, the merge tree with a line at u, and each path lit when
its certified max loss is ≤ u. Here the explorer of eight trained minima of Himmelblau's function and one
path between two of them is built in Python (what ``landscape explore hb/*.pt --path hb_path.pt`` serves),
the level is moved as the slider moves it, and the counts the page would show are printed. The 3-D view is
rendered on the server, off-screen, and reaches the browser as images; below is that image.

The picture of the whole page in a browser is ``docs/explore.png``, made in headless Chromium by
``python docs/explore_screenshot.py`` with the commands of :doc:`/guide/explorer`.
"""

import os
import tempfile
from pathlib import Path

import landscape
import landscape.viz
from landscape.minima import train_checkpoints

quick = os.environ.get("LANDSCAPE_GALLERY_QUICK") == "1"
folder = Path(tempfile.mkdtemp())
problem = landscape.make_problem("himmelblau")
rows = train_checkpoints(problem, range(8), folder / "hb", progress=False)
files = [row["file"] for row in rows]
a, b = (landscape.load_checkpoint(files[i]).theta for i in (4, 6))
path = landscape.connect(problem, a, b, level=75)
landscape.save_path(folder / "hb_path.pt", problem, path)
print(f"path s4 -> s6: {path.status} at u = 75, max loss {path.max_loss:.2f}, certificate {path.certificate}")

app = landscape.viz.explore(files, paths=[folder / "hb_path.pt"], level=80, grid=(41, 41) if quick else (101, 101))
for u in (5, 40, 120, 80):
    app.goto(u)  # as the slider does: no loss is evaluated, the stored surface is clipped again
    print(f"u = {u:3d}: {app.state.counts}")

# The 3-D view, left at u = 80, is what the server renders off-screen and sends to the page: the gallery
# shows its pyvista plotter (app.view.plotter) below.
