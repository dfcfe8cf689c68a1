"""Deriving a network's symmetry from its module: trace it (:func:`traced`), walk its chain of layers.

Modules with skip connections or branches are walked as graphs by :mod:`.residual`; this module
holds the operations both walkers understand (:func:`_step`) and the walk of a plain chain. The
module is traced with ``torch.fx`` and the shapes of its values recorded on two samples of
the data; the chain of Linear / Conv / BatchNorm / LayerNorm / elementwise operations is then walked
to find, for each hidden layer, the (parameter, axis) pairs its permutation acts on, and whether the
operations after the layer are positively homogeneous (a rescaling symmetry). A structure that
cannot be understood (shared weights, a grouped convolution between hidden layers) is refused with a clear error rather than guessed.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .._errors import LandscapeError
from ..problems.layout import Layout
from .groups import Axis, Symmetry, UnitGroup

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


# ------------------------------------------------------------------ derivation
def traced(module: nn.Module, sample: torch.Tensor):
    """``torch.fx.symbolic_trace(module)`` with each tensor node's shape in ``node.meta["shape"]`` (run on ``sample``)."""
    import torch.fx

    class Shapes(torch.fx.Interpreter):  # torch.fx's ShapeProp does the same, but costs ~2 s on first use
        def run_node(self, node):
            out = super().run_node(node)
            if isinstance(out, torch.Tensor):
                node.meta["shape"] = tuple(out.shape)
            return out

    try:
        gm = torch.fx.symbolic_trace(module)
        with torch.no_grad():
            Shapes(gm).run(sample)
    except Exception as err:  # noqa: BLE001 - any tracing failure is the module's structure
        msg = " ".join(str(err).split())[:160]
        raise LandscapeError(f"cannot trace {type(module).__name__} to find its symmetries ({type(err).__name__}: "
                             f"{msg}); alignment needs a module torch.fx can trace") from None
    return gm


def is_chain(gm) -> bool:
    """Whether every tensor of the traced graph feeds one operation and every operation reads one tensor."""
    for node in gm.graph.nodes:
        if node.op == "output" or node.meta.get("shape") is None:
            continue
        users = [u for u in node.users if u.op == "output" or u.meta.get("shape") is not None]
        inputs = [a for a in node.all_input_nodes if a.meta.get("shape") is not None]
        if len(users) > 1 or len(inputs) > 1:
            return False
    return True


def walk_chain(gm, layout: Layout, kind: str, *, frozen_statistics: bool = True) -> Symmetry:
    """The symmetry of a traced chain of layers; BatchNorm running statistics restrict it only when they are
    ``frozen_statistics`` (with the ``recompute`` policy they follow θ, so every permutation is one)."""
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
            if node.target in called and _stateful(mod):  # a ReLU called twice (torchvision's BasicBlock) is fine
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
        why = _step(current, node, mod, in_shape, out_shape, frozen_statistics)
        if why and not current.broken:
            current.broken = why
    return Symmetry(layout, groups, gm, dict(gm.named_buffers()), skipped)


def _close(current: _Open, tail: Axis, tap: str, names) -> UnitGroup:
    axes = [*current.heads, *current.passive, tail]
    missing = [a.name for a in axes if a.name not in names]
    if missing:
        raise LandscapeError(f"parameters {missing} of layer {current.name!r} are not in the problem's layout "
                             "(shared or frozen parameters); alignment cannot move them")
    return UnitGroup(current.name, current.size, tuple(axes + current.buffers), current.degree, tap, current.dim,
                     current.block)


def _step(current: _Open, node, mod, in_shape, out_shape, frozen_statistics: bool = True) -> str | None:
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
            if mod.running_mean is not None and frozen_statistics:
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
        current.heads = [Axis(f"{target}.weight", 0, 1, "head")]
        if bias:
            current.heads.append(Axis(f"{target}.bias", 0, 1, "head"))
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


def _stateful(module: nn.Module) -> bool:
    """Whether ``module`` holds parameters or buffers (calling it twice shares them)."""
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())
