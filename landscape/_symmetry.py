"""Symmetries of a network's flat parameters: hidden-unit permutations and positive rescalings.

Permuting the hidden units of a layer (the rows of the weight and bias that produce them, the
columns of the weight that reads them, and every per-unit parameter in between) leaves the
network's function unchanged; so does scaling a unit's incoming weights by c > 0 and its outgoing
weights by c^-k when every operation between them is positively homogeneous of degree k
(ReLU, leaky ReLU, identity, max/avg pooling: k = 1; the square: k = 2). Two minima that differ by
such a transformation are the same function, yet the straight path between them can cross a high
barrier (Freeman & Bruna, ICLR 2017): these symmetries must be divided out before paths and
valleys mean anything (Ainsworth, Hayase & Srinivasa, "Git Re-Basin", ICLR 2023).

The symmetry is derived from the module itself, never from per-model tables: the module is
traced with ``torch.fx``, shapes are propagated on one sample of the data, and the chain of
Linear / Conv / BatchNorm / LayerNorm / elementwise layers is walked to find, for each hidden
layer, the (parameter, axis) pairs its permutation acts on. A structure that cannot be
understood (a residual connection, a branch, shared weights, a grouped convolution between
hidden layers) is refused with a clear error rather than guessed.
"""

from __future__ import annotations

import math
import operator
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ._errors import LandscapeError
from ._layout import Layout

#: What a unit's transformation does to an axis. ``head``: permuted and multiplied by c (the
#: weight rows and bias producing the unit, or the affine normalization after them); ``tail``:
#: permuted and multiplied by c^-k (the columns of the next layer); ``passive``: permuted only;
#: ``buffer``: a module buffer outside θ (BatchNorm running statistics) — units may be exchanged
#: only where it agrees, since θ cannot carry it along.
ROLES = ("head", "tail", "passive", "buffer")


@dataclass(frozen=True)
class Axis:
    """One axis of one named tensor that a hidden layer's units run along.

    Attributes
    ----------
    name : str
        Parameter name in the problem's layout (or a buffer name, for role ``"buffer"``).
    axis : int
        Tensor axis, without batch dimensions.
    block : int
        Consecutive entries per unit along the axis (a convolution channel flattened into a
        Linear layer's input spans H·W columns).
    role : str
        One of :data:`ROLES`.
    """

    name: str
    axis: int
    block: int = 1
    role: str = "passive"


@dataclass(frozen=True)
class UnitGroup:
    """The units of one hidden layer: what a permutation of them (and a rescaling) acts on.

    Attributes
    ----------
    name : str
        Qualified name of the module producing the units (``"0"``, ``"features.3"``).
    size : int
        Number of units n.
    axes : tuple of Axis
    degree : float or None
        k such that the operations between the head and the tail are positively homogeneous of
        degree k, σ(cz) = c^k σ(z) for c > 0; None when the units have no rescaling symmetry.
    tap : str
        The traced node whose output holds the units' activations (the input of the next layer).
    tap_dim : int
        Axis of the units in that output (1 for channels, the last axis for features).
    tap_block : int
        Consecutive entries per unit along that axis (H·W for channels flattened into features).
    """

    name: str
    size: int
    axes: tuple[Axis, ...]
    degree: float | None
    tap: str
    tap_dim: int
    tap_block: int = 1

    @property
    def rescalable(self) -> bool:
        return self.degree is not None

    def summary(self) -> dict:
        return {"name": self.name, "size": self.size, "degree": self.degree,
                "axes": [f"{a.name}[{a.axis}]" + (f"x{a.block}" if a.block > 1 else "") + f":{a.role}"
                         for a in self.axes]}


# ------------------------------------------------------------------ the operations of a chain
# Degree of positive homogeneity of elementwise / channelwise operations; None: elementwise but
# not homogeneous (permutations pass through, rescalings do not).
_MODULES = {nn.ReLU: 1, nn.LeakyReLU: 1, nn.PReLU: 1, nn.Identity: 1, nn.Dropout: 1, nn.Dropout1d: 1,
            nn.Dropout2d: 1, nn.Dropout3d: 1, nn.AlphaDropout: 1, nn.Sigmoid: None, nn.Tanh: None,
            nn.GELU: None, nn.SiLU: None, nn.ELU: None, nn.CELU: None, nn.SELU: None, nn.Softplus: None,
            nn.Mish: None, nn.Hardtanh: None, nn.ReLU6: None, nn.Hardswish: None, nn.Hardsigmoid: None,
            nn.LogSigmoid: None, nn.Softsign: None, nn.Tanhshrink: None}
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
          nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_FUNCTIONS = {torch.relu: 1, F.relu: 1, F.leaky_relu: 1, F.dropout: 1, torch.tanh: None, F.tanh: None,
              torch.sigmoid: None, F.sigmoid: None, F.gelu: None, F.silu: None, F.elu: None, F.softplus: None,
              F.mish: None, F.relu6: None, F.hardtanh: None, torch.square: 2, operator.neg: 1}
