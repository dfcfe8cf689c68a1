"""Valleys of the sublevel sets Ω_u = {θ : L(θ) ≤ u}, seen through a sample of minima.

The valley graph has the minima as nodes and certified paths as edges (weight: the path's dense
max loss, the level from which the path connects its ends). At level u the valleys are the
connected components of the minima with loss ≤ u under the edges of weight ≤ u; a valley is
*spurious* when its best loss is above the global best by more than :func:`spurious_tolerance`
(Venturi, Bandeira & Bruna, JMLR 2019). Over all u this is the merge tree, or disconnectivity
graph (Becker & Karplus 1997; Wales 2003).

Two answers are honest in different ways. A merge is always witnessed by a certified path (proven by
a bound, or checked on a dense grid of known spacing). Two valleys reported separate mean only "no
path below u was found": unless the problem proves them apart (:mod:`.separation`), the count is an
upper bound, and each report row says so (:meth:`ValleyGraph.known`). So is the spurious count: a valley
no path joined to a global minimum is proven spurious only when proven apart from every valley holding
one (:meth:`ValleyGraph.spurious_known`). The search that builds the graph is in ``search.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
import torch
from networkx.utils import UnionFind

from .._errors import LandscapeError
from ..paths.path import Path
from ..problems.problem import Problem
from .separation import Separation


def pairwise_apart(ks, apart: set) -> list:
    """A subset of the indices ``ks`` proven pairwise apart (``apart`` holds pairs ``(a, b)``, a < b), found
    greedily, most-separated first: any such set bounds a count from below."""
    chosen: list = []
    for k in sorted(ks, key=lambda k: -sum(k in p for p in apart)):
        if all((min(k, c), max(k, c)) in apart for c in chosen):
            chosen.append(k)
    return chosen


def proven_spurious(n: int, spurious: list, apart: set) -> tuple[list, int]:
    """Of ``n`` valleys, the ``spurious`` ones (indices) proven apart from every other valley, which holds a global
    minimum, and how many of those are proven pairwise apart (:func:`pairwise_apart`): the spurious count's lower
    bound."""
    holding = [k for k in range(n) if k not in spurious]
    proven = [k for k in spurious if all((min(k, g), max(k, g)) in apart for g in holding)]
    return proven, len(pairwise_apart(proven, apart))


def spurious_tolerance(global_loss: float, tol: float | None = None) -> float:
    """How far above the global best a valley's best loss must lie for the valley to count as spurious.

    The one rule of the package (:meth:`ValleyGraph.is_spurious`, the valley reports, the study
    tasks and ``landscape chart tree``): ``tol`` when given, else ``1e-6 + 1e-3·|L*|``, L* the
    global best loss. Minima trained to the same loss agree to that precision; a distinct local
    minimum does not.

    Parameters
    ----------
    global_loss : float
        L*, the lowest loss among the minima.
    tol : float, optional
        An explicit tolerance (≥ 0), returned as it is.

    Returns
    -------
    float
    """
    if tol is None:
        return 1e-6 + 1e-3 * abs(float(global_loss))
    tol = float(tol)
    if not tol >= 0:
        raise LandscapeError(f"the spurious-valley tolerance must be a number >= 0, got {tol}")
    return tol


@dataclass
class Merge:
    """Two valleys joining at ``level``, witnessed by a certified path between minima ``i`` and ``j``."""

    level: float
    i: int
    j: int
    left: list[int]
    right: list[int]
    path: Path | None = None


@dataclass
class ValleyGraph:
    """Minima (nodes) and certified paths (edges) of one problem.

    Attributes
    ----------
    problem : Problem
    thetas : Tensor, shape (N, D)
    losses : Tensor, shape (N,)
    names : list of str
    graph : networkx.Graph
        Node ``i``: ``name``, ``loss`` and any per-minimum metrics. Edge ``(i, j)``: ``max_loss`` (the
        certified dense max), ``method``, ``evaluations``, ``path`` (the witness :class:`Path`).
    stats : dict
        ``straight_checks``, ``refinements``, ``failed``, ``evaluations``, ``seconds``.
    failures : list of (int, int, float, float)
        Pairs refined without success: i, j, the level and the best max loss found.
    straight : dict
        The certified straight segments measured so far, by ``(i, j, resolution)`` (i < j): measured
        once, read by every later search and refinement of the pair.
    separations : list of Separation
        Pairs of minima proven to lie in different valleys below a level (:mod:`.separation`).
    """

    problem: Problem
    thetas: torch.Tensor
    losses: torch.Tensor
    names: list
    graph: nx.Graph = field(default_factory=nx.Graph)
    stats: dict = field(default_factory=lambda: {"straight_checks": 0, "refinements": 0, "failed": 0,
                                                 "evaluations": 0, "seconds": 0.0})
    failures: list = field(default_factory=list)
    straight: dict = field(default_factory=dict)
    separations: list[Separation] = field(default_factory=list)

    @classmethod
    def of(cls, problem: Problem, thetas: torch.Tensor, names=None) -> "ValleyGraph":
        """A graph with the minima as nodes and no edges yet; their losses evaluated in one call."""
        if thetas.dim() != 2 or thetas.shape[1] != problem.dim or thetas.shape[0] < 1:
            raise LandscapeError(f"minima must have shape (N >= 1, {problem.dim}), got {tuple(thetas.shape)}")
        names = list(names) if names is not None else [f"m{i}" for i in range(thetas.shape[0])]
        if len(names) != thetas.shape[0]:
            raise LandscapeError(f"{len(names)} names for {thetas.shape[0]} minima")
        losses = problem.loss(thetas)
        if not torch.isfinite(losses).all():
            bad = [names[i] for i in torch.nonzero(~torch.isfinite(losses)).flatten().tolist()]
            raise LandscapeError(f"the loss is not finite at minima {bad}; check those checkpoints")
        g = cls(problem, thetas, losses, names)
        for i, (name, loss) in enumerate(zip(names, losses.tolist())):
            g.graph.add_node(i, name=name, loss=loss)
        return g

    @property
    def n(self) -> int:
        return int(self.thetas.shape[0])

    @property
    def global_loss(self) -> float:
        """The lowest loss among the minima: the reference for spurious valleys."""
        return float(self.losses.min())

    def add_path(self, i: int, j: int, path: Path) -> None:
        """Record a densely checked path between minima i and j (kept if lower than the current edge)."""
        if path.dense_max_loss is None:
            raise LandscapeError("only densely checked paths can join valleys; call landscape.certify first")
        weight = path.max_loss
        if self.graph.has_edge(i, j) and self.graph.edges[i, j]["max_loss"] <= weight:
            return
        self.graph.add_edge(i, j, max_loss=weight, method=path.method, evaluations=path.evaluations, path=path,
                            certificate=path.certificate or "grid", proven_below=path.bound)

    def valleys(self, level: float) -> list[list[int]]:
        """Connected components at ``level``: minima with loss ≤ u joined by edges of weight ≤ u.

        Returns
        -------
        list of list of int
            Sorted by best loss, each component sorted by index.
        """
        nodes = [i for i in range(self.n) if self.losses[i] <= level]
        sub = nx.Graph()
        sub.add_nodes_from(nodes)
        sub.add_edges_from((i, j) for i, j, w in self.graph.edges(data="max_loss")
                           if w <= level and i in sub and j in sub)
        comps = [sorted(c) for c in nx.connected_components(sub)]
        return sorted(comps, key=lambda c: (min(self.losses[i].item() for i in c), c[0]))

    def known(self, level: float, valleys: list | None = None) -> dict:
        """What backs the valley count at ``level``: the joins, and which pairs of valleys are proven apart.

        Minima in one component are joined by certified paths. Two components are *proven separate* when
        a :class:`Separation` of a member of each holds at ``level``; otherwise they are only "not joined:
        no path found" and may be one valley. The count is then an upper bound; its lower bound is the
        size of a set of components proven pairwise separate (found greedily: any such set is a bound).

        Parameters
        ----------
        level : float
        valleys : list of list of int, optional
            ``self.valleys(level)``, when already at hand.

        Returns
        -------
        dict
            ``count_is_upper_bound``, ``separation_proven`` (every two valleys proven apart; true for one
            valley), ``n_valleys_at_least``, ``pairs_not_joined`` (pairs of valleys neither joined nor proven
            apart), ``pairs_separated``, ``not_found`` (refinements at this level that found no path),
            ``joins`` (the certificates of the merge paths that join the valleys' minima: counts by
            ``"bound"``, proven ≤ u, and ``"grid"``, checked on the dense grid only — a path whose proven bound
            lies above u counts here — and ``grid_spacing``, the largest spacing of those, or None).
        """
        valleys = self.valleys(level) if valleys is None else valleys
        apart = self._apart(level, valleys)
        chosen = pairwise_apart(range(len(valleys)), apart)
        k = len(valleys)
        not_joined = k * (k - 1) // 2 - len(apart)
        joins = {"bound": 0, "grid": 0, "grid_spacing": None}
        for m in self.merges():
            if m.level > level:
                continue
            data = {**self.graph.edges[m.i, m.j], **_witness(m.path)}
            proven = data.get("certificate") == "bound" and data.get("proven_below", math.inf) <= level
            joins["bound" if proven else "grid"] += 1  # a bound above u proves nothing at u: the grid stands
            spacing = data.get("spacing")
            if not proven and spacing is not None and spacing >= 0:
                joins["grid_spacing"] = max(joins["grid_spacing"] or 0.0, float(spacing))
        return {"count_is_upper_bound": not_joined > 0, "separation_proven": not_joined == 0,
                "n_valleys_at_least": len(chosen), "pairs_not_joined": not_joined, "pairs_separated": len(apart),
                "not_found": sum(1 for _, _, u, _ in self.failures if u == level), "joins": joins}

    def _apart(self, level: float, valleys: list) -> set:
        """Pairs ``(a, b)``, a < b, of the valleys (indices) proven apart at ``level`` by a separation."""
        where = {i: k for k, v in enumerate(valleys) for i in v}
        apart: set = set()
        for s in self.separations:
            a, b = where.get(s.i), where.get(s.j)
            if a is not None and b is not None and a != b and level < s.below:
                apart.add((min(a, b), max(a, b)))
        return apart

    def spurious_known(self, level: float, valleys: list | None = None, tol: float | None = None) -> dict:
        """Which valleys at ``level`` are spurious, and which of them are *proven* so.

        A valley holding no global minimum (:meth:`is_spurious`) is proven spurious only when it is proven apart
        from every valley that holds one; otherwise no path joined them but they may be one valley, and the
        number of spurious valleys is an upper bound. Its lower bound is a set of proven-spurious valleys proven
        pairwise apart (found greedily).

        Returns
        -------
        dict
            ``spurious`` and ``spurious_proven`` (valley indices), ``n_spurious_at_least``,
            ``spurious_is_upper_bound``.
        """
        valleys = self.valleys(level) if valleys is None else valleys
        apart = self._apart(level, valleys)
        spurious = [k for k, v in enumerate(valleys) if self.is_spurious(v, tol)]
        proven, at_least = proven_spurious(len(valleys), spurious, apart)
        return {"spurious": spurious, "spurious_proven": proven, "n_spurious_at_least": at_least,
                "spurious_is_upper_bound": at_least < len(spurious)}

    def is_spurious(self, valley: list[int], tol: float | None = None) -> bool:
        """Whether a valley's best loss exceeds the global best by more than ``tol``.

        ``tol`` defaults to :func:`spurious_tolerance` of the global best.
        """
        return min(self.losses[i].item() for i in valley) > self.global_loss + spurious_tolerance(self.global_loss, tol)

    def merges(self) -> list[Merge]:
        """The merge tree: Kruskal's algorithm on the edges by increasing certified max loss.

        Each merge is the level at which two valleys join and its witness path; a pair of minima
        merges at the largest weight on the minimax path between them.
        """
        uf = UnionFind(range(self.n))
        members = {i: [i] for i in range(self.n)}
        out = []
        for i, j, data in sorted(self.graph.edges(data=True), key=lambda e: (e[2]["max_loss"], e[0], e[1])):
            a, b = uf[i], uf[j]
            if a == b:
                continue
            left, right = members.pop(a), members.pop(b)
            uf.union(a, b)
            members[uf[a]] = sorted(left + right)
            out.append(Merge(float(data["max_loss"]), i, j, sorted(left), sorted(right), data.get("path")))
        return out

    def report(self, levels, *, tol: float | None = None) -> dict:
        """JSON-able valley counts at each level, the merges and the costs.

        Returns
        -------
        dict
            ``levels``: list of ``{level, n_valleys, n_spurious, valleys: [[names]], spurious: [[names]],
            best_losses}``, what backs the spurious count (:meth:`spurious_known`: ``spurious_proven``,
            ``n_spurious_at_least``, ``spurious_is_upper_bound`` — ``n_spurious`` counts the valleys no path
            joined to a global minimum) and what backs the count (:meth:`known`: ``count_is_upper_bound``,
            ``separation_proven``, ``n_valleys_at_least``, ``pairs_not_joined``, ``pairs_separated``,
            ``not_found``, ``joins``); ``n_valleys`` counts the components joined by certified paths, an
            upper bound unless ``separation_proven``. ``merges``: ``[{level, pair, left, right, certificate,
            proven_below, spacing}]`` (names; the level is the witness path's dense max, ``proven_below``
            the bound its proof reached); ``separations``: ``[{a, b, below, how}]``; ``refinements``,
            ``straight_checks``, ``failed`` and ``failures`` (pairs tried without success, with the level).
        """
        rows = []
        for u in levels:
            vs = self.valleys(u)
            sk = self.spurious_known(u, vs, tol)
            rows.append({"level": float(u), "n_valleys": len(vs), "n_spurious": len(sk["spurious"]),
                         "n_spurious_at_least": sk["n_spurious_at_least"],
                         "spurious_is_upper_bound": sk["spurious_is_upper_bound"],
                         "valleys": [[self.names[i] for i in v] for v in vs],
                         "spurious": [[self.names[i] for i in vs[k]] for k in sk["spurious"]],
                         "spurious_proven": [[self.names[i] for i in vs[k]] for k in sk["spurious_proven"]],
                         "best_losses": [min(self.losses[i].item() for i in v) for v in vs], **self.known(u, vs)})
        merges = [{"pair": [self.names[m.i], self.names[m.j]], "level": m.level,
                   "left": [self.names[i] for i in m.left], "right": [self.names[i] for i in m.right],
                   **_witness(m.path)} for m in self.merges()]
        return {"global_loss": self.global_loss, "tolerance": spurious_tolerance(self.global_loss, tol), "levels": rows,
                "merges": merges, **{k: self.stats[k] for k in ("refinements", "straight_checks", "failed",
                                                                 "evaluations", "seconds")},
                "failures": [{"a": self.names[i], "b": self.names[j], "level": u, "max_loss": m}
                             for i, j, u, m in self.failures],
                "separations": [{"a": self.names[s.i], "b": self.names[s.j], "below": s.below, "how": s.how}
                                for s in self.separations],
                "minima": dict(zip(self.names, self.losses.tolist()))}

    def to_networkx(self) -> nx.Graph:
        """A copy of the graph with JSON/GraphML-friendly attributes (the witness paths dropped).

        Each edge keeps its ``certificate`` (``"bound"`` with ``proven_below``, or ``"grid"`` with
        ``spacing``); the proven separations are the graph attribute ``separations``, a JSON list of
        ``[i, j, below, how]`` (a string, which GraphML can hold).
        """
        import json

        g = nx.Graph(separations=json.dumps([[s.i, s.j, s.below, s.how] for s in self.separations]))
        for i, data in self.graph.nodes(data=True):
            g.add_node(i, **{k: v for k, v in data.items() if isinstance(v, (int, float, str))})
        for i, j, data in self.graph.edges(data=True):
            g.add_edge(i, j, max_loss=float(data["max_loss"]), method=data["method"],
                       evaluations=int(data["evaluations"]), **_witness(data.get("path")))
        return g


def _witness(path: Path | None) -> dict:
    """What backs a merge or an edge: its certificate, and the proven bound or the grid's spacing."""
    if path is None:
        return {}
    spacing = float(path.spacing) if path.spacing is not None else -1.0
    if path.certificate == "bound":  # the grid's spacing too: below the bound the dense check is what stands
        return {"certificate": "bound", "proven_below": float(path.bound), "spacing": spacing}
    return {"certificate": "grid", "spacing": spacing}


