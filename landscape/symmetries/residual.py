"""The permutation symmetry of a network with skip connections, derived from its traced graph.

In a residual network the units of several layers are added together (``out + skip``), so they must
be permuted together: every layer writing into one residual stream, every per-channel parameter
applied to it (BatchNorm's scale, shift and statistics) and every layer reading it share one
permutation. Git Re-Basin writes this "permutation spec" by hand for each architecture (Ainsworth,
Hayase & Srinivasa, ICLR 2023, Appendix A); here it is derived. Every tensor of the graph is given
the *unit space* its channel (or feature) axis runs along; a Linear or Conv layer starts a new space;
elementwise and per-channel operations keep it (:func:`landscape.symmetries.trace._step` decides
which do); adding two tensors joins their spaces (union-find). The spaces that touch neither the
input nor the output are the groups.

Rescaling (c on a unit's producers, c^-k on its readers) is kept only for a space with one producer,
one reader and no branch, where the chain's argument holds; a space joined by a skip or read twice is
permuted only.
"""

from __future__ import annotations

import operator

import torch
from torch import nn

from .._errors import LandscapeError
from ..problems.layout import Layout
from .groups import Axis, Symmetry, UnitGroup
from .trace import _CONVS, _Open, _stateful, _step

_ADDS = {operator.add, torch.add, "add"}


class _Spaces:
    """Union-find over unit spaces, each an :class:`_Open` collecting its axes, producers and readers."""

    def __init__(self):
        self.parent: list[int] = []
        self.open: list[_Open] = []
        self.producers: list[list[str]] = []
        self.fixed: list[str | None] = []
        self.tied: list[bool] = []  # joined by a skip or read more than once: permutation only
        self.taps: list[tuple | None] = []

    def new(self, name, size, dim, heads, fixed=None) -> int:
        self.parent.append(len(self.parent))
        self.open.append(_Open(name, size, dim, heads))
        self.producers.append([name] if fixed is None else [])
        self.fixed.append(fixed)
        self.tied.append(False)
        self.taps.append(None)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> int:
        i, j = sorted((self.find(i), self.find(j)))  # the older space stays the root: groups keep forward order
        if i == j:
            return i
        a, b = self.open[i], self.open[j]
        a.heads += b.heads
        a.passive += b.passive
        a.buffers += b.buffers
        a.broken = a.broken or b.broken
        self.producers[i] += self.producers[j]
        self.fixed[i] = self.fixed[i] or self.fixed[j]
        self.tied[i] = True
        self.taps[i] = self.taps[i] or self.taps[j]
        self.parent[j] = i
        return i