_FUNCTION_POOLS = (F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                   F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d)
_METHODS = {"relu": 1, "tanh": None, "sigmoid": None, "square": 2, "contiguous": 1, "clone": 1, "neg": 1}
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class _Open:
    """A hidden layer being walked: its units and what has been found to act on them."""

    name: str
    size: int
    dim: int
    heads: list
    passive: list = field(default_factory=list)
    buffers: list = field(default_factory=list)
    degree: float | None = 1
    block: int = 1
    broken: str | None = None

    def times(self, k):
        self.degree = None if (self.degree is None or k is None) else self.degree * k


class Symmetry:
    """The hidden-unit permutations and rescalings of a network problem, acting on flat θ.

    Build it with :func:`symmetry`. Permutations are given per group as index tensors ``perm`` of
    shape (n,) — or (K, n), one per row of a (K, D) batch — meaning "unit j of the result is unit
    ``perm[j]`` of the input"; scales as positive tensors of the same shapes.
    """

    def __init__(self, layout: Layout, groups, graph, buffers: dict, skipped=()):
        self.layout = layout
        self.groups: tuple[UnitGroup, ...] = tuple(groups)
        self.graph = graph
        self.buffers = buffers
        self.skipped = tuple(skipped)

    def __repr__(self):
        return f"<Symmetry {[(g.name, g.size) for g in self.groups]}>"

    @property
    def rescalable(self) -> bool:
        """Whether any hidden layer has a positive-rescaling symmetry."""
        return any(g.rescalable for g in self.groups)

    def summary(self) -> list[dict]:
        return [g.summary() for g in self.groups]

    # -------------------------------------------------------------- group elements
    def identity(self, k: int | None = None, device=None) -> dict[str, torch.Tensor]:
        """The identity permutation of every group, shape (n,) or (k, n)."""
        out = {}
        for g in self.groups:
            p = torch.arange(g.size, device=device)
            out[g.name] = p if k is None else p.expand(k, g.size).clone()
        return out

    def random(self, *, generator: torch.Generator | None = None, rescale: bool = False, spread: float = 2.0):
        """A random element: uniform permutations and, where a rescaling is a symmetry, log-uniform
        scales in [1/spread, spread].

        Returns
        -------
        perms, scales : dict of str to Tensor, shape (n,)
        """
        perms, scales = {}, {}
        for g in self.groups:
            perms[g.name] = torch.randperm(g.size, generator=generator)
            if rescale and g.rescalable:
                u = torch.rand(g.size, generator=generator, dtype=torch.float64) * 2 - 1
                scales[g.name] = torch.exp(u * math.log(spread))
        return perms, scales

    def inverse(self, perms: dict, scales: dict | None = None):
        """The inverse element: ``transform(transform(θ, p, s), *inverse(p, s)) == θ``."""
        inv = {k: torch.argsort(p, dim=-1) for k, p in perms.items()}
        inv_scales = {k: 1.0 / (s.gather(-1, inv[k].to(s.device)) if k in inv else s) for k, s in (scales or {}).items()}
        return inv, inv_scales

    # -------------------------------------------------------------- actions on θ
    def permute(self, theta: torch.Tensor, perms: dict) -> torch.Tensor:
        """θ with the units of each group reordered: unit j of the result is unit ``perms[g][j]``.

        Parameters
        ----------
        theta : Tensor, shape (D,) or (K, D)
        perms : dict of str to LongTensor, shape (n,) or (K, n)

        Returns
        -------
        Tensor, same shape as ``theta``
        """
        return self._act(theta, perms, "permute")

    def rescale(self, theta: torch.Tensor, scales: dict) -> torch.Tensor:
        """θ with unit j of each group scaled: heads by c_j, tails by c_j^-k (a function-preserving map).

        Parameters
        ----------
        theta : Tensor, shape (D,) or (K, D)
        scales : dict of str to Tensor, shape (n,) or (K, n), positive; groups left out keep c = 1
        """
        for name in scales:
            group = self._group(name)
            if not group.rescalable:
                raise LandscapeError(f"the units of layer {name!r} have no rescaling symmetry (the operations after "
                                     "them are not positively homogeneous); do not rescale them")
        return self._act(theta, scales, "scale")

    def transform(self, theta: torch.Tensor, perms: dict | None = None, scales: dict | None = None) -> torch.Tensor:
        """``rescale(permute(θ, perms), scales)``: one element of the symmetry group applied to θ."""
        out = self.permute(theta, perms) if perms else theta
        return self.rescale(out, scales) if scales else out

    def _group(self, name) -> UnitGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise LandscapeError(f"no hidden layer {name!r}; the layers are {[g.name for g in self.groups]}")

    def _act(self, theta, elements, kind):
        if theta.shape[-1] != self.layout.dim or theta.dim() not in (1, 2):
            raise LandscapeError(f"parameters have shape {tuple(theta.shape)}, expected (D,) or (K, D) with "
                                 f"D = {self.layout.dim}")
        nb = theta.dim() - 1
        out = theta.clone()
        views = self.layout.unflatten(out)
        source = self.layout.unflatten(theta)
        new = {}
        for name, value in elements.items():
            group = self._group(name)
            value = value.to(theta.device)
            if value.shape[-1] != group.size or value.dim() > 1 + nb:
                raise LandscapeError(f"layer {name!r} has {group.size} units; got an element of shape "
                                     f"{tuple(value.shape)}")
            for ax in group.axes:
                if ax.role == "buffer" or (kind == "scale" and ax.role == "passive"):
                    continue
                t = new.get(ax.name, source[ax.name])
                if kind == "permute":
                    new[ax.name] = _take(t, ax.axis, ax.block, nb, value)
                else:
                    power = 1.0 if ax.role == "head" else -float(group.degree)
                    new[ax.name] = _multiply(t, ax.axis, ax.block, nb, value.to(torch.float64).pow(power))
        for name, t in new.items():
            views[name].copy_(t)
        return out

    # -------------------------------------------------------------- canonical rescaling
    def balance(self, theta: torch.Tensor, *, tol: float = 1e-10, max_iter: int = 10_000):
        """The canonical representative of θ's rescaling orbit: the one of least squared norm.

        Minimises Σ‖P‖² over the per-unit rescalings of every rescalable layer. In log-scales
        the objective is a sum of exponentials of linear forms (convex), and the optimum of one
        layer given the others is in closed form: with A_j and B_j the squared norms of unit j's
        head and tail entries and k the degree, c_j = (k B_j / A_j)^(1/(2k+2)). For k = 1 the
        optimum balances every unit, ‖incoming‖ = ‖outgoing‖ (the ENorm of Stock et al., ICLR 2019;
        gradient flow preserves ‖in‖² − ‖out‖², Du, Hu & Lee, NeurIPS 2018). Layers are swept
        until no scale moves by more than ``tol`` (relative). Units with no incoming or no outgoing
        weight are left as they are.

        Parameters
        ----------
        theta : Tensor, shape (D,) or (K, D)

        Returns
        -------
        balanced : Tensor, same shape and dtype as ``theta``
        scales : dict of str to Tensor (float64), shape (n,) or (K, n)
            ``balanced == rescale(theta, scales)``.
        sweeps : int
        """
        work = theta.detach().to(torch.float64)
        groups = [g for g in self.groups if g.rescalable]
        batch = tuple(theta.shape[:-1])
        total = {g.name: torch.ones(*batch, g.size, dtype=torch.float64, device=theta.device) for g in groups}
        sweeps = 0
        for sweeps in range(1, max_iter + 1):
            worst = 0.0
            for g in groups:
                params = self.layout.unflatten(work)
                nb = work.dim() - 1
                a = sum(_unit_sq(params[x.name], x.axis, x.block, nb) for x in g.axes if x.role == "head")
                b = sum(_unit_sq(params[x.name], x.axis, x.block, nb) for x in g.axes if x.role == "tail")
                k = float(g.degree)
                ok = (a > 0) & (b > 0)
                c = torch.where(ok, (k * b / torch.where(ok, a, 1.0)).pow(1.0 / (2 * k + 2)), torch.ones_like(a))
                worst = max(worst, float(c.log().abs().max()) if c.numel() else 0.0)
                work = self._act(work, {g.name: c}, "scale")
                total[g.name] = total[g.name] * c
            if worst <= tol:
                break
        return work.to(theta.dtype), total, sweeps

    # -------------------------------------------------------------- constraints
    def exchangeable(self, name: str) -> torch.Tensor | None:
        """Bool (n, n): which units of a layer may trade places. None when all may.

        Units whose buffers (BatchNorm running statistics, outside θ) differ cannot: a permuted θ
        would meet the other unit's statistics and compute another function.
        """
        group = self._group(name)
        keys = []
        for ax in group.axes:
            if ax.role == "buffer":
                t = self.buffers[ax.name].detach().to(torch.float64)
                keys.append(t.movedim(ax.axis, 0).reshape(group.size, -1))
        if not keys:
            return None
        rows = torch.cat(keys, dim=1)
        ids = torch.unique(rows, dim=0, return_inverse=True)[1]
        if bool((ids == ids[0]).all()):
            return None
        return ids[:, None] == ids[None, :]


