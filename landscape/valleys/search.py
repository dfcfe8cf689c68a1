"""Building the valley graph: straight segments first, path refinement only where it is needed.

Costs grow like N, not N²: union-find over the minima (``networkx.utils.UnionFind``), straight
segments to near neighbours first (many in one batched evaluation, each measured once and kept in
``ValleyGraph.straight``), path refinement only between minima still in different components,
closest pairs first. A measured straight segment is handed to the refinement of its pair
(``connect(..., straight=...)``) rather than measured again.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import replace

import networkx as nx
import torch
from networkx.utils import UnionFind

from .._errors import LandscapeError, NonFiniteLoss
from .._progress import Progress, ShownTally
from ..minima.stationary import POLISH_STEPS, require_minima
from ..paths.certify import DEFAULT_RESOLUTION, decided_peak, settle
from ..paths.linear import straight_paths
from ..paths.path import Path
from ..problems.memory import budgeted, plan_memory
from ..problems.problem import Problem
from .alignment import align_minima
from .graph import ValleyGraph, event_levels
from .sampling import add_extents
from .separation import proven_separations


def straight_segments(graph: ValleyGraph, pairs, resolution: int = DEFAULT_RESOLUTION, *,
                      of: tuple[int, int] | None = None) -> list[Path]:
    """The certified straight segments between pairs of minima, each measured once per graph and resolution.

    Pairs not measured yet are checked together (:func:`landscape.paths.straight_paths`, the minima's
    known losses reused); ``stats["straight_checks"]`` and ``stats["evaluations"]`` count them. Returns one
    two-knot path per pair (i < j), in order; the progress line shows ``straight segments k/n`` (``of=(done,
    total)``: these pairs are a batch of ``total``, ``done`` before them).
    """
    pairs = list(pairs)
    new = [(i, j) for i, j in pairs if (i, j, resolution) not in graph.straight]
    shown, step = _shown(graph), max(graph.n, -(-len(new) // 20))  # about 20 steps of progress, each ≥ N pairs
    done, total = of or (0, len(new))
    for start in range(0, len(new), step):
        shown.stage("straight segments", done + start, total)
        chunk = new[start:start + step]
        first, second = [i for i, _ in chunk], [j for _, j in chunk]
        losses = torch.stack([graph.losses[first], graph.losses[second]], 1)
        measured = straight_paths(graph.problem, graph.thetas[first], graph.thetas[second], losses=losses,
                                  resolution=resolution)
        graph.straight.update({(i, j, resolution): p for (i, j), p in zip(chunk, measured)})
        graph.stats["straight_checks"] += len(chunk)
        graph.stats["evaluations"] += sum(p.evaluations for p in measured)
    return [graph.straight[(i, j, resolution)] for i, j in pairs]


def connect_at_level(graph: ValleyGraph, level: float, *, method: str = "string", attempts: int = 2,
                     neighbours: int = 8, resolution: int = DEFAULT_RESOLUTION, generator: torch.Generator | None = None,
                     connect_options: dict | None = None) -> ValleyGraph:
    """Join the minima below ``level`` with certified paths, refining only where it is needed.

    1. Straight segments from each minimum to its ``neighbours`` nearest (plus a Euclidean spanning
       tree), closest pairs first, in batched evaluations, skipping pairs already in one component;
       a segment whose dense max is ≤ u joins its ends. At most N·neighbours checks, not N².
    2. While several components remain: path refinement (``method``) between the closest pair of
       minima of two different components that has not been tried; success joins them; at most
       ``attempts`` pairs are tried for each pair of components. Refinements on N minima that all
       connect: at most N − 1 plus the failed attempts.

    Parameters
    ----------
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
    uf = UnionFind(range(graph.n))
    for i, j, w in graph.graph.edges(data="max_loss"):
        if w <= level and i in nodes and j in nodes:
            uf.union(i, j)
    dist = torch.cdist(thetas, thetas)
    pairs = sorted(((dist[i, j].item(), i, j) for a, i in enumerate(nodes) for j in nodes[a + 1:]))
    # 1. straight segments to each minimum's nearest neighbours, closest first, in batches
    sub = _candidate_pairs(thetas[nodes], neighbours) if len(nodes) > 1 else []
    near = sorted((dist[nodes[a], nodes[b]].item(), nodes[a], nodes[b]) for a, b in sub)
    batch, cursor = max(1, len(nodes)), 0
    while cursor < len(near) and _components(uf, nodes) > 1:
        todo, first = [], cursor
        while cursor < len(near) and len(todo) < batch:
            _, i, j = near[cursor]
            cursor += 1
            if uf[i] != uf[j]:
                todo.append((i, j))
        if not todo:
            break
        for (i, j), path in zip(todo, straight_segments(graph, todo, resolution, of=(first, len(near)))):
            if path.max_loss <= level and uf[i] != uf[j]:
                _shown(graph).stage(f"level {level:.4g}: proving straight segment {i}~{j}")
                measured = path.evaluations
                path = settle(problem, replace(path, level=level, status="connected"))  # prove it where possible
                graph.stats["evaluations"] += path.evaluations - measured
                if path.status == "connected":
                    uf.union(i, j)
                    graph.add_path(i, j, path)
    # 2. refinement between components, closest untried pair first
    tried: dict[tuple[int, int], int] = {}
    options = dict(connect_options or {})
    refined = 0
    for _, i, j in pairs:
        if _components(uf, nodes) == 1:
            break
        a, b = uf[i], uf[j]
        if a == b:
            continue
        key = (min(a, b), max(a, b))
        if tried.get(key, 0) >= attempts:
            continue
        tried[key] = tried.get(key, 0) + 1
        graph.stats["refinements"] += 1
        roots, refined = sorted({uf[n] for n in nodes}), refined + 1  # to do at most: `attempts` a pair of valleys
        todo = refined + sum(attempts - tried.get((a, b), 0) for k, a in enumerate(roots) for b in roots[k + 1:])
        _shown(graph).stage(f"level {level:.4g}: connecting pair {refined}/{todo} at most ({len(roots)} valleys left)")
        try:
            path = connect(problem, thetas[i], thetas[j], method=method, level=level, generator=generator,
                           resolution=resolution, straight=graph.straight.get((i, j, resolution)), **options)
        except NonFiniteLoss:  # the method walked into a region where the loss is NaN: that pair is not joined
            graph.stats["failed"] += 1
            graph.failures.append((i, j, float(level), float("inf")))
            continue
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
    straight = dict(zip(cand, straight_segments(graph, cand, resolution)))
    heap = [(p.max_loss, i, j, False) for (i, j), p in straight.items()]
    heapq.heapify(heap)
    uf = UnionFind(range(n))
    options = dict(connect_options or {})
    merged = 0
    while heap and graph.graph.number_of_edges() < n - 1:
        w, i, j, refined = heapq.heappop(heap)
        if uf[i] == uf[j]:
            continue
        _shown(graph).stage(f"merge tree ({method}): {merged}/{n - 1} merged, connecting pair",
                            graph.stats["refinements"] + 1, len(cand))
        budget_left = max_refinements is None or graph.stats["refinements"] < max_refinements
        floor = max(graph.losses[i].item(), graph.losses[j].item())  # no path between i and j goes lower
        if not refined and method != "linear" and budget_left and w > floor and not torch.equal(thetas[i], thetas[j]):
            path = connect(problem, thetas[i], thetas[j], method=method, level=None, generator=generator,
                           resolution=resolution, straight=straight[(i, j)], **_to_saddle(method, options))
            graph.stats["refinements"] += 1
            graph.stats["evaluations"] += path.evaluations
            if path.max_loss < w:
                graph.add_path(i, j, path)
                heapq.heappush(heap, (path.max_loss, i, j, True))
                continue
        if not graph.graph.has_edge(i, j):
            graph.add_path(i, j, straight[(i, j)])
        uf.union(i, j)
        merged += 1
    # keep only the spanning-tree edges used by the merges
    keep = {(m.i, m.j) for m in graph.merges()}
    graph.graph.remove_edges_from([e for e in list(graph.graph.edges) if e not in keep and e[::-1] not in keep])
    merges = graph.merges() if bisect > 0 else []
    for done, merge in enumerate(merges):
        _shown(graph).stage(f"proving merge levels ({probe})", done, len(merges))
        i, j = merge.i, merge.j
        low = max(graph.losses[i].item(), graph.losses[j].item())
        high = graph.graph.edges[i, j]["max_loss"]
        for _ in range(bisect if not torch.equal(thetas[i], thetas[j]) else 0):
            level = low + 0.25 * (high - low)  # merges often sit close to their endpoints: probe low first
            if not level < high:
                break
            path = connect(problem, thetas[i], thetas[j], method=probe, level=level, generator=generator,
                           resolution=resolution, straight=straight[(i, j)], memory=options.get("memory"))
            graph.stats["refinements"] += 1
            graph.stats["evaluations"] += path.evaluations
            if path.status == "connected":
                graph.add_path(i, j, path)
                high = path.max_loss
            else:
                low = level
    for m in graph.merges():  # a merge level claims a path at most that high: its max decided in float64
        path = decided_peak(problem, m.path)
        graph.stats["evaluations"] += path.evaluations - m.path.evaluations
        graph.graph.edges[m.i, m.j].update(max_loss=path.max_loss, path=path)
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


