"""
Spurious valleys against width
==============================

A small version of the built-in study ``spurious_valleys`` (Venturi, Bandeira & Bruna, JMLR 2019):
one-hidden-layer ReLU students fitting 16 points labelled by a wider ReLU teacher. For each width and
data set, several seeds are trained and ``find_valleys`` counts the valleys of the sublevel sets; a valley
is *spurious* when its best loss is above the global best. What a search sees is a valley no path joined to
a global minimum: spurious only if the two are apart, which this problem cannot prove (no search proves it),
so the figures below are upper bounds (``spurious_proven_any``, the proven ones, is 0 here). Narrow students
have such valleys; wider ones join all their minima into one valley. The study is data
(``data/studies/spurious_valleys.toml``); ``override_study`` shrinks its grid as
``landscape study run spurious_valleys --set ...`` does, and the run is resumable from its SQLite store.
"""

import os
import tempfile
from pathlib import Path

import landscape
from landscape.studies import override_study

quick = os.environ.get("LANDSCAPE_GALLERY_QUICK") == "1"
widths = [1, 4] if quick else [1, 2, 4]
study = override_study(landscape.load_study("spurious_valleys"), {
    "problem.width": widths, "problem.data_seed": [0] if quick else [0, 1], "steps": 2000, "seeds": [0, 1, 2, 3]})
store = Path(tempfile.mkdtemp()) / "spurious.sqlite"
landscape.run_study(study, store=store, workers=0, progress=False)

rows = landscape.study_results(study, store=store)
done = {w: [r["figures"] for r in rows if r["point"]["problem.width"] == w and r["status"] == "done"] for w in widths}
for r in rows:
    if r["status"] != "done":  # failures are data: recorded with their error, the study goes on
        print(f"task {r['point']} {r['status']}: {r['error']}")
for width, figures in done.items():
    stranded = sum(f["spurious_any"] > 0 for f in figures)
    print(f"width {width}: data sets with a valley not joined to a global minimum {stranded}"
          f"/{len(figures)}, most valleys at one level {max((f['n_valleys_max'] for f in figures), default='-')}")

# %%
# The fraction of data sets with a valley no path joined to a global minimum (spurious unless a path not
# found joins them) against width:

import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5.5, 3.2), layout="constrained")
shown = [w for w in widths if done[w]]
ax.plot(shown, [sum(f["spurious_any"] > 0 for f in done[w]) / len(done[w]) for w in shown], "o-")
ax.set(xscale="log", xlabel="width", ylabel="data sets with a valley\nnot joined to a global minimum",
       ylim=(-0.05, 1.05))
ax.set_xticks(widths, [str(w) for w in widths])
ax.minorticks_off()  # a log axis would also label 2×10⁰, 3×10⁰ between the widths