# ------------------------------------------------------------------ tensor helpers
def _blocks(t, axis, block, nb):
    """View of t with its unit axis split into (n, block); returns the view and the unit axis index."""
    ax = nb + axis
    n = t.shape[ax] // block
    return t.reshape(*t.shape[:ax], n, block, *t.shape[ax + 1:]), ax


def _take(t, axis, block, nb, perm):
    v, ax = _blocks(t, axis, block, nb)
    if perm.dim() == 1:
        out = v.index_select(ax, perm)
    else:
        shape = [perm.shape[0]] + [1] * (ax - 1) + [perm.shape[1]] + [1] * (v.dim() - ax - 1)
        out = v.gather(ax, perm.reshape(shape).expand(*v.shape[:ax], perm.shape[1], *v.shape[ax + 1:]))
    return out.reshape(t.shape)


def _multiply(t, axis, block, nb, factor):
    v, ax = _blocks(t, axis, block, nb)
    lead = factor.shape[:-1]
    shape = [*lead] + [1] * (ax - len(lead)) + [factor.shape[-1]] + [1] * (v.dim() - ax - 1)
    return (v * factor.reshape(shape).to(t.dtype)).reshape(t.shape)


def _unit_sq(t, axis, block, nb):
    """Squared norm of each unit's entries, shape (*batch, n)."""
    v, ax = _blocks(t, axis, block, nb)
    return v.pow(2).movedim(ax, -1).flatten(nb, -2).sum(nb)