def _shown(graph: ValleyGraph) -> Progress:
    """The progress line the search's tallies feed (:class:`ShownTally`), or a silent one."""
    return getattr(graph.stats, "shown", None) or Progress(False, "")


def _components(uf: UnionFind, nodes) -> int:
    return len({uf[i] for i in nodes})


def find_valleys(problem: Problem, thetas: torch.Tensor, *, names=None, levels="auto", method: str = "string",
                 merge_method: str = "neb", attempts: int = 2, tol: float | None = None,
                 resolution: int = DEFAULT_RESOLUTION, metrics: bool = False, align: str = "none", bisect: int = 3,
                 extent: int = 0, polish: bool = False, polish_steps: int = POLISH_STEPS,
                 generator: torch.Generator | None = None, connect_options: dict | None = None,
                 progress: bool = False, memory: int | str | None = None) -> tuple[ValleyGraph, dict]:
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
        extent (mean and max distance of the samples from their minima, RMS spread, the largest line-search
        ``spacing``: a narrower gap may have been stepped over) from one batched :func:`landscape.sample_sublevel_set`.
    attempts : int
        Refinements tried per pair of valleys before they are reported separate.
    tol : float, optional
        Spurious-valley tolerance (:func:`spurious_tolerance` when None).
    metrics : bool
        Add loss, gradient norm, ‖θ‖, Hessian top eigenvalue and trace to each node.
    align : str
        A key of ``landscape.ALIGNERS``. Not ``"none"``: every minimum is first moved onto the
        lowest one by the hidden-unit permutation (and rescaling) that keeps its function, so that
        copies of one network under the symmetry count as one valley rather than many.

    polish : bool
        Every input must be a minimum by :func:`landscape.minima.is_stationary` (‖∇L‖ ≤
        ``10⁻³·max(|L|, 0.1)``): one that is not is refused with an error naming it, or, with ``polish``,
        descended there first (:func:`landscape.minima.polish`, all such points in one batch, at most
        ``polish_steps`` steps) and listed in ``report["polished"]``. A point on a slope is never counted.
        ``report["alignment"]`` says what ``align`` did (:func:`landscape.valleys.alignment.align_minima`).
    progress : bool
        Show on stderr the stage (aligning, straight segments, connecting, proving), pairs done/to do, evaluations.
    memory : int or str, optional
        Memory budget in bytes (or ``"2GiB"``) for the points evaluated at once, default half the free
        memory (see :func:`landscape.connect`); ``report["memory"]`` has the budget, bytes a point and K.

    Returns
    -------
    graph : ValleyGraph
    report : dict
        :meth:`ValleyGraph.report` at the levels, and ``polished`` (what was polished, from where to where).
        Each level's ``n_valleys`` counts the minima's components under certified paths: an upper bound
        (``count_is_upper_bound``) unless the problem proves its valleys apart (``separation_proven``,
        :mod:`landscape.valleys.separation`); pairs no method joined are not proven to be in different valleys.
    """
    names = list(names) if names is not None else [f"m{i}" for i in range(thetas.shape[0])]
    if thetas.dim() != 2 or thetas.shape[1] != problem.dim or thetas.shape[0] < 1:
        raise LandscapeError(f"minima must have shape (N >= 1, {problem.dim}), got {tuple(thetas.shape)}")
    plan = plan_memory(problem, memory, dtype=thetas.dtype, device=thetas.device)
    connect_options = {**(connect_options or {}), "memory": plan.budget}  # every path under the one budget
    with budgeted(problem, plan):
        thetas, polished = require_minima(problem, thetas, names, polish_points=polish, steps=polish_steps)
        shown = Progress(progress, f"valleys of {len(names)} minima")
        try:
            alignment = None
            if align != "none":
                thetas, alignment = align_minima(problem, thetas, names, align, shown=shown, generator=generator)
            graph = ValleyGraph.of(problem, thetas, names)
            shown.stage("proving separations")
            graph.separations = proven_separations(problem, thetas)
            graph.stats = ShownTally(graph.stats, shown)
            report_levels = _search(graph, levels, method, merge_method, bisect, attempts, resolution, generator,
                                    connect_options, metrics, tol, shown)
        finally:
            shown.close()
        graph.stats = dict(graph.stats)
        report = graph.report(report_levels, tol=tol)
        if extent:
            add_extents(graph, report, extent, generator)
        report.update({"method": merge_method if isinstance(levels, str) else method, "attempts": attempts,
                       "resolution": resolution, "problem": problem.spec, "alignment": alignment, "polished": polished})
    report["memory"] = plan.summary()
    return graph, report


def _search(graph, levels, method, merge_method, bisect, attempts, resolution, generator, connect_options, metrics,
            tol, shown) -> list[float]:
    problem, thetas = graph.problem, graph.thetas
    if metrics:
        from ..minima.curvature import minimum_metrics

        for i, m in enumerate(minimum_metrics(problem, thetas, generator=generator)):
            graph.graph.nodes[i].update(m)
    if isinstance(levels, str):
        if levels != "auto":
            raise LandscapeError(f"levels must be 'auto' or a list of numbers, got {levels!r}")
        shown.stage(f"merge tree ({merge_method})")
        build_merge_tree(graph, method=merge_method, bisect=bisect, probe=method, resolution=resolution,
                         generator=generator, connect_options=connect_options)
        return event_levels(graph, tol)
    report_levels = sorted(float(u) for u in levels)
    if not report_levels:
        raise LandscapeError("no level given; pass --level U (repeatable) or --levels auto")
    for u in report_levels:
        shown.stage(f"level {u:.4g} ({method})")
        connect_at_level(graph, u, method=method, attempts=attempts, resolution=resolution,
                         generator=generator, connect_options=connect_options)
    return report_levels


def _to_saddle(method: str, options: dict) -> dict:
    """A merge level is a saddle's height: NEB relaxes until its climbing pivot is there, not just below u."""
    return {"saddle": True, **options} if method == "neb" else options