def event_levels(graph: ValleyGraph, tol: float | None = None) -> list[float]:
    """The levels where the valley count changes: where minima appear, and each merge level.

    Minima whose losses agree within the spurious tolerance appear together; a merge no higher than its
    minima's losses plus that tolerance joins copies of one minimum (no barrier between them: seeds that
    found the same minimum, or minima of one connected set of minima) and is not an event of its own.
    Such minima appear together at the level where those merges have joined them: the largest of their
    losses and of the levels of the copy merges whose higher minimum is among them. At the largest loss
    alone no certified path joins them yet (a path is never lower than its ends, and a path search
    tops out a little above them), so the count there would be one valley per copy: on the eight trained
    minima of ``deep_linear`` eight "valleys" at L*, one 3·10⁻⁵ higher.
    """
    tol = spurious_tolerance(graph.global_loss, tol)
    appear = []
    for loss in sorted(graph.losses.tolist()):
        if appear and loss - appear[-1][0] <= tol:
            appear[-1][1] = loss
        else:
            appear.append([loss, loss])
    merges = set()
    for m in graph.merges():
        floor = max(graph.losses[m.i].item(), graph.losses[m.j].item())
        if m.level > floor + tol:
            merges.add(m.level)
            continue
        group = next(g for g in appear if g[0] <= floor <= g[1])  # the minima that appear with the higher end
        group.append(m.level)
    return sorted({max(group[1:]) for group in appear} | merges)