def units(t: torch.Tensor, axis: int, block: int, nb: int) -> torch.Tensor:
    """The entries of each unit as rows: shape (*batch, n, m)."""
    v, ax = _blocks(t, axis, block, nb)
    return v.movedim(ax, nb).flatten(nb + 1)


# ------------------------------------------------------------------ derivation
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def symmetry(problem) -> Symmetry:
    """The permutation (and rescaling) symmetry of a network problem, derived from its module.

    The module is traced with ``torch.fx`` and its shapes recorded on two training samples; its
    chain of layers is then walked. Understood: ``Linear``, ``Conv1d/2d/3d`` (groups = 1),
    ``BatchNorm1d/2d/3d`` (affine parameters permuted; running statistics constrain which units
    may trade places), ``LayerNorm`` over the unit axis and all after it, ``Flatten`` of channels
    into features, pooling, dropout, and elementwise activations as modules, functions or
    methods (ReLU, leaky ReLU, PReLU, identity, the square, sigmoid, tanh, GELU, SiLU, ...).

    Parameters
    ----------
    problem : NetworkProblem

    Returns
    -------
    Symmetry
        One :class:`UnitGroup` per hidden layer, in forward order (the output layer has none).

    Raises
    ------
    LandscapeError
        If the problem is not a network, or its module has a residual connection, a branch, shared
        weights or an operation between hidden layers that is not known to commute with permutations.
    """
    if problem in _CACHE:
        return _CACHE[problem]
    module = getattr(problem, "module", None)
    if not callable(module):
        raise LandscapeError(f"problem {problem.name!r} is not a network; permutation alignment needs a network "
                             "problem (an embedded MLP or landscape.from_module)")
    module = module()
    sample = problem.data("train")[0][:2]
    built = _derive(module, sample, problem.layout)
    _CACHE[problem] = built
    return built


