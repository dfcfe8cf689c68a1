"""Valleys of the sublevel sets Ω_u = {θ : L(θ) ≤ u}, seen through a sample of minima.

The valley graph has the minima as nodes and certified paths as edges (weight: the path's dense
max loss, the level from which the path connects its ends). At level u the valleys are the
connected components of the minima with loss ≤ u under the edges of weight ≤ u; a valley is
*spurious* when its best loss is above the global best by more than :func:`spurious_tolerance`
(Venturi, Bandeira & Bruna, JMLR 2019). Over all u this is the merge tree, or disconnectivity
graph (Becker & Karplus 1997; Wales 2003).

Two answers are honest in different ways. A merge is always witnessed by a certified path. Two
valleys reported separate mean only "no path below u was found within the budget": the report
says how many refinements were tried. The search that builds the graph is in ``search.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import torch
from networkx.utils import UnionFind

from .._errors import LandscapeError
from ..paths.path import Path
from ..problems.problem import Problem


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
            best_losses}``; ``merges``: ``[{level, pair, left, right, certificate, proven_below or spacing}]``
            (names; the level is the witness path's dense max, ``proven_below`` the bound its proof
            reached); ``refinements``,
            ``straight_checks``, ``failed`` and ``failures`` (pairs tried without success, with the level).
        """
        rows = []
        for u in levels:
            vs = self.valleys(u)
            spur = [v for v in vs if self.is_spurious(v, tol)]
            rows.append({"level": float(u), "n_valleys": len(vs), "n_spurious": len(spur),
                         "valleys": [[self.names[i] for i in v] for v in vs],
                         "spurious": [[self.names[i] for i in v] for v in spur],
                         "best_losses": [min(self.losses[i].item() for i in v) for v in vs]})
        merges = [{"pair": [self.names[m.i], self.names[m.j]], "level": m.level,
                   "left": [self.names[i] for i in m.left], "right": [self.names[i] for i in m.right],
                   **_witness(m.path)} for m in self.merges()]
        return {"global_loss": self.global_loss, "tolerance": spurious_tolerance(self.global_loss, tol), "levels": rows,
                "merges": merges, **{k: self.stats[k] for k in ("refinements", "straight_checks", "failed",
                                                                 "evaluations", "seconds")},
                "failures": [{"a": self.names[i], "b": self.names[j], "level": u, "max_loss": m}
                             for i, j, u, m in self.failures],
                "minima": dict(zip(self.names, self.losses.tolist()))}

    def to_networkx(self) -> nx.Graph:
        """A copy of the graph with JSON/GraphML-friendly attributes (the witness paths dropped)."""
        g = nx.Graph()
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
    if path.certificate == "bound":
        return {"certificate": "bound", "proven_below": float(path.bound)}
    return {"certificate": "grid", "spacing": float(path.spacing) if path.spacing is not None else -1.0}


def event_levels(graph: ValleyGraph, tol: float | None = None) -> list[float]:
    """The levels where the valley count changes: where minima appear, and each merge level.

    Minima whose losses agree within the spurious tolerance appear together, at the largest of
    their losses (so that the report does not list one level per minimum of the same valley floor);
    a merge no higher than its minima's losses plus that tolerance joins copies of one minimum (no
    barrier between them: seeds that found the same minimum) and is not an event either.
    """
    tol = spurious_tolerance(graph.global_loss, tol)
    appear = []
    for loss in sorted(graph.losses.tolist()):
        if appear and loss - appear[-1][0] <= tol:
            appear[-1][1] = loss
        else:
            appear.append([loss, loss])
    merges = {m.level for m in graph.merges()
              if m.level > max(graph.losses[m.i].item(), graph.losses[m.j].item()) + tol}
    return sorted({hi for _, hi in appear} | merges)


def write_graph(graph: ValleyGraph, json_path=None, graphml_path=None) -> None:
    """Write the valley graph as networkx node-link JSON and/or GraphML, atomically."""
    import json

    from ..problems.checkpoint import atomic_write

    g = graph.to_networkx()
    if json_path is not None:
        text = json.dumps(nx.node_link_data(g, edges="edges"), indent=1)
        atomic_write(json_path, lambda fh: fh.write(text.encode()))
    if graphml_path is not None:
        atomic_write(graphml_path, lambda fh: nx.write_graphml(g, fh))


def read_graph(path, problem: Problem, thetas: torch.Tensor, names) -> ValleyGraph:
    """Read a valley graph written by :func:`write_graph` (``landscape valleys -o``) back onto its minima.

    The file's nodes are matched to ``names`` by name (the file names ``landscape valleys`` was given),
    else by file name without folder and suffix when that is unambiguous; the losses and certified
    edges are the file's, so the valleys at any level are those the command reported.

    Parameters
    ----------
    path : str or path
        Node-link JSON (``landscape valleys ... -o graph.json``).
    problem : Problem
    thetas : Tensor, shape (N, D)
        The minima, in the order of ``names``.
    names : sequence of str

    Returns
    -------
    ValleyGraph
        With the file's edges (``max_loss``, ``method``, ``certificate``; no witness paths).

    Raises
    ------
    LandscapeError
        A file that is not a valley graph, or one made from other minima.
    """
    import json
    from pathlib import Path as FilePath

    try:
        data = json.loads(FilePath(path).read_text(encoding="utf-8"))
        nodes = {int(n["id"]): dict(n, name=str(n["name"]), loss=float(n["loss"])) for n in data["nodes"]}
        edges = [(int(e["source"]), int(e["target"]), dict(e, max_loss=float(e["max_loss"]))) for e in data["edges"]]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise LandscapeError(f"{path}: not a valley graph written by landscape valleys -o ({err!s:.80}); "
                             "write one with: landscape valleys FILES -o graph.json") from None
    names = [str(n) for n in names]
    node_of = _match_names({k: n["name"] for k, n in nodes.items()}, names, path)
    if sorted(node_of.values()) != list(range(len(names))):
        missing = sorted(set(names) - {names[i] for i in node_of.values()})
        raise LandscapeError(f"{path} holds no minimum {missing[0]!r} ({len(missing)} of the files given are not "
                             "in it); give the files it was made from, or write it again with landscape valleys")
    graph = ValleyGraph.of(problem, thetas, names)
    losses = [0.0] * len(names)
    for k, i in node_of.items():
        losses[i] = nodes[k]["loss"]
        graph.graph.nodes[i].update({a: v for a, v in nodes[k].items() if a not in ("id", "name")})
    graph.losses = torch.tensor(losses, dtype=torch.float64)
    for s, t, e in edges:
        graph.graph.add_edge(node_of[s], node_of[t], **{a: v for a, v in e.items() if a not in ("source", "target")})
    return graph


def _match_names(stored: dict, given: list[str], path) -> dict:
    """Each stored node id -> the index of the given name it is (exactly, else by file stem)."""
    def stem(name):
        return name.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".pt")

    stems: dict = {}
    for i, g in enumerate(given):
        stems.setdefault(stem(g), []).append(i)
    out = {}
    for k, name in stored.items():
        if name in given:
            out[k] = given.index(name)
        elif len(stems.get(stem(name), [])) == 1:
            out[k] = stems[stem(name)][0]
        else:
            raise LandscapeError(f"{path} names minimum {name!r}, which is not among the files given "
                                 f"({', '.join(given[:4])}{', ...' if len(given) > 4 else ''})")
    return out
