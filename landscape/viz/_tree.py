"""The disconnectivity graph (merge tree) of a set of minima, and its drawing.

Input, as the valley analysis produces it: minima with their losses, and merges — a pair of
minima and the level at which a certified path joins them (its max loss). Sweeping the level u
upwards, each minimum appears at its loss and valleys fuse at merge levels (Becker & Karplus,
J. Chem. Phys. 1997; the merge tree of the sublevel sets {L ≤ u}). A valley at level u is
spurious when its lowest loss is above the global minimum plus a tolerance (Venturi, Bandeira &
Bruna, JMLR 2019), by default the rule of the valley reports (:func:`landscape.valleys.spurious_tolerance`).

A merge says what joins two valleys (its path's certificate: proven by a bound, or checked on a dense
grid); nothing below it says they are apart. Below a merge bar the two valleys were only *not joined*
(no path found), so a count read off the tree is an upper bound, unless separations proven by the
problem (``separations``, :mod:`landscape.valleys.separation`) cover every pair of valleys at that level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from networkx.utils import UnionFind

from .._errors import LandscapeError
from ..valleys.graph import proven_spurious, spurious_tolerance


@dataclass
class MergeTree:
    """A disconnectivity graph laid out for drawing.

    Attributes
    ----------
    losses : dict of str to float
        Each minimum's loss.
    merges : list of (str, str, float)
        The merges that joined two valleys, in increasing level (redundant ones dropped).
    x : dict of str to float
        Horizontal position of each minimum: a permutation of 0 … M−1 in which every valley is a
        contiguous run.
    nodes : list of dict
        Each node of the tree: ``level``, ``x``, ``members`` (minima below it), ``parent`` (index or None),
        and for a merge ``certificate`` (``"bound"``, ``"grid"``, or None when the merges did not say).
        Leaves come first (one per minimum, at its loss).
    """

    losses: dict
    merges: list
    x: dict
    nodes: list = field(default_factory=list)

    def valleys_at(self, level: float) -> list[list[str]]:
        """The valleys at level u: minima with loss ≤ u grouped by merges at or below u."""
        below = {m for m, v in self.losses.items() if v <= level}
        uf = UnionFind(below)
        for a, b, u in self.merges:
            if u <= level and a in below and b in below:
                uf.union(a, b)
        return sorted((sorted(g, key=lambda m: self.x[m]) for g in uf.to_sets()), key=lambda g: self.x[g[0]])

    def pairs_not_joined(self, level: float, separations=()) -> int:
        """Pairs of valleys at level u neither joined by a merge at or below u nor proven apart.

        ``separations``: ``{"a", "b", "below"}`` dicts (a report's ``separations``) or ``(a, b, below)``:
        a and b lie in different valleys at every u < below. Zero means the count at u is exact.
        """
        valleys, apart = self._apart(level, separations)
        return len(valleys) * (len(valleys) - 1) // 2 - len(apart)

    def _apart(self, level: float, separations) -> tuple[list, set]:
        """The valleys at u and the pairs ``(a, b)``, a < b, of them (indices) that ``separations`` prove apart."""
        valleys = self.valleys_at(level)
        where = {m: k for k, g in enumerate(valleys) for m in g}
        apart = set()
        for a, b, below in _normalize_separations(separations):
            if a in where and b in where and where[a] != where[b] and level < below:
                apart.add((min(where[a], where[b]), max(where[a], where[b])))
        return valleys, apart

    def spurious_at(self, level: float, *, tol: float | None = None) -> list[list[str]]:
        """The valleys at level u whose lowest loss is above the global minimum + the spurious tolerance
        (``tol``, or :func:`landscape.valleys.spurious_tolerance` of the global minimum when None): no merge
        joins them to a global minimum; spurious if apart (:meth:`spurious_at_least`)."""
        best = min(self.losses.values())
        tol = spurious_tolerance(best, tol)
        return [g for g in self.valleys_at(level) if min(self.losses[m] for m in g) > best + tol]

    def spurious_at_least(self, level: float, *, tol: float | None = None, separations=()) -> int:
        """How many valleys at u are proven spurious: apart from every valley holding a global minimum, and from
        each other (as :meth:`landscape.ValleyGraph.spurious_known` counts them)."""
        valleys, apart = self._apart(level, separations)
        stranded = self.spurious_at(level, tol=tol)
        return proven_spurious(len(valleys), [k for k, g in enumerate(valleys) if g in stranded], apart)[1]


def _normalize_separations(separations):
    out = []
    for item in separations or ():
        if isinstance(item, Mapping):
            out.append((str(item["a"]), str(item["b"]), float(item["below"])))
        else:
            a, b, below = item[:3]
            out.append((str(a), str(b), float(below)))
    return out


def _certificates(merges) -> dict:
    """The certificate of each merge given as a dict (``"bound"`` or ``"grid"``), by its pair and level."""
    out = {}
    for item in merges:
        if isinstance(item, Mapping) and item.get("certificate") and item.get("pair") is not None:
            a, b = (str(p) for p in item["pair"])
            out[(a, b, float(item["level"]))] = str(item["certificate"])
    return out


def _normalize_merges(merges, names):
    out = []
    for i, item in enumerate(merges):
        if isinstance(item, Mapping):
            pair, level = item.get("pair"), item.get("level")
        elif len(item) == 3:
            pair, level = item[:2], item[2]
        elif len(item) == 2:
            pair, level = item
        else:
            pair, level = None, None
        if pair is None or len(pair) != 2 or level is None:
            raise LandscapeError(f"merge {i}: {item!r} must be (a, b, level), ((a, b), level) or "
                                 "{\"pair\": [a, b], \"level\": u}")
        a, b = (str(p) for p in pair)
        for m in (a, b):
            if m not in names:
                raise LandscapeError(f"merge {i} names {m!r}, which is not among the minima {sorted(names)}")
        level = float(level)
        if not math.isfinite(level):
            raise LandscapeError(f"merge {i} of {a!r} and {b!r} has level {level}; give a finite level")
        out.append((a, b, level))
    return out


def merge_tree(minima: Mapping[str, float], merges) -> MergeTree:
    """Build the merge tree of minima joined at merge levels.

    Parameters
    ----------
    minima : dict of str to float
        Each minimum's loss.
    merges : iterable
        ``(a, b, level)``, ``((a, b), level)`` or ``{"pair": [a, b], "level": u}``: minima a and b
        are joined by a path whose max loss is ``level``. Merges of minima already joined at a lower
        level add nothing (a graph of all pairwise barriers may be given). A dict's ``certificate``
        (a valley report's merges have one) is kept on the merge's node.

    Raises
    ------
    LandscapeError
        For unknown minima, non-finite values, or a merge below the loss of one of its minima
        (a path is never lower than its endpoints).
    """
    losses = {str(k): float(v) for k, v in minima.items()}
    if not losses:
        raise LandscapeError("no minima to draw a merge tree of")
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise LandscapeError(f"minima {bad} have non-finite losses")
    merges = list(merges)
    certificates = _certificates(merges)
    merges = sorted(_normalize_merges(merges, losses), key=lambda m: m[2])
    for a, b, u in merges:
        if u < max(losses[a], losses[b]) - 1e-12 * max(1.0, abs(u)):
            raise LandscapeError(f"the merge of {a!r} and {b!r} at level {u:.6g} is below the loss of one of them "
                                 f"({losses[a]:.6g}, {losses[b]:.6g}); a path is never lower than its endpoints")
    # nodes: leaves first, then one per effective merge
    names = sorted(losses, key=lambda m: (losses[m], m))
    nodes = [{"level": losses[m], "members": [m], "children": [], "parent": None} for m in names]
    root = {m: i for i, m in enumerate(names)}  # minimum -> index of the top node of its valley
    kept = []
    for a, b, u in merges:
        ra, rb = root[a], root[b]
        if ra == rb:
            continue
        lo, hi = sorted((ra, rb), key=lambda r: (min(losses[m] for m in nodes[r]["members"]), r))
        node = {"level": u, "members": nodes[lo]["members"] + nodes[hi]["members"], "children": [lo, hi],
                "parent": None, "certificate": certificates.get((a, b, u))}
        nodes.append(node)
        k = len(nodes) - 1
        nodes[lo]["parent"] = nodes[hi]["parent"] = k
        for m in node["members"]:
            root[m] = k
        kept.append((a, b, u))
    # leaf order: depth first from the roots, lowest valley first; a node sits over its children's middle
    tops = sorted({root[m] for m in names}, key=lambda r: (min(losses[m] for m in nodes[r]["members"]), r))
    order: list[str] = []

    def walk(k):
        if not nodes[k]["children"]:
            order.append(nodes[k]["members"][0])
        for c in nodes[k]["children"]:
            walk(c)

    for t in tops:
        walk(t)
    x = {m: float(i) for i, m in enumerate(order)}

    def place(k):
        if not nodes[k]["children"]:
            nodes[k]["x"] = x[nodes[k]["members"][0]]
        else:
            xs = [place(c) for c in nodes[k]["children"]]
            nodes[k]["x"] = (min(xs) + max(xs)) / 2
        return nodes[k]["x"]

    for t in tops:
        place(t)
    for n in nodes:
        del n["children"]
    return MergeTree(losses, kept, x, nodes)


def _label(name: str) -> str:
    """A minimum's name as a tick label: a file's stem (``minima/seed3.pt`` -> ``seed3``)."""
    return name.rsplit("/", 1)[-1].removesuffix(".pt")


def plot_disconnectivity(minima: Mapping[str, float], merges, *, level: float | None = None, tol: float | None = None,
                         log: bool = False, ax=None, title=None, separations=()):
    """Draw the disconnectivity graph: each minimum a vertical line from its loss up to where its valley
    merges, merges as horizontal bars; at level u the valleys are counted. Valleys holding no global minimum
    are red: solid where ``separations`` prove them apart from every global minimum (spurious), dotted where
    they are only not joined to one (spurious if apart; the count is then "at most").

    A merge bar is solid when its path is proven below its level by a bound, dashed when it was checked
    on a dense grid (the merges' ``certificate``). Below a bar the two valleys were not joined — no path
    found, which does not prove them apart — so the count at u is titled "at most" unless
    ``separations`` prove every two valleys at u apart.

    Parameters
    ----------
    minima, merges
        See :func:`merge_tree`.
    level : float, optional
        The level u to cut at (a dashed line; valley and spurious-valley counts in the title).
    separations : iterable, optional
        A valley report's ``separations`` (``{"a", "b", "below"}``): pairs proven in different valleys below
        ``below``.
    tol : float, optional
        A valley is spurious when its lowest loss exceeds the global minimum by more than ``tol``
        (default: :func:`landscape.valleys.spurious_tolerance`, the valley reports' rule).
    log : bool
        Log-scale loss axis.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ._charts import figure

    tree = merge_tree(minima, merges)
    if ax is None:
        fig = figure(max(5.0, 0.45 * len(tree.losses) + 2) + 3.2, 4.8)  # + the legend, right of the axes
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    levels = [n["level"] for n in tree.nodes]
    top = max(levels) + 0.08 * (max(levels) - min(levels) or 1.0)
    if level is not None:
        top = max(top, level * 1.05 if level > 0 else level + 0.05)
    best = min(tree.losses.values())
    above = spurious_tolerance(best, tol)
    stranded = {m for m, loss in tree.losses.items() if loss > best + above}  # no global minimum among them
    apart = {frozenset((a, b)): below for a, b, below in _normalize_separations(separations)}
    drawn = set()
    for n in tree.nodes:
        upper = tree.nodes[n["parent"]]["level"] if n["parent"] is not None else top
        red = set(n["members"]) <= stranded  # no global minimum in it, from its lowest point to where it merges
        # spurious over that span when one member is proven apart from every global minimum below the span's top
        proven = red and any(all(apart.get(frozenset((a, g)), -math.inf) >= upper for g in set(tree.losses) - stranded)
                             for a in n["members"])
        if red:
            drawn.add(proven)
        ax.plot([n["x"], n["x"]], [n["level"], upper], color="tab:red" if red else "black", lw=2.0 if red else 1.4,
                ls=":" if red and not proven else "-")
        if n["parent"] is not None:
            px = tree.nodes[n["parent"]]["x"]
            grid = tree.nodes[n["parent"]].get("certificate") == "grid"
            ax.plot([n["x"], px], [upper, upper], color="black", lw=1.4, ls="--" if grid else "-")
    for m, xm in tree.x.items():
        ax.plot([xm], [tree.losses[m]], "o", ms=5, color="tab:red" if m in stranded else "tab:blue")
    names = [_label(m) for m in tree.x]
    ax.set_xticks(list(tree.x.values()), names, rotation=60 if max(map(len, names)) > 3 else 0, ha="right",
                  fontsize="small")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="black", marker="o", mfc="tab:blue", mec="tab:blue",
                      label="valley with a global minimum")]
    if True in drawn:
        handles.append(Line2D([], [], color="tab:red", marker="o", lw=2.0,
                              label=f"spurious valley (lowest loss > global + {above:.2g},\nproven apart)"))
    if False in drawn:
        handles.append(Line2D([], [], color="tab:red", marker="o", lw=2.0, ls=":",
                              label=f"no global minimum (lowest loss > global + {above:.2g}),\nnone joined to it: "
                                    "spurious if apart"))
    kinds = {n.get("certificate") for n in tree.nodes if len(n["members"]) > 1}
    if "bound" in kinds:
        handles.append(Line2D([], [], color="black", label="merge: path proven below it (bound)"))
    if "grid" in kinds:
        handles.append(Line2D([], [], color="black", ls="--", label="merge: path checked on a dense grid"))
    if len(tree.nodes) > len(tree.losses):
        handles.append(Line2D([], [], color="none", label="below a merge: no path found\n(separation not proven)"))
    if level is not None:
        handles.append(Line2D([], [], color="gray", ls="--", label=f"u = {level:.4g}"))
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_ylabel("loss level u")
    if log:
        ax.set_yscale("log")
    heading = title or "disconnectivity graph"
    if level is not None:
        valleys = tree.valleys_at(level)
        ax.axhline(level, ls="--", color="gray", lw=1)
        bound = " at most" if tree.pairs_not_joined(level, separations) else ""
        n_spurious = len(tree.spurious_at(level, tol=tol))
        unproven = " at most" if tree.spurious_at_least(level, tol=tol, separations=separations) < n_spurious else ""
        heading += f": {len(valleys)} valleys{bound} at u = {level:.4g}, {n_spurious} spurious{unproven}"
    ax.set_title(heading, fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    return fig