def _derive(module: nn.Module, sample: torch.Tensor, layout: Layout) -> Symmetry:
    import torch.fx

    class Shapes(torch.fx.Interpreter):  # torch.fx's ShapeProp does the same, but costs ~2 s on first use
        def run_node(self, node):
            out = super().run_node(node)
            if isinstance(out, torch.Tensor):
                node.meta["shape"] = tuple(out.shape)
            return out

    kind = type(module).__name__
    try:
        gm = torch.fx.symbolic_trace(module)
        with torch.no_grad():
            Shapes(gm).run(sample)
    except Exception as err:  # noqa: BLE001 - any tracing failure is the module's structure
        msg = " ".join(str(err).split())[:160]
        raise LandscapeError(f"cannot trace {kind} to find its symmetries ({type(err).__name__}: {msg}); "
                             "alignment needs a module torch.fx can trace") from None
    modules = dict(gm.named_modules())
    names = set(layout.names)

    def shape(node):
        return node.meta.get("shape")

    tensors = [n for n in gm.graph.nodes if n.op != "output" and shape(n) is not None]
    groups, skipped, called, current = [], [], set(), None

    def refuse(node, why):
        raise LandscapeError(f"{kind}: cannot derive its permutation symmetry at {node.op} {node.target!r}: {why}; "
                             "alignment supports chains of Linear/Conv/BatchNorm/LayerNorm/activation layers")

    for i, node in enumerate(tensors):
        if node.op == "get_attr":
            refuse(node, "it reads a parameter or tensor directly (not through a known layer)")
        users = [u for u in node.users if u.op == "output" or shape(u) is not None]
        if len(users) > 1:
            refuse(node, f"its output feeds {len(users)} operations (a residual connection or a branch)")
        if node.op == "placeholder":
            if i > 0:
                refuse(node, "the module takes more than one tensor input")
            continue
        inputs = {a for a in node.all_input_nodes if shape(a) is not None}
        if inputs != {tensors[i - 1]}:
            refuse(node, "it combines several tensors (a residual connection or a branch)")
        in_shape, out_shape = shape(tensors[i - 1]), shape(node)
        mod = modules.get(node.target) if node.op == "call_module" else None
        if mod is not None:
            if node.target in called:
                refuse(node, "the module is called twice (shared weights)")
            called.add(node.target)
        if isinstance(mod, (nn.Linear, *_CONVS)):
            conv = not isinstance(mod, nn.Linear)
            if conv and mod.groups != 1:
                if current is not None:
                    refuse(node, f"grouped convolution (groups={mod.groups})")
                skipped.append(f"{node.target}: grouped convolution")
                current = None
                continue
            if current is not None:
                if current.broken:
                    refuse(node, f"its input passed through {current.broken}")
                unit_dim = 1 if conv else len(in_shape) - 1
                fan = mod.in_channels if conv else mod.in_features
                if current.dim != unit_dim or fan != current.size * current.block:
                    refuse(node, f"it reads {fan} inputs along axis {unit_dim}, not the {current.size} units of "
                                 f"layer {current.name!r}")
                tail = Axis(f"{node.target}.weight", 1, current.block, "tail")
                groups.append(_close(current, tail, tensors[i - 1].name, names))
            heads = [Axis(f"{node.target}.weight", 0, 1, "head")]
            if mod.bias is not None:
                heads.append(Axis(f"{node.target}.bias", 0, 1, "head"))
            current = _Open(node.target, mod.out_channels if conv else mod.out_features,
                            1 if conv else len(out_shape) - 1, heads)
            continue
        if current is None:
            if mod is not None and any(True for _ in mod.parameters()):
                skipped.append(f"{node.target}: {type(mod).__name__} before the first hidden layer")
            continue
        why = _step(current, node, mod, in_shape, out_shape)
        if why and not current.broken:
            current.broken = why
    return Symmetry(layout, groups, gm, {k: v for k, v in module.named_buffers()}, skipped)


def _close(current: _Open, tail: Axis, tap: str, names) -> UnitGroup:
    axes = [*current.heads, *current.passive, tail]
    missing = [a.name for a in axes if a.name not in names]
    if missing:
        raise LandscapeError(f"parameters {missing} of layer {current.name!r} are not in the problem's layout "
                             "(shared or frozen parameters); alignment cannot move them")
    return UnitGroup(current.name, current.size, tuple(axes + current.buffers), current.degree, tap, current.dim,
                     current.block)


