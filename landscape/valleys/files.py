"""Valley graphs as files: node-link JSON and GraphML (``landscape valleys -o``), and back onto their minima."""

from __future__ import annotations

import json

import networkx as nx
import torch

from .._errors import LandscapeError
from ..problems.problem import Problem
from .graph import ValleyGraph
from .separation import Separation


def write_graph(graph: ValleyGraph, json_path=None, graphml_path=None) -> None:
    """Write the valley graph as networkx node-link JSON and/or GraphML, atomically.

    The edges keep their certificates, the graph its proven separations (:meth:`ValleyGraph.to_networkx`).
    """
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
        With the file's edges (``max_loss``, ``method``, ``certificate``; no witness paths) and separations.

    Raises
    ------
    LandscapeError
        A file that is not a valley graph, or one made from other minima.
    """
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
    try:
        stored = json.loads((data.get("graph") or {}).get("separations") or "[]")
        graph.separations = [Separation(*sorted((node_of[int(i)], node_of[int(j)])), float(below), str(how))
                             for i, j, below, how in stored]
    except (ValueError, KeyError, TypeError) as err:
        raise LandscapeError(f"{path}: its separations are not a list of [i, j, below, how] ({err!s:.80}); "
                             "write it again with: landscape valleys FILES -o graph.json") from None
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
