"""Valleys of the sublevel sets Ω_u = {θ : L(θ) ≤ u}, seen through a sample of minima.

The valley graph has the minima as nodes and certified paths as edges (weight: the path's dense
max loss, the level from which the path connects its ends). At level u the valleys are the
connected components of the minima with loss ≤ u under the edges of weight ≤ u; a valley is
*spurious* when its best loss is above the global best (Venturi, Bandeira & Bruna, JMLR 2019).
Over all u this is the merge tree, or disconnectivity graph (Becker & Karplus 1997; Wales 2003).

Two answers are honest in different ways. A merge is always witnessed by a certified path. Two
valleys reported separate mean only "no path below u was found within the budget": the report
says how many refinements were tried. Costs grow like N, not N²: union-find over the minima,
straight segments first (many in one batched evaluation), path refinement only between minima
still in different components, closest pairs first.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field

import networkx as nx
import torch

from .._errors import LandscapeError
from ..paths.path import DEFAULT_RESOLUTION, Path, interpolate
from ..problems.problem import Problem


class UnionFind:
    """Disjoint sets over 0..n−1 with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> bool:
        a, b = self.find(i), self.find(j)
        if a == b:
            return False
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]
        return True


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
    """

    problem: Problem
    thetas: torch.Tensor
    losses: torch.Tensor
    names: list
    graph: nx.Graph = field(default_factory=nx.Graph)
    stats: dict = field(default_factory=lambda: {"straight_checks": 0, "refinements": 0, "failed": 0,
                                                 "evaluations": 0, "seconds": 0.0})
    failures: list = field(default_factory=list)

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
        self.graph.add_edge(i, j, max_loss=weight, method=path.method, evaluations=path.evaluations, path=path)

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

        ``tol`` defaults to ``1e-6 + 1e-3·|L*|`` (L* the global best): minima trained to the same
        loss agree to that precision, a distinct local minimum does not.
        """
        return min(self.losses[i].item() for i in valley) > self.global_loss + _tol(self.global_loss, tol)

    def merges(self) -> list[Merge]:
        """The merge tree: Kruskal's algorithm on the edges by increasing certified max loss.

        Each merge is the level at which two valleys join and its witness path; a pair of minima
        merges at the largest weight on the minimax path between them.
        """
        uf = UnionFind(self.n)
        members = {i: [i] for i in range(self.n)}
        out = []
        for i, j, data in sorted(self.graph.edges(data=True), key=lambda e: (e[2]["max_loss"], e[0], e[1])):
            a, b = uf.find(i), uf.find(j)
            if a == b:
                continue
            left, right = members.pop(a), members.pop(b)
            uf.union(a, b)
            members[uf.find(a)] = sorted(left + right)
            out.append(Merge(float(data["max_loss"]), i, j, sorted(left), sorted(right), data.get("path")))
        return out

    def report(self, levels, *, tol: float | None = None) -> dict:
        """JSON-able valley counts at each level, the merges and the costs.

        Returns
        -------
        dict
            ``levels``: list of ``{level, n_valleys, n_spurious, valleys: [[names]], spurious: [[names]],
            best_losses}``; ``merges``: ``[{level, a, b, left, right}]`` (names); ``refinements``,
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
                   "left": [self.names[i] for i in m.left], "right": [self.names[i] for i in m.right]}
                  for m in self.merges()]
        return {"global_loss": self.global_loss, "tolerance": _tol(self.global_loss, tol), "levels": rows,
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
                       evaluations=int(data["evaluations"]))
        return g


def _tol(best: float, tol: float | None) -> float:
    return 1e-6 + 1e-3 * abs(best) if tol is None else float(tol)


# ------------------------------------------------------------------ building the graph
def straight_max_losses(problem: Problem, thetas: torch.Tensor, pairs, *, resolution: int = DEFAULT_RESOLUTION,
                        max_points: int = 1 << 16) -> torch.Tensor:
    """Dense max loss of the straight segments between many pairs of minima, in batched evaluations.

    Parameters
    ----------
    thetas : Tensor, shape (N, D)
    pairs : sequence of (int, int)
    resolution : int
        Sub-intervals per segment.
    max_points : int
        Points per batched call (bounds memory: ``max_points × D`` values).

    Returns
    -------
    Tensor, shape (len(pairs),)
    """
    pairs = list(pairs)
    if not pairs:
        return thetas.new_zeros(0)
    per = resolution + 1
    step = max(1, max_points // per)
    out = []
    t = torch.tensor([0.0, 1.0], dtype=thetas.dtype, device=thetas.device)
    for start in range(0, len(pairs), step):
        chunk = pairs[start:start + step]
        pts = torch.cat([interpolate(torch.stack([thetas[i], thetas[j]]), t, resolution)[0] for i, j in chunk])
        out.append(problem.loss(pts).reshape(len(chunk), per).max(1).values)
    return torch.cat(out)


def _straight_path(graph, i, j, max_loss, resolution) -> Path:
    """The straight segment whose dense max was measured by :func:`straight_max_losses`."""
    points = torch.stack([graph.thetas[i], graph.thetas[j]])
    losses = torch.stack([graph.losses[i], graph.losses[j]])
    return Path(points, losses, method="linear", dense_max_loss=float(max_loss), resolution=resolution,
                evaluations=resolution + 1)


def connect_at_level(graph: ValleyGraph, level: float, *, method: str = "string", attempts: int = 2,
                     neighbours: int = 8, resolution: int = DEFAULT_RESOLUTION, generator: torch.Generator | None = None,
                     connect_options: dict | None = None, progress: bool = False) -> ValleyGraph:
    """Join the minima below ``level`` with certified paths, refining only where it is needed.

    1. Straight segments from each minimum to its ``neighbours`` nearest (plus a Euclidean spanning
       tree), closest pairs first, in batched evaluations, skipping pairs already in one component;
       a segment whose dense max is ≤ u joins its ends. At most N·neighbours checks, not N².
    2. While several components remain: path refinement (``method``) between the closest pair of
       minima of two different components that has not been tried; success joins them; at most
       ``attempts`` pairs are tried for each pair of components.

    Refinements on N minima that all connect: at most N − 1 plus the failed attempts.

    Parameters
    ----------
    graph : ValleyGraph
    level : float
    method : str
        A key of ``landscape.METHODS``.
    attempts : int
        Refinements tried per pair of components before they are reported separate.
    connect_options : dict, optional
        Extra options for the path method.

    Returns
    -------
    ValleyGraph
        The same graph, with the new edges and updated ``stats``.
    """
    from ..paths.connect import connect  # the path methods; imported here to keep this module light

    start_time = time.perf_counter()
    problem, thetas = graph.problem, graph.thetas
    nodes = [i for i in range(graph.n) if graph.losses[i] <= level]
    uf = UnionFind(graph.n)
    for i, j, w in graph.graph.edges(data="max_loss"):
        if w <= level and i in nodes and j in nodes:
            uf.union(i, j)
    dist = torch.cdist(thetas, thetas)
    pairs = sorted(((dist[i, j].item(), i, j) for a, i in enumerate(nodes) for j in nodes[a + 1:]))
    # 1. straight segments to each minimum's nearest neighbours, closest first, in batches
    if len(nodes) > 1:
        sub = _candidate_pairs(thetas[nodes], neighbours)
        near = sorted((dist[nodes[a], nodes[b]].item(), nodes[a], nodes[b]) for a, b in sub)
    else:
        near = []
    batch = max(1, len(nodes))
    cursor = 0
    straight = {}
    while cursor < len(near) and _components(uf, nodes) > 1:
        todo = []
        while cursor < len(near) and len(todo) < batch:
            _, i, j = near[cursor]
            cursor += 1
            if uf.find(i) != uf.find(j):
                todo.append((i, j))
        if not todo:
            break
        maxes = straight_max_losses(problem, thetas, todo, resolution=resolution)
        graph.stats["straight_checks"] += len(todo)
        graph.stats["evaluations"] += len(todo) * (resolution + 1)
        for (i, j), m in zip(todo, maxes.tolist()):
            straight[(i, j)] = m
            if m <= level and uf.union(i, j):
                graph.add_path(i, j, _straight_path(graph, i, j, m, resolution))
    # 2. refinement between components, closest untried pair first
    tried: dict[tuple[int, int], int] = {}
    options = dict(connect_options or {})
    for _, i, j in pairs:
        if _components(uf, nodes) == 1:
            break
        a, b = uf.find(i), uf.find(j)
        if a == b:
            continue
        key = (min(a, b), max(a, b))
        if tried.get(key, 0) >= attempts:
            continue
        tried[key] = tried.get(key, 0) + 1
        path = connect(problem, thetas[i], thetas[j], method=method, level=level, generator=generator,
                       resolution=resolution, **options)
        graph.stats["refinements"] += 1
        graph.stats["evaluations"] += path.evaluations
        if path.status == "connected":
            graph.add_path(i, j, path)
            uf.union(i, j)
        else:
            graph.stats["failed"] += 1
            graph.failures.append((i, j, float(level), path.max_loss))
    graph.stats["seconds"] += time.perf_counter() - start_time
    return graph


def build_merge_tree(graph: ValleyGraph, *, method: str = "neb", neighbours: int = 8, bisect: int = 3,
                     probe: str = "string", resolution: int = DEFAULT_RESOLUTION,
                     generator: torch.Generator | None = None, connect_options: dict | None = None,
                     max_refinements: int | None = None) -> ValleyGraph:
    """Merge levels of all minima: Kruskal's algorithm with lazily refined edge weights.

    Candidate edges are the straight segments to each minimum's ``neighbours`` nearest minima (all
    pairs when N ≤ neighbours + 1) plus a Euclidean spanning tree, weighted by their certified dense
    max loss, one batched evaluation. The lightest edge is popped; if its weight comes from a straight
    segment it is first refined by ``method`` (a minimum-energy-path method such as NEB, which needs
    no level) and pushed back with the lower certified weight; a refined edge that is still the
    lightest joins its two valleys. Each merge level is certified (a path at that max loss exists).

    A minimum-energy-path method relaxes towards *a* mountain pass, not always the lowest one (in
    high dimension NEB often settles on a higher pass). So each merge of the tree is then probed
    ``bisect`` times with ``probe`` (DSS) at a level a quarter of the way from the higher endpoint
    loss to the merge level; a path certified lower replaces the edge and the gap shrinks to it, a
    failed probe raises the bottom of the gap. Lowering the weight of a
    spanning-tree edge keeps the tree minimal, so the merge tree stays consistent.

    Parameters
    ----------
    method : str
        Level-free path method for the refinement (``"neb"``).
    neighbours : int
        Candidate edges per minimum.
    bisect : int
        Probes per merge (0: none).
    probe : str
        Path method of the probes (it needs a level: ``"string"``).
    max_refinements : int, optional
        Bound on the refinements by ``method``; beyond it straight-segment weights are kept.

    Returns
    -------
    ValleyGraph
        The graph holding the spanning-tree edges; ``graph.merges()`` is the merge tree.
    """
    from ..paths.connect import connect

    start_time = time.perf_counter()
    problem, thetas, n = graph.problem, graph.thetas, graph.n
    if n == 1:
        return graph
    cand = _candidate_pairs(thetas, neighbours)
    maxes = straight_max_losses(problem, thetas, cand, resolution=resolution)
    graph.stats["straight_checks"] += len(cand)
    graph.stats["evaluations"] += len(cand) * (resolution + 1)
    heap = [(m, i, j, False) for (i, j), m in zip(cand, maxes.tolist())]
    heapq.heapify(heap)
    uf = UnionFind(n)
    options = dict(connect_options or {})
    while heap and graph.graph.number_of_edges() < n - 1:
        w, i, j, refined = heapq.heappop(heap)
        if uf.find(i) == uf.find(j):
            continue
        budget_left = max_refinements is None or graph.stats["refinements"] < max_refinements
        if not refined and method != "linear" and budget_left:
            path = connect(problem, thetas[i], thetas[j], method=method, level=None, generator=generator,
                           resolution=resolution, **options)
            graph.stats["refinements"] += 1
            graph.stats["evaluations"] += path.evaluations
            if path.max_loss < w:
                graph.add_path(i, j, path)
                heapq.heappush(heap, (path.max_loss, i, j, True))
                continue
        if not graph.graph.has_edge(i, j):
            graph.add_path(i, j, _straight_path(graph, i, j, w, resolution))
        uf.union(i, j)
    # keep only the spanning-tree edges used by the merges
    keep = {(m.i, m.j) for m in graph.merges()}
    graph.graph.remove_edges_from([e for e in list(graph.graph.edges) if e not in keep and e[::-1] not in keep])
    for merge in graph.merges() if bisect > 0 else []:
        i, j = merge.i, merge.j
        low = max(graph.losses[i].item(), graph.losses[j].item())
        high = graph.graph.edges[i, j]["max_loss"]
        for _ in range(bisect):
            level = low + 0.25 * (high - low)  # merges often sit close to their endpoints: probe low first
            if not level < high:
                break
            path = connect(problem, thetas[i], thetas[j], method=probe, level=level, generator=generator,
                           resolution=resolution)
            graph.stats["refinements"] += 1
            graph.stats["evaluations"] += path.evaluations
            if path.status == "connected":
                graph.add_path(i, j, path)
                high = path.max_loss
            else:
                low = level
    graph.stats["seconds"] += time.perf_counter() - start_time
    return graph


def _candidate_pairs(thetas: torch.Tensor, neighbours: int) -> list[tuple[int, int]]:
    n = thetas.shape[0]
    if n <= neighbours + 1:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    dist = torch.cdist(thetas, thetas)
    pairs = set()
    near = dist.topk(neighbours + 1, largest=False).indices[:, 1:]
    for i in range(n):
        for j in near[i].tolist():
            pairs.add((min(i, j), max(i, j)))
    tree = nx.minimum_spanning_tree(nx.from_numpy_array(dist.double().cpu().numpy()))
    pairs.update((min(i, j), max(i, j)) for i, j in tree.edges)
    return sorted(pairs)


def _components(uf: UnionFind, nodes) -> int:
    return len({uf.find(i) for i in nodes})


def event_levels(graph: ValleyGraph, tol: float | None = None) -> list[float]:
    """The levels where the valley count changes: where minima appear, and each merge level.

    Minima whose losses agree within the spurious tolerance appear together, at the largest of
    their losses (so that the report does not list one level per minimum of the same valley floor).
    """
    tol = _tol(graph.global_loss, tol)
    appear = []
    for loss in sorted(graph.losses.tolist()):
        if appear and loss - appear[-1][0] <= tol:
            appear[-1][1] = loss
        else:
            appear.append([loss, loss])
    return sorted({hi for _, hi in appear} | {m.level for m in graph.merges()})


def find_valleys(problem: Problem, thetas: torch.Tensor, *, names=None, levels="auto", method: str = "string",
                 merge_method: str = "neb", attempts: int = 2, tol: float | None = None,
                 resolution: int = DEFAULT_RESOLUTION, metrics: bool = False, align: str = "none", bisect: int = 3,
                 extent: int = 0,
                 generator: torch.Generator | None = None, connect_options: dict | None = None) -> tuple[ValleyGraph, dict]:
    """Count the valleys of Ω_u seen by a sample of minima, find the spurious ones and the merge tree.

    Parameters
    ----------
    problem : Problem
    thetas : Tensor, shape (N, D)
        The minima (aligned beforehand if symmetries should be factored out).
    names : list of str, optional
        Shown in the report (e.g. checkpoint files).
    levels : "auto" or sequence of float
        ``"auto"``: build the whole merge tree with ``merge_method`` and report at every level where the
        count changes. A sequence: connect at each level (ascending) with ``method``; edges found at a
        level stay valid above it.
    method : str
        Path method for a given level (``landscape.METHODS``; DSS, ``"string"``, by default).
    merge_method : str
        Level-free path method for the merge tree (``"neb"`` by default).
    bisect : int
        Probes of each merge level by ``method`` at lower levels (see :func:`build_merge_tree`).
    extent : int
        Hit-and-run samples per minimum at each level (0: none): each valley's row gains its
        extent — mean and max distance of the samples from their minima and their RMS spread —
        from one batched sampler over all minima (:func:`landscape.sample_sublevel_set`).
    attempts : int
        Refinements tried per pair of valleys before they are reported separate.
    tol : float, optional
        Spurious-valley tolerance (see :meth:`ValleyGraph.is_spurious`).
    metrics : bool
        Add loss, gradient norm, ‖θ‖, Hessian top eigenvalue and trace to each node.
    align : str
        A key of ``landscape.ALIGNERS``. Not ``"none"``: every minimum is first moved onto the
        lowest one by the hidden-unit permutation (and rescaling) that keeps its function, so that
        copies of one network under the symmetry count as one valley rather than many.

    Returns
    -------
    graph : ValleyGraph
    report : dict
        :meth:`ValleyGraph.report` at the levels.
    """
    alignment = None
    if align != "none":
        from ..symmetries.align import align as align_points

        best = int(problem.loss(thetas).argmin())
        result = align_points(problem, thetas[best], thetas, method=align, generator=generator)
        thetas = result.theta.to(thetas)
        alignment = {"method": align, "reference": best if names is None else list(names)[best]}
    graph = ValleyGraph.of(problem, thetas, names)
    if metrics:
        from ..minima.curvature import minimum_metrics

        for i, m in enumerate(minimum_metrics(problem, thetas, generator=generator)):
            graph.graph.nodes[i].update(m)
    if isinstance(levels, str):
        if levels != "auto":
            raise LandscapeError(f"levels must be 'auto' or a list of numbers, got {levels!r}")
        build_merge_tree(graph, method=merge_method, bisect=bisect, probe=method, resolution=resolution,
                         generator=generator, connect_options=connect_options)
        report_levels = event_levels(graph, tol)
    else:
        report_levels = sorted(float(u) for u in levels)
        if not report_levels:
            raise LandscapeError("no level given; pass --level U (repeatable) or --levels auto")
        for u in report_levels:
            connect_at_level(graph, u, method=method, attempts=attempts, resolution=resolution,
                             generator=generator, connect_options=connect_options)
    report = graph.report(report_levels, tol=tol)
    if extent:
        _add_extents(graph, report, extent, generator)
    report.update({"method": merge_method if isinstance(levels, str) else method, "attempts": attempts,
                   "resolution": resolution, "problem": problem.spec, "alignment": alignment})
    return graph, report


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


def _add_extents(graph: ValleyGraph, report: dict, samples: int, generator) -> None:
    """Per level, one batched hit-and-run chain from every minimum below it; extents grouped by valley."""
    from .sampling import sample_sublevel_set

    for row in report["levels"]:
        u = row["level"]
        members = [i for i in range(graph.n) if graph.losses[i] <= u]
        if not members:
            row["extent"] = []
            continue
        chains = sample_sublevel_set(graph.problem, graph.thetas[members], u, n_samples=samples,
                                     generator=generator).extent()
        by_name = {graph.names[i]: e for i, e in zip(members, chains)}
        row["extent"] = [{"mean_distance": sum(by_name[n]["mean_distance"] for n in v) / len(v),
                          "max_distance": max(by_name[n]["max_distance"] for n in v),
                          "spread": max(by_name[n]["spread"] for n in v)} for v in row["valleys"]]