def _step(current: _Open, node, mod, in_shape, out_shape) -> str | None:
    """Fold one operation into the open hidden layer; return why it breaks the symmetry, or None."""
    what = f"{node.op} {node.target!r}"
    channel_ok = len(in_shape) >= 3 and current.dim == 1 and out_shape[1] == current.size
    if mod is not None:
        kind = type(mod)
        if kind in _MODULES:
            if kind is nn.PReLU and mod.num_parameters > 1:
                if mod.num_parameters != current.size or current.dim != 1:
                    return f"{what} (PReLU with {mod.num_parameters} slopes)"
                current.passive.append(Axis(f"{node.target}.weight", 0, 1, "passive"))
            current.times(_MODULES[kind])
            return None
        if isinstance(mod, _POOLS):
            return None if channel_ok else f"{what} (pooling across units)"
        if isinstance(mod, nn.Flatten):
            return _flatten(current, in_shape, out_shape, what)
        if isinstance(mod, _BATCHNORMS):
            if mod.num_features != current.size or current.dim != 1:
                return f"{what} (BatchNorm over {mod.num_features} features)"
            _normalization(current, node.target, mod.affine, mod.bias is not None)
            if mod.running_mean is not None:
                current.buffers += [Axis(f"{node.target}.running_mean", 0, 1, "buffer"),
                                    Axis(f"{node.target}.running_var", 0, 1, "buffer")]
            return None
        if isinstance(mod, nn.LayerNorm):
            if tuple(mod.normalized_shape) != tuple(in_shape[current.dim:]):
                return f"{what} (LayerNorm over {tuple(mod.normalized_shape)}, not the units and what follows them)"
            _normalization(current, node.target, mod.elementwise_affine, getattr(mod, "bias", None) is not None)
            return None
        return f"{what} ({type(mod).__name__}, not known to commute with permutations)"
    target = node.target
    if node.op == "call_function":
        if target in _FUNCTIONS:
            current.times(_FUNCTIONS[target])
            return None
        if target in _FUNCTION_POOLS:
            return None if channel_ok else f"{what} (pooling across units)"
        if target is torch.flatten:
            return _flatten(current, in_shape, out_shape, what)
        if target in (operator.mul, operator.truediv, operator.pow, torch.pow, operator.add, operator.sub):
            return _arithmetic(current, node, target, what)
    if node.op == "call_method":
        if target in _METHODS:
            current.times(_METHODS[target])
            return None
        if target in ("flatten", "view", "reshape"):
            return _flatten(current, in_shape, out_shape, what)
        if target in ("mul", "div", "pow", "add", "sub"):
            ops = {"mul": operator.mul, "div": operator.truediv, "pow": operator.pow, "add": operator.add,
                   "sub": operator.sub}
            return _arithmetic(current, node, ops[target], what)
    return f"{what} (not known to commute with permutations)"


def _normalization(current: _Open, target: str, affine: bool, bias: bool):
    """A per-unit affine normalization: it becomes the units' head (its scale and shift)."""
    if affine:
        current.passive += [Axis(a.name, a.axis, a.block, "passive") for a in current.heads]
        current.heads = [Axis(f"{target}.weight", 0, 1, "head")] + ([Axis(f"{target}.bias", 0, 1, "head")] if bias else [])
        current.degree = 1
    else:
        current.degree = None


def _flatten(current: _Open, in_shape, out_shape, what) -> str | None:
    """A reshape: fine if it keeps the units' axis and what precedes it, or flattens channels into features."""
    keep = current.dim + 1
    if len(out_shape) >= keep and tuple(out_shape[:keep]) == tuple(in_shape[:keep]):
        return None
    rest = math.prod(in_shape[2:])
    if (current.dim == 1 and len(out_shape) == 2 and out_shape[0] == in_shape[0]
            and out_shape[1] == current.size * current.block * rest):
        current.block *= rest
        return None
    return f"{what} (a reshape that is not a flatten of the units)"


def _arithmetic(current: _Open, node, op, what) -> str | None:
    args = list(node.args)
    tensors = [a for a in args if hasattr(a, "op")]
    consts = [a for a in args if not hasattr(a, "op")]
    if op is operator.mul and len(args) == 2 and args[0] is args[1]:
        current.times(2)
        return None
    if len(tensors) != 1 or len(consts) != 1 or not isinstance(consts[0], (int, float)):
        return f"{what} (arithmetic with a tensor)"
    c = consts[0]
    if op is operator.mul or (op is operator.truediv and args[0] is tensors[0]):
        current.times(1)
        return None
    if op in (operator.pow, torch.pow) and args[0] is tensors[0] and isinstance(c, int) and c >= 1:
        current.times(c)
        return None
    current.times(None)  # a shift: still equivariant, no longer homogeneous
    return None
