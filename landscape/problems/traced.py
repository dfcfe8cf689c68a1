"""Bounds of the loss over segments for networks beyond plain MLPs, through a ``torch.fx`` trace of the module.

The module is traced once (:func:`graph_plan`); every node must be an operation below, else the problem
keeps the dense check and says which operation stopped the proof. Values are carried as in
:mod:`.bounds`, v(s) = v_c + s·v_s + e with |e| ≤ v_r, for all pieces and samples at once in the
module's own layout with the batch dimension holding P·N rows (pieces × samples), so that shape
operations (``flatten``, ``view(x.size(0), −1)``) run unchanged.

- ``Linear``, ``Conv1d/2d/3d`` (zero padding): the weight W_c + s·W_h times the input: the constant
  and linear parts exactly, the s² term W_h·x_s half to the centre and half to the remainder, the
  remainder through the layer with weights |W_c| + |W_h| (one ``vmap`` over the pieces).
- ``BatchNorm1d/2d/3d`` with frozen statistics (evaluation mode, running buffers): (x − μ)/√(σ² + ε), a
  constant positive scale per channel, then times γ_c + s·γ_h (the same product as a layer's weight)
  plus β_c + s·β_h.
- ReLU, leaky ReLU (0 ≤ α ≤ 1), tanh, sigmoid, GELU (exact form), softplus, square: the relaxations of
  :mod:`.bounds` (chords for the piecewise linear ones, mean-value forms with the slope's exact range
  for the smooth ones).
- Average pooling (any, adaptive too), ``Flatten``, ``view``/``reshape``, ``Identity``, ``Dropout``
  (evaluation mode): linear maps with non-negative weights, exact.
- Max pooling (any, adaptive too): with j the window's largest centre, max_i v_i(s) lies between
  v_j(s) − r_j and v_j(s) + U, U = max_i(c_i + |s_i| + r_i) − c_j + |s_j|; both sides hold for every s,
  and U → 0 as the piece shrinks to a point.
- Residual additions and subtractions of two values (sum of the models), scaling by a constant.

Losses as in :mod:`.bounds` (cross-entropy, MSE, L1, exponential), all float64, inflated by its ``ROUNDING``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from . import bounds
from .layout import Layout


@dataclass
class Model:
    """v(s) = c + s·s_ ± r over the P·N rows; ``s_`` and ``r`` are None where they are zero."""

    c: torch.Tensor
    s_: torch.Tensor | None = None
    r: torch.Tensor | None = None

    def map(self, fn) -> "Model":
        """A linear map with non-negative weights applied to every part (exact)."""
        return Model(fn(self.c), None if self.s_ is None else fn(self.s_), None if self.r is None else fn(self.r))

    def full(self):
        zero = torch.zeros_like(self.c)
        return self.c, zero if self.s_ is None else self.s_, zero if self.r is None else self.r


def _add(a, b):
    return None if a is None and b is None else b if a is None else a if b is None else a + b


CONVS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
MAX_POOLS = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}
ADAPTIVE_MAX = {nn.AdaptiveMaxPool1d: F.adaptive_max_pool1d, nn.AdaptiveMaxPool2d: F.adaptive_max_pool2d,
                nn.AdaptiveMaxPool3d: F.adaptive_max_pool3d}
#: Modules that are linear maps with non-negative weights, applied to every part as they are.
POSITIVE = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d, nn.Flatten, nn.Identity, nn.Dropout, nn.Unflatten)
#: Elementwise activation functions (as called in ``forward``) and their relaxations.
FUNCTIONS = {torch.relu: bounds.leaky_relu(0.0), F.relu: bounds.leaky_relu(0.0), torch.tanh: bounds.RELAXATIONS[torch.tanh],
             F.tanh: bounds.RELAXATIONS[torch.tanh], torch.sigmoid: bounds.RELAXATIONS[torch.sigmoid],
             F.sigmoid: bounds.RELAXATIONS[torch.sigmoid], bounds.square: bounds.RELAXATIONS[bounds.square]}
METHODS = {"relu": FUNCTIONS[torch.relu], "tanh": FUNCTIONS[torch.tanh], "sigmoid": FUNCTIONS[torch.sigmoid]}
SHAPES = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze"}
#: Functions that are linear maps with non-negative weights (averages over dimensions other than the batch's).
AVERAGES = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
            F.adaptive_avg_pool3d, torch.flatten, torch.mean}


def activation(m: nn.Module):
    """The relaxation of an activation module, or None (unsupported settings included)."""
    if isinstance(m, nn.ReLU):
        return FUNCTIONS[torch.relu]
    if isinstance(m, nn.LeakyReLU) and 0.0 <= m.negative_slope <= 1.0:
        return bounds.leaky_relu(float(m.negative_slope))
    if isinstance(m, nn.Tanh):
        return FUNCTIONS[torch.tanh]
    if isinstance(m, nn.Sigmoid):
        return FUNCTIONS[torch.sigmoid]
    if isinstance(m, nn.GELU) and m.approximate == "none":
        return bounds.GELU
    if isinstance(m, nn.Softplus) and m.beta > 0:
        return bounds.softplus(float(m.beta), float(m.threshold))
    from .mlp import Square

    return bounds.RELAXATIONS[bounds.square] if isinstance(m, Square) else None


def _module_reason(m: nn.Module) -> str | None:
    kind = type(m)
    if kind is nn.Linear or activation(m) is not None or isinstance(m, POSITIVE):
        return None
    if kind in CONVS:
        return None if m.padding_mode == "zeros" else f"{kind.__name__} with padding_mode={m.padding_mode!r}"
    if isinstance(m, NORMS):
        return None if m.running_mean is not None else f"{kind.__name__} without running statistics"
    if kind in MAX_POOLS or kind in ADAPTIVE_MAX:
        return None if not m.return_indices else f"{kind.__name__} returning indices"
    return f"layer {kind.__name__}"


def _function_reason(node) -> str | None:
    target = node.target
    if target in FUNCTIONS or target in AVERAGES or target in (operator.add, operator.sub, torch.add, operator.mul,
                                         operator.truediv, operator.getitem, getattr):
        return None
    if target in (F.leaky_relu,) and 0 <= (node.args[1] if len(node.args) > 1 else
                                           node.kwargs.get("negative_slope", 0.01)) <= 1:
        return None
    if target is F.gelu and node.kwargs.get("approximate", "none") == "none":
        return None
    return f"function {getattr(target, '__name__', target)}"


def graph_plan(module: nn.Module):
    """``(graph module, None)`` if every operation of ``module`` can be bounded, else ``(None, reason)``."""
    from torch import fx

    try:
        gm = fx.symbolic_trace(module)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: no proof, the dense check
        return None, f"the module cannot be traced by torch.fx ({type(err).__name__})"
    for node in gm.graph.nodes:
        reason = None
        if node.op == "call_module":
            reason = _module_reason(gm.get_submodule(node.target))
        elif node.op == "call_function":
            reason = _function_reason(node)
        elif node.op == "call_method" and node.target not in SHAPES | set(METHODS) | {"size", "add", "dim", "mean"}:
            reason = f"method .{node.target}()"
        elif node.op == "get_attr":
            reason = f"direct use of the tensor {node.target}"
        if reason is not None:
            return None, f"{reason} has no bound propagation"
    return gm, None


def _product(x: Model, wc, wh, op, n: int) -> Model:
    """(W_c + s·W_h)·x for a map ``op(x [P, N, ...], w [P, ...])`` bilinear in x and w; rows are P·N."""
    p = wc.shape[0]

    def apply(t, w):
        out = op(t.reshape(p, n, *t.shape[1:]), w)
        return out.reshape(p * n, *out.shape[2:])

    c = apply(x.c, wc)
    s_ = apply(x.c, wh)
    r = None
    if x.s_ is not None:
        s_ = s_ + apply(x.s_, wc)
        q = apply(x.s_, wh)  # the s² term: s² ∈ [0, 1]
        c, r = c + q / 2, q.abs() / 2
    if x.r is not None:
        r = _add(r, apply(x.r, wc.abs() + wh.abs()))
    return Model(c, s_, r)


def _channels(v, p: int, n: int, dims: int):
    """A per-piece, per-channel tensor [P, C] broadcast over the P·N rows of a [P·N, C, ...] value."""
    return v.reshape(p, 1, v.shape[1], *([1] * dims)).expand(p, n, v.shape[1], *([1] * dims)).reshape(
        p * n, v.shape[1], *([1] * dims))


def _bias(z: Model, bc, bh, n: int, dims: int) -> Model:
    return Model(z.c + _channels(bc, bc.shape[0], n, dims), z.s_ + _channels(bh, bh.shape[0], n, dims), z.r)


def _linear(x: Model, m, name, centre, half, n):
    def op(t, w):  # t [P, N, ..., in], w [P, out, in]
        flat = t.reshape(t.shape[0], -1, t.shape[-1])
        return torch.bmm(flat, w.transpose(1, 2)).reshape(*t.shape[:-1], w.shape[1])

    z = _product(x, centre[f"{name}.weight"], half[f"{name}.weight"], op, n)
    if m.bias is None:
        return z
    bc, bh = centre[f"{name}.bias"], half[f"{name}.bias"]
    lead = z.c.shape[1:-1]
    view = (bc.shape[0], 1, *([1] * len(lead)), bc.shape[1])
    rows = lambda b: b.reshape(view).expand(bc.shape[0], n, *lead, bc.shape[1]).reshape(z.c.shape)  # noqa: E731
    return Model(z.c + rows(bc), z.s_ + rows(bh), z.r)


def _conv(x: Model, m, name, centre, half, n):
    fn = CONVS[type(m)]
    op = vmap(lambda t, w: fn(t, w, None, m.stride, m.padding, m.dilation, m.groups))
    z = _product(x, centre[f"{name}.weight"], half[f"{name}.weight"], op, n)
    return z if m.bias is None else _bias(z, centre[f"{name}.bias"], half[f"{name}.bias"], n, z.c.dim() - 2)


def _norm(x: Model, m, name, centre, half, n):
    dims = x.c.dim() - 2
    shape = (1, -1, *([1] * dims))
    mean = m.running_mean.to(x.c).reshape(shape)
    scale = torch.rsqrt(m.running_var.to(x.c) + m.eps).reshape(shape)  # constant and positive
    z = Model((x.c - mean) * scale, None if x.s_ is None else x.s_ * scale, None if x.r is None else x.r * scale)
    if m.weight is None:
        return z
    gc, gh = centre[f"{name}.weight"], half[f"{name}.weight"]
    z = _product(z, gc, gh, lambda t, w: t * w.reshape(w.shape[0], 1, w.shape[1], *([1] * dims)), n)
    return _bias(z, centre[f"{name}.bias"], half[f"{name}.bias"], n, dims)


def _max_pool(x: Model, pool):
    c, s_, r = x.full()
    top = pool(c + s_.abs() + r)[0]
    picked, idx = pool(c)
    flat = idx.flatten(2)

    def at(t):
        return t.flatten(2).gather(2, flat).view_as(picked)

    sj, rj = at(s_), at(r)
    upper = top - picked + sj.abs()
    return Model(picked + (upper - rj) / 2, sj, (upper + rj) / 2)


def _act(x: Model, relax) -> Model:
    return Model(*relax(*x.full()))


def _call_module(m, x, name, centre, half, n):
    kind = type(m)
    if kind is nn.Linear:
        return _linear(x, m, name, centre, half, n)
    if kind in CONVS:
        return _conv(x, m, name, centre, half, n)
    if isinstance(m, NORMS):
        return _norm(x, m, name, centre, half, n)
    if kind in MAX_POOLS:
        return _max_pool(x, lambda t: MAX_POOLS[kind](t, m.kernel_size, m.stride, m.padding, m.dilation,
                                                       m.ceil_mode, return_indices=True))
    if kind in ADAPTIVE_MAX:
        return _max_pool(x, lambda t: ADAPTIVE_MAX[kind](t, m.output_size, return_indices=True))
    if isinstance(m, POSITIVE):
        return x.map(m)
    return _act(x, activation(m))


def _scale(x: Model, k: float) -> Model:
    return Model(x.c * k, None if x.s_ is None else x.s_ * k, None if x.r is None else x.r * abs(k))


def _combine(target, a, b):
    """``a ± b``, ``a · b`` or ``a / b`` of models and constants (a product of two models only as x·x)."""
    if target in (operator.mul, operator.truediv):
        if isinstance(a, Model) and a is b and target is operator.mul:
            return _act(a, bounds.RELAXATIONS[bounds.square])
        if target is operator.mul and not isinstance(a, Model):
            a, b = b, a
        if not isinstance(a, Model) or not isinstance(b, (int, float)):
            raise Unsupported("a product or quotient that is not a value times a number")
        return _scale(a, b if target is operator.mul else 1.0 / b)
    sign = -1.0 if target is operator.sub else 1.0
    if isinstance(a, Model) and isinstance(b, Model):
        return Model(a.c + sign * b.c, _add(a.s_, None if b.s_ is None else sign * b.s_), _add(a.r, b.r))
    if isinstance(a, Model):
        return Model(a.c + sign * b, a.s_, a.r)
    return Model(a + sign * b.c, None if b.s_ is None else sign * b.s_, b.r)


def _average(fn, args, kwargs):
    """A pooling function, ``flatten`` or ``mean`` on every part; a mean must keep the batch dimension."""
    x = args[0]
    if fn is torch.mean:
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        dims = [dims] if isinstance(dims, int) else dims
        if dims is None or any(d % x.c.dim() == 0 for d in dims):
            raise Unsupported("a mean over the batch")
    return x.map(lambda t: fn(t, *args[1:], **kwargs))


class Unsupported(Exception):
    """An operation met while propagating that the plan could not rule out beforehand (e.g. a mean over the batch)."""


def propagate(gm, params: tuple[dict, dict], x: torch.Tensor, p: int) -> Model:
    """Run the traced graph on models: ``params`` = (centre, half) by parameter name, each [P, ...]; x [N, ...]."""
    centre, half = params
    n = x.shape[0]
    env = {}

    def value(a):
        return torch.fx.node.map_arg(a, lambda node: env[node.name])

    for node in gm.graph.nodes:
        args, kwargs = value(node.args), value(node.kwargs)
        if node.op == "placeholder":
            env[node.name] = Model(x.unsqueeze(0).expand(p, *x.shape).reshape(p * n, *x.shape[1:]))
        elif node.op == "call_module":
            env[node.name] = _call_module(gm.get_submodule(node.target), args[0], node.target, centre, half, n)
        elif node.op == "call_function" and node.target in FUNCTIONS:
            env[node.name] = _act(args[0], FUNCTIONS[node.target])
        elif node.op == "call_function" and node.target is F.leaky_relu:
            env[node.name] = _act(args[0], bounds.leaky_relu(float(args[1] if len(args) > 1 else
                                                                    kwargs.get("negative_slope", 0.01))))
        elif node.op == "call_function" and node.target is F.gelu:
            env[node.name] = _act(args[0], bounds.GELU)
        elif node.op == "call_function" and node.target in AVERAGES:
            env[node.name] = _average(node.target, args, kwargs)
        elif node.op == "call_function" and node.target in (operator.getitem, getattr):
            if isinstance(args[0], Model) and node.target is operator.getitem:
                raise Unsupported("indexing a value")
            env[node.name] = node.target(args[0].c if isinstance(args[0], Model) else args[0], *args[1:])
        elif node.op == "call_function":
            env[node.name] = _combine(operator.add if node.target is torch.add else node.target, *args)
        elif node.op == "call_method" and node.target in METHODS:
            env[node.name] = _act(args[0], METHODS[node.target])
        elif node.op == "call_method" and node.target == "mean":
            env[node.name] = _average(torch.mean, args, kwargs)
        elif node.op == "call_method" and node.target == "add":
            env[node.name] = _combine(operator.add, *args)
        elif node.op == "call_method" and isinstance(args[0], Model):
            env[node.name] = args[0].map(lambda t: getattr(t, node.target)(*args[1:], **kwargs)) \
                if node.target in SHAPES else getattr(args[0].c, node.target)(*args[1:], **kwargs)
        elif node.op == "call_method":
            env[node.name] = getattr(args[0], node.target)(*args[1:], **kwargs)
        elif node.op == "output":
            return args[0]
    raise Unsupported("the graph has no output")


def traced_segment_bounds(gm, layout: Layout, data, loss_name: str, start: torch.Tensor, end: torch.Tensor, *,
                          decay_mask: torch.Tensor | None = None, weight_decay: float = 0.0) -> torch.Tensor:
    """Upper bounds of a traced network's loss on each segment ``start[p] → end[p]`` (as
    :func:`.bounds.mlp_segment_bounds`; shapes (P, D) → (P,), float64, non-finite where it overflowed).
    Raises :class:`Unsupported` at an operation the plan could not rule out beforehand."""
    dev = start.device
    x, y = (t.to(dev, torch.float64) if t.is_floating_point() else t.to(dev) for t in data)
    start, end = start.to(torch.float64), end.to(torch.float64)
    p, n = start.shape[0], x.shape[0]
    params = layout.unflatten((start + end) / 2), layout.unflatten((end - start) / 2)
    out = propagate(gm, params, x, p)  # raises Unsupported
    oc, os_, orem = out.full()
    shape = (p, n, *oc.shape[1:])
    return bounds.loss_bound(oc.reshape(shape), os_.reshape(shape), orem.reshape(shape), y, loss_name, start, end,
                             decay_mask=decay_mask, weight_decay=weight_decay)