def walk_graph(gm, layout: Layout, kind: str, *, frozen_statistics: bool = True) -> Symmetry:
    """The symmetry of a traced module whose tensors branch and join (skip connections).

    Parameters
    ----------
    gm : torch.fx.GraphModule
        Traced by :func:`landscape.symmetries.trace.traced` (shapes in ``node.meta``).
    layout : Layout
    kind : str
        The module's class name, for messages.
    frozen_statistics : bool
        Whether BatchNorm running statistics are stored (they then constrain which units may trade places).

    Returns
    -------
    Symmetry
        One :class:`UnitGroup` per unit space; a group's name joins the names of the layers writing into it
        with ``+`` (``"stem+blocks.0.conv2"``).
    """
    modules = dict(gm.named_modules())
    names = set(layout.names)
    spaces = _Spaces()
    where: dict = {}  # node -> (space, unit axis, entries per unit)
    called, readers, skipped = set(), {}, []

    def shape(node):
        return node.meta.get("shape")

    def refuse(node, why):
        raise LandscapeError(f"{kind}: cannot derive its permutation symmetry at {node.op} {node.target!r}: {why}; "
                             "alignment supports Linear/Conv/BatchNorm/LayerNorm/activation layers joined by additions")

    for node in gm.graph.nodes:
        if node.op == "output":
            for arg in node.all_input_nodes:
                if arg in where:
                    space = spaces.find(where[arg][0])
                    spaces.fixed[space] = spaces.fixed[space] or "output"
            continue
        out_shape = shape(node)
        if out_shape is None:
            continue
        if node.op == "get_attr":
            refuse(node, "it reads a parameter or tensor directly (not through a known layer)")
        if node.op == "placeholder":
            if any(n.op == "placeholder" for n in where):
                refuse(node, "the module takes more than one tensor input")
            dim = 1 if len(out_shape) >= 3 else len(out_shape) - 1
            where[node] = (spaces.new("input", out_shape[dim], dim, [], fixed="input"), dim, 1)
            continue
        inputs = [a for a in node.all_input_nodes if a in where]
        if not inputs:
            refuse(node, "it makes a tensor from no input")
        for a in inputs:
            if sum(1 for u in a.users if u.op == "output" or shape(u) is not None) > 1:
                spaces.tied[spaces.find(where[a][0])] = True
        mod = modules.get(node.target) if node.op == "call_module" else None
        if mod is not None:
            if node.target in called and _stateful(mod):  # a ReLU called twice (torchvision's BasicBlock) is fine
                refuse(node, "the module is called twice (shared weights)")
            called.add(node.target)
        if len(inputs) == 2 and node.op in ("call_function", "call_method") and node.target in _ADDS:
            (s1, d1, b1), (s2, d2, b2) = where[inputs[0]], where[inputs[1]]
            if shape(inputs[0]) != shape(inputs[1]) or (d1, b1) != (d2, b2):
                refuse(node, f"it adds tensors of shapes {shape(inputs[0])} and {shape(inputs[1])}")
            where[node] = (spaces.union(s1, s2), d1, b1)
            continue
        if len(inputs) != 1:
            refuse(node, f"it combines {len(inputs)} tensors in a way other than an addition")
        src = inputs[0]
        space, dim, block = where[src]
        space = spaces.find(space)
        current = spaces.open[space]
        in_shape = shape(src)
        if isinstance(mod, (nn.Linear, *_CONVS)):
            conv = not isinstance(mod, nn.Linear)
            if conv and mod.groups != 1:
                refuse(node, f"grouped convolution (groups={mod.groups})")
            unit_dim = 1 if conv else len(in_shape) - 1
            fan = mod.in_channels if conv else mod.in_features
            if dim != unit_dim or fan != current.size * block:
                refuse(node, f"it reads {fan} inputs along axis {unit_dim}, not the {current.size} units of "
                             f"{current.name!r}")
            if spaces.fixed[space] is None and current.broken:
                refuse(node, f"its input passed through {current.broken}")
            readers.setdefault(space, []).append(Axis(f"{node.target}.weight", 1, block, "tail"))
            spaces.taps[space] = spaces.taps[space] or (src.name, dim, block)
            heads = [Axis(f"{node.target}.weight", 0, 1, "head")]
            if mod.bias is not None:
                heads.append(Axis(f"{node.target}.bias", 0, 1, "head"))
            out_dim = 1 if conv else len(out_shape) - 1
            where[node] = (spaces.new(node.target, out_shape[out_dim], out_dim, heads), out_dim, 1)
            continue
        current.dim, current.block = dim, block
        why = _step(current, node, mod, in_shape, out_shape, frozen_statistics)
        if why and spaces.fixed[space] is None and not current.broken:
            current.broken = why
        where[node] = (space, current.dim, current.block)
        if mod is not None and spaces.fixed[space] and any(True for _ in mod.parameters()):
            skipped.append(f"{node.target}: {type(mod).__name__} on the {spaces.fixed[space]}'s units")

    groups = []
    for i in range(len(spaces.parent)):
        if spaces.find(i) != i or spaces.fixed[i] or i not in readers:
            continue
        current, tails = spaces.open[i], readers[i]
        tied = spaces.tied[i] or len(tails) > 1
        axes = [*current.heads, *current.passive, *tails]
        missing = [a.name for a in axes if a.name not in names]
        if missing:
            raise LandscapeError(f"parameters {missing} of {current.name!r} are not in the problem's layout "
                                 "(shared or frozen parameters); alignment cannot move them")
        tap, tap_dim, tap_block = spaces.taps[i]
        degree = None if tied else current.degree
        groups.append(UnitGroup("+".join(spaces.producers[i]), current.size, tuple(axes + current.buffers),
                                degree, tap, tap_dim, tap_block))
    _check_disjoint(groups, kind)
    return Symmetry(layout, groups, gm, dict(gm.named_buffers()), skipped)


def _check_disjoint(groups, kind):
    """No (tensor, axis) may be moved by two groups: that would be a structure this walk misread."""
    seen = {}
    for g in groups:
        for a in g.axes:
            key = (a.name, a.axis)
            if key in seen and seen[key] != g.name:
                raise LandscapeError(f"{kind}: {a.name} axis {a.axis} belongs to the units of both {seen[key]!r} "
                                     f"and {g.name!r}; alignment cannot derive this network's symmetry")
            seen[key] = g.name
