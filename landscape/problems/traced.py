"""Bounds of the loss over segments for networks beyond plain MLPs, through a ``torch.fx`` trace of the module.

The module is traced once (:func:`graph_plan`) and every node of what ``forward`` does is read, not the children
list: a module called twice is two nodes, a user subclass with its own ``forward`` is traced through (only
modules of exactly the types below are taken as layers), every call's positional *and* keyword arguments are
matched against what is bounded (``torch.add(a, b, alpha=-1)`` is a − b; an unknown keyword refuses the call).
Anything else leaves the problem with the dense check and says which operation stopped the proof. Values are
carried as :class:`.relaxed.Model` for all pieces and samples at once, in the module's own layout with the batch
dimension holding P·N rows (pieces × samples), so shape operations (``flatten``, ``view(x.size(0), −1)``) run
unchanged; a value computed from the batch size (``x.size(0)``, ``x.shape[0]``) may only set a shape: used in
arithmetic it would be P·N, not N, and the call is refused. Shape operations must keep the P·N rows apart.

- ``Linear``, ``Conv1d/2d/3d`` (zero padding), ``F.linear``, ``F.conv*d`` and ``x @ W`` with parameters used
  directly (tied weights: one parameter in two places): the weight W_c + s·W_h times the input (see
  :func:`.relaxed.product`); a parameter times or plus a value (a learned scale or shift), elementwise.
- ``BatchNorm1d/2d/3d`` with frozen statistics (evaluation mode, running buffers).
- ReLU (in place too), leaky ReLU (0 ≤ α ≤ 1), tanh, sigmoid, GELU (exact form), softplus (β > 0), square: the
  relaxations of :mod:`.bounds`, as modules, functions or methods.
- Average pooling (any, adaptive too), ``mean`` over non-batch dimensions, ``Flatten``/``flatten``, ``view``/
  ``reshape``/``squeeze``/``unsqueeze``, ``Identity``, ``Dropout`` (evaluation mode), ``torch.cat`` along a
  non-batch dimension: linear maps with non-negative weights (or concatenations), exact.
- Max pooling (any, adaptive too), as modules or functions (see :func:`.relaxed.max_pool`).
- Sums and differences of values, scaling by numbers and by tensor constants (buffers), negation.

Not bounded (the dense check, with the reason): LayerNorm, softmax and attention (a product of two values),
other activations, in-place operations on a value used elsewhere, forward hooks (``fx`` would not run them),
indexing, reductions over the batch. Losses as in :mod:`.bounds`, all float64, inflated by its ``ROUNDING``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import bounds
from . import relaxed as rx
from .layout import Layout
from .mlp import Square, hooked
from .relaxed import Model, Param, Unsupported

CONVS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
MAX_POOLS = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}
ADAPTIVE_MAX = {nn.AdaptiveMaxPool1d: F.adaptive_max_pool1d, nn.AdaptiveMaxPool2d: F.adaptive_max_pool2d,
                nn.AdaptiveMaxPool3d: F.adaptive_max_pool3d}
#: Modules (exactly these types) that are linear maps with non-negative weights, applied to every part as they are.
POSITIVE = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
            nn.Dropout3d)
RELU, TANH, SIGMOID = bounds.leaky_relu(0.0), bounds.RELAXATIONS[torch.tanh], bounds.RELAXATIONS[torch.sigmoid]
#: Tensor methods that change only a value's shape (each result must keep the P·N rows apart).
SHAPES = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "unflatten"}
#: Tensor methods that only describe a value (no value of the network comes out).
DESCRIBE = {"size", "dim"}


def activation(m: nn.Module):
    """The relaxation of an activation module of exactly a known type, or None (unsupported settings included)."""
    kind = type(m)
    if kind is nn.ReLU:
        return RELU
    if kind is nn.LeakyReLU and 0.0 <= m.negative_slope <= 1.0:
        return bounds.leaky_relu(float(m.negative_slope))
    if kind is nn.Tanh:
        return TANH
    if kind is nn.Sigmoid:
        return SIGMOID
    if kind is nn.GELU and m.approximate == "none":
        return bounds.GELU
    if kind is nn.Softplus and m.beta > 0:
        return bounds.softplus(float(m.beta), float(m.threshold))
    return bounds.RELAXATIONS[bounds.square] if kind is Square else None


def _module_reason(m: nn.Module) -> str | None:
    kind = type(m)
    if hooked(m):
        return f"a forward hook on a {kind.__name__}"
    if kind is nn.Linear or activation(m) is not None:
        return None
    if kind in POSITIVE:
        return f"{kind.__name__} in training mode" if kind.__name__.startswith("Dropout") and m.training else None
    if kind in CONVS:
        return None if m.padding_mode == "zeros" else f"{kind.__name__} with padding_mode={m.padding_mode!r}"
    if kind in NORMS:
        return None if m.running_mean is not None and not m.training else f"{kind.__name__} without frozen statistics"
    if kind in MAX_POOLS or kind in ADAPTIVE_MAX:
        return None if not m.return_indices else f"{kind.__name__} returning indices"
    return f"layer {kind.__name__}"


@dataclass(frozen=True)
class Rule:
    """How a function or method is bounded: ``handler(walk, args, kwargs)``, at most ``positional`` positional
    arguments (the value included) and only ``keywords``; anything else refuses the call."""

    handler: object
    positional: int
    keywords: frozenset = frozenset()


def _rule(handler, positional, *keywords):
    return Rule(handler, positional, frozenset(keywords))


def _arg(args, kwargs, i, name, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


# ---------------------------------------------------------------- handlers: (walk, args, kwargs) -> value
def _act(relax):
    return lambda w, a, k: rx.activate(w.model(a[0]), relax)


def _leaky(w, a, k):
    slope = _arg(a, k, 1, "negative_slope", 0.01)
    if not (isinstance(slope, (int, float)) and 0 <= slope <= 1):
        raise Unsupported(f"leaky_relu with negative_slope={slope!r}")
    return rx.activate(w.model(a[0]), bounds.leaky_relu(float(slope)))


def _gelu(w, a, k):
    if k.get("approximate", "none") != "none":
        raise Unsupported(f"gelu with approximate={k['approximate']!r}")
    return rx.activate(w.model(a[0]), bounds.GELU)


def _softplus(w, a, k):
    beta, threshold = _arg(a, k, 1, "beta", 1.0), _arg(a, k, 2, "threshold", 20.0)
    if not (isinstance(beta, (int, float)) and beta > 0 and isinstance(threshold, (int, float))):
        raise Unsupported(f"softplus with beta={beta!r}, threshold={threshold!r}")
    return rx.activate(w.model(a[0]), bounds.softplus(float(beta), float(threshold)))


def _dropout(w, a, k):
    if _arg(a, k, 2, "training", True) is not False:
        raise Unsupported("F.dropout in training mode (random)")
    return w.model(a[0])


def _sum(sign):
    def handler(w, a, k):
        left, right, alpha = a[0], a[1], k.get("alpha", 1)
        if not isinstance(alpha, (int, float)):
            raise Unsupported(f"alpha={alpha!r}")
        return w.combine(left, right, sign * alpha)
    return handler


def _mul(w, a, k):
    left, right = a
    if isinstance(left, Model) and left is right:
        return rx.activate(left, bounds.RELAXATIONS[bounds.square])
    if not isinstance(left, Model):
        left, right = right, left
    if not isinstance(left, Model):
        raise Unsupported("a product of a parameter with a constant")
    if isinstance(right, Model):
        raise Unsupported("a product of two values of the network")
    if isinstance(right, Param):
        return rx.elementwise(left, *w.pair(right), w.n)
    return rx.scale(left, right)


def _div(w, a, k):
    if k.get("rounding_mode") is not None or not isinstance(a[0], Model) or isinstance(a[1], (Model, Param)):
        raise Unsupported("a quotient that is not a value divided by a constant")
    return rx.scale(a[0], 1.0 / a[1] if isinstance(a[1], (int, float)) else torch.reciprocal(a[1]))


def _neg(w, a, k):
    return rx.scale(w.model(a[0]), -1.0)


def _linear(w, a, k):
    weight, bias = _arg(a, k, 1, "weight", None), _arg(a, k, 2, "bias", None)
    x = w.model(a[0])
    z = rx.product(x, *w.pair(weight), lambda t, m: torch.bmm(t.reshape(t.shape[0], -1, t.shape[-1]),
                                                              m.transpose(1, 2)).reshape(*t.shape[:-1], m.shape[1]),
                   w.n)
    return z if bias is None else w.combine(z, bias, 1.0)


def _conv(fn):
    def handler(w, a, k):
        weight, bias = _arg(a, k, 1, "weight", None), _arg(a, k, 2, "bias", None)
        conv = {name: _arg(a, k, i, name, default) for i, (name, default) in
                enumerate((("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)), start=3)}
        from torch.func import vmap

        op = vmap(lambda t, m: fn(t, m, None, **conv))
        z = rx.product(w.model(a[0]), *w.pair(weight), op, w.n)
        if bias is None:
            return z
        dims = z.c.dim() - 2
        bc, bh = (v.reshape(*v.shape, *([1] * dims)) for v in w.pair(bias))
        return rx.shift(z, bc, bh, w.n)
    return handler


def _matmul(w, a, k):
    x, weight = a
    if not isinstance(x, Model) or isinstance(weight, Model) or w.pair(weight)[0].dim() != 3 or x.c.dim() < 2:
        raise Unsupported("a matrix product other than a value times a matrix")

    def op(t, m):  # t [P, N, ..., in], m [P, in, out]
        return torch.matmul(t, m.reshape(m.shape[0], *([1] * (t.dim() - 3)), *m.shape[1:]))

    return rx.product(x, *w.pair(weight), op, w.n)


def _positive(fn):
    """A pooling function or ``flatten``: a linear map with non-negative weights on every part."""
    return lambda w, a, k: w.reshaped(w.model(a[0]), lambda t: fn(t, *a[1:], **k))


def _mean(w, a, k):
    x = w.model(a[0])
    dims = _arg(a, k, 1, "dim", None)
    dims = [dims] if isinstance(dims, int) else dims
    if dims is None or any(d % x.c.dim() == 0 for d in dims):
        raise Unsupported("a mean over the batch")
    return x.map(lambda t: torch.mean(t, *a[1:], **k))


def _max_pool(fn, adaptive=False):
    def handler(w, a, k):
        if _arg(a, k, 2 if adaptive else 6, "return_indices", False):
            raise Unsupported("max pooling returning indices")
        rest = {**k, "return_indices": True}
        return rx.max_pool(w.model(a[0]), lambda t: fn(t, *a[1:], **rest))
    return handler


def _cat(w, a, k):
    parts, dim = a[0], _arg(a, k, 1, "dim", 0)
    like = next(p for p in parts if isinstance(p, Model)).c
    if dim % like.dim() == 0 or any(isinstance(p, Param) for p in parts):
        raise Unsupported("a concatenation along the batch dimension")
    return rx.concat(parts, dim)


def _index(w, a, k):
    raise Unsupported("indexing a value")


def _describe(w, a, k):
    """``getattr`` of a value: its shape, dtype, device or number of dimensions (not its data)."""
    name = a[1]
    if name not in ("shape", "dtype", "device", "ndim"):
        raise Unsupported(f"the attribute .{name} of a value")
    return getattr(w.model(a[0]).c, name)


#: Functions (as called in ``forward``) that are bounded, and how.
FUNCTIONS = {
    torch.relu: _rule(_act(RELU), 1), torch.relu_: _rule(_act(RELU), 1), F.relu: _rule(_act(RELU), 2, "inplace"),
    torch.tanh: _rule(_act(TANH), 1), F.tanh: _rule(_act(TANH), 1),
    torch.sigmoid: _rule(_act(SIGMOID), 1), F.sigmoid: _rule(_act(SIGMOID), 1),
    F.leaky_relu: _rule(_leaky, 3, "negative_slope", "inplace"), F.gelu: _rule(_gelu, 1, "approximate"),
    F.softplus: _rule(_softplus, 3, "beta", "threshold"), F.dropout: _rule(_dropout, 4, "p", "training", "inplace"),
    operator.add: _rule(_sum(1.0), 2), torch.add: _rule(_sum(1.0), 2, "alpha"),
    operator.sub: _rule(_sum(-1.0), 2), torch.sub: _rule(_sum(-1.0), 2, "alpha"),
    operator.mul: _rule(_mul, 2), torch.mul: _rule(_mul, 2), operator.truediv: _rule(_div, 2),
    torch.div: _rule(_div, 2, "rounding_mode"), operator.neg: _rule(_neg, 1), torch.neg: _rule(_neg, 1),
    F.linear: _rule(_linear, 3, "weight", "bias"), operator.matmul: _rule(_matmul, 2), torch.matmul: _rule(_matmul, 2),
    torch.cat: _rule(_cat, 2, "dim"), torch.concat: _rule(_cat, 2, "dim"), getattr: _rule(_describe, 2), operator.getitem: _rule(_index, 2),
    torch.mean: _rule(_mean, 3, "dim", "keepdim"),
    torch.flatten: _rule(_positive(torch.flatten), 3, "start_dim", "end_dim"),
    torch.reshape: _rule(_positive(torch.reshape), 2, "shape"),
    **{fn: _rule(_conv(fn), 7, "weight", "bias", "stride", "padding", "dilation", "groups") for fn in CONVS.values()},
    **{fn: _rule(_positive(fn), 7, "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override") for fn in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)},
    **{fn: _rule(_positive(fn), 2, "output_size") for fn in
       (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)},
    **{fn: _rule(_max_pool(fn), 7, "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
       for fn in MAX_POOLS.values()},
    **{fn: _rule(_max_pool(fn, adaptive=True), 3, "output_size", "return_indices") for fn in ADAPTIVE_MAX.values()},
}
#: Tensor methods of a value that are bounded, and how (the value is the first argument).
METHODS = {
    "relu": _rule(_act(RELU), 1), "relu_": _rule(_act(RELU), 1), "tanh": _rule(_act(TANH), 1),
    "tanh_": _rule(_act(TANH), 1), "sigmoid": _rule(_act(SIGMOID), 1), "sigmoid_": _rule(_act(SIGMOID), 1),
    "add": _rule(_sum(1.0), 2, "alpha"), "add_": _rule(_sum(1.0), 2, "alpha"),
    "sub": _rule(_sum(-1.0), 2, "alpha"), "sub_": _rule(_sum(-1.0), 2, "alpha"),
    "mul": _rule(_mul, 2), "mul_": _rule(_mul, 2), "div": _rule(_div, 2, "rounding_mode"),
    "div_": _rule(_div, 2, "rounding_mode"), "neg": _rule(_neg, 1), "mean": _rule(_mean, 3, "dim", "keepdim"),
    **{name: _rule(lambda w, a, k, name=name: w.reshaped(w.model(a[0]), lambda t: getattr(t, name)(*a[1:], **k)),
                   8, "dim", "start_dim", "end_dim", "shape", "sizes", "memory_format") for name in SHAPES},
}
#: In-place operations: their input must be used nowhere else (its other users would see the changed value).
IN_PLACE = {"relu_", "tanh_", "sigmoid_", "add_", "sub_", "mul_", "div_", torch.relu_}
#: Operations whose result may share memory with their input (an in-place change reaches through them).
VIEWS = SHAPES | {"expand", "transpose", "permute", "t", operator.getitem, torch.flatten, torch.reshape}


@dataclass
class Plan:
    """A traced module and the flat layout's name of each of its parameters (by identity: a shared parameter
    has one name)."""

    gm: object
    names: dict


def _node_reason(gm, node) -> str | None:
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        reason = _module_reason(m)
        if reason is None and getattr(m, "inplace", False):
            reason = _aliasing(node)
        return reason
    if node.op in ("call_function", "call_method"):
        rules = FUNCTIONS if node.op == "call_function" else METHODS
        name = getattr(node.target, "__name__", node.target) if node.op == "call_function" else f".{node.target}()"
        if node.op == "call_method" and node.target in DESCRIBE:
            return None
        rule = rules.get(node.target)
        if rule is None:
            return f"function {name}" if node.op == "call_function" else f"method {name}"
        extra = set(node.kwargs) - rule.keywords
        if len(node.args) > rule.positional or extra:
            return f"{name} with arguments {sorted(extra) or len(node.args)}"
        if node.target in IN_PLACE or node.kwargs.get("inplace") or (node.target is F.relu and len(node.args) > 1
                                                                     and node.args[1]):
            return _aliasing(node)
    return None


def _aliasing(node) -> str | None:
    """An in-place operation is bounded as the plain one only if nothing else reads its input (or what shares its
    memory): follow the input back through views and require one user at every step."""
    source = node.args[0] if node.args else None
    while isinstance(source, torch.fx.Node):
        if len(source.users) > 1:
            return f"an in-place {getattr(node.target, '__name__', node.target)} on a value used elsewhere"
        if source.target not in VIEWS or not source.args:
            return None
        source = source.args[0]
    return None


def graph_plan(module: nn.Module):
    """``(Plan, None)`` if every operation ``module.forward`` runs can be bounded, else ``(None, reason)``."""
    from torch import fx

    for name, m in module.named_modules():
        if hooked(m):
            return None, f"a forward hook on {name or 'the module'} (the traced graph would not run it): no bound"
    try:
        gm = fx.symbolic_trace(module)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: no proof, the dense check
        return None, f"the module cannot be traced by torch.fx ({type(err).__name__})"
    for node in gm.graph.nodes:
        reason = _node_reason(gm, node)
        if reason is not None:
            return None, f"{reason} has no bound propagation"
    return Plan(gm, {id(p): name for name, p in module.named_parameters()}), None


class _Walk:
    """One propagation through the graph: the pieces' (centre, half) parameters, N samples, and which values
    come from the batch size."""

    def __init__(self, plan: Plan, params, n: int):
        self.plan, (self.centre, self.half), self.n = plan, params, n
        self.p = next(iter(self.centre.values())).shape[0]
        self.rows = self.p * n

    def name(self, tensor) -> str:
        name = self.plan.names.get(id(tensor))
        if name is None:
            raise Unsupported("a parameter outside the flat layout")
        return name

    def pair(self, value):
        """(centre, half), each [P, ...], of a parameter or of a constant tensor (half zero)."""
        if isinstance(value, Param):
            return self.centre[value.name], self.half[value.name]
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            c = value.to(next(iter(self.centre.values()))).unsqueeze(0).expand(self.p, *value.shape)
            return c, torch.zeros_like(c)
        raise Unsupported(f"a weight of type {type(value).__name__}")

    def model(self, value) -> Model:
        if not isinstance(value, Model):
            raise Unsupported(f"an operation of the network applied to a {type(value).__name__}")
        return value

    def combine(self, a, b, alpha: float):
        """``a + alpha·b`` of values, parameters and constants (``torch.add(a, b, alpha=...)``, ``a − b``)."""
        if isinstance(b, Model) and alpha != 1.0:
            b = rx.scale(b, alpha)
        elif not isinstance(b, (Model, Param)) and alpha != 1.0:
            b = b * alpha
        elif isinstance(b, Param) and isinstance(a, Model):
            return rx.shift(a, *self.pair(b), self.n, alpha)
        if isinstance(a, Param) and isinstance(b, Model):
            return rx.shift(b, *self.pair(a), self.n)
        if isinstance(a, Param) or isinstance(b, Param):
            raise Unsupported("a parameter added to a constant")
        return rx.combine(a, b, 1.0)

    def reshaped(self, x: Model, fn) -> Model:
        """A shape operation on every part; it must keep the P·N rows apart (row-major: the first dimension)."""
        out = x.map(fn)
        if out.c.dim() == 0 or out.c.shape[0] != self.rows:
            raise Unsupported("a shape operation that mixes the batch dimension")
        return out

    def module(self, m: nn.Module, x: Model) -> Model:
        kind, c, h, n = type(m), self.centre, self.half, self.n
        weight = None if getattr(m, "weight", None) is None else self.name(m.weight)
        bias = None if getattr(m, "bias", None) is None else self.name(m.bias)
        if kind is nn.Linear:
            return rx.linear(x, c, h, weight, bias, n)
        if kind in CONVS:
            return rx.convolution(x, CONVS[kind], c, h, weight, bias, n, stride=m.stride, padding=m.padding,
                                  dilation=m.dilation, groups=m.groups)
        if kind in NORMS:
            return rx.frozen_norm(x, m.running_mean, m.running_var, m.eps, c, h, weight, bias, n)
        if kind in MAX_POOLS:
            return rx.max_pool(x, lambda t: MAX_POOLS[kind](t, m.kernel_size, m.stride, m.padding, m.dilation,
                                                             m.ceil_mode, return_indices=True))
        if kind in ADAPTIVE_MAX:
            return rx.max_pool(x, lambda t: ADAPTIVE_MAX[kind](t, m.output_size, return_indices=True))
        if kind in POSITIVE:
            return self.reshaped(x, m)
        return rx.activate(x, activation(m))


def _leaves(value) -> list:
    out = []
    torch.fx.node.map_aggregate(value, out.append)
    return out


def _from_batch(value, index) -> bool:
    """Whether ``value[index]`` of a torch.Size holds the batch dimension (its first)."""
    if isinstance(index, int):
        return index % len(value) == 0
    if isinstance(index, slice):
        return 0 in range(len(value))[index]
    return True


def propagate(plan: Plan, params: tuple[dict, dict], x: torch.Tensor) -> Model:
    """Run the traced graph on models: ``params`` = (centre, half) by parameter name, each [P, ...]; x [N, ...].

    Raises :class:`Unsupported` at an operation with no sound bound that the plan could not rule out beforehand
    (a mean over the batch, the batch size in arithmetic, a shape operation that mixes rows)."""
    walk = _Walk(plan, params, x.shape[0])
    gm, env, batch = plan.gm, {}, set()  # batch: names of values computed from the batch size
    first = True

    def value(a):
        return torch.fx.node.map_arg(a, lambda node: env[node.name])

    for node in gm.graph.nodes:
        args, kwargs = value(node.args), value(node.kwargs)
        inputs = node.all_input_nodes
        from_batch = any(i.name in batch for i in inputs)
        if node.op == "placeholder":
            if first:
                env[node.name] = Model(x.unsqueeze(0).expand(walk.p, *x.shape).reshape(walk.rows, *x.shape[1:]))
                first = False
            elif node.args:
                env[node.name] = node.args[0]  # a further argument of forward, at its default
            else:
                raise Unsupported(f"forward's argument {node.name} without a default")
            continue
        if node.op == "output":
            if from_batch or not isinstance(args[0], Model):
                raise Unsupported("an output that is not one value of the network")
            return args[0]
        if node.op == "get_attr":
            attr = gm
            for part in node.target.split("."):
                attr = getattr(attr, part)
            env[node.name] = Param(walk.name(attr)) if isinstance(attr, nn.Parameter) else \
                attr.to(x.device, torch.float64) if isinstance(attr, torch.Tensor) and attr.is_floating_point() else attr
            continue
        leaves = _leaves((args, kwargs))
        networked = any(isinstance(v, (Model, Param)) for v in leaves)
        if node.op == "call_method" and node.target in DESCRIBE and isinstance(args[0], Model):
            out = getattr(args[0].c, node.target)(*args[1:], **kwargs)
            if node.target == "size" and (not args[1:] or args[1] % args[0].c.dim() == 0):
                batch.add(node.name)
            env[node.name] = out
            continue
        if node.op == "call_function" and node.target is getattr and isinstance(args[0], Model):
            env[node.name] = _describe(walk, args, kwargs)
            if args[1] == "shape":
                batch.add(node.name)
            continue
        if not networked:  # constants (buffers, shapes, numbers): computed as forward computes them
            if node.op == "call_module":
                layer = gm.get_submodule(node.target)
                if any(True for _ in layer.parameters()):
                    raise Unsupported(f"a layer with parameters ({type(layer).__name__}) applied to a constant")
                env[node.name] = layer(*args, **kwargs)
            elif node.op == "call_method":
                env[node.name] = getattr(args[0], node.target)(*args[1:], **kwargs)
            else:
                env[node.name] = node.target(*args, **kwargs)
            if from_batch and not (node.op == "call_function" and node.target is operator.getitem
                                   and isinstance(args[0], torch.Size) and not _from_batch(args[0], args[1])):
                batch.add(node.name)
            continue
        shape_only = node.op == "call_method" and node.target in SHAPES and not any(
            i.name in batch for i in node.args[:1] if isinstance(i, torch.fx.Node)) or \
            node.op == "call_function" and node.target is torch.reshape
        if from_batch and not shape_only:
            raise Unsupported("the batch size (x.size(0), x.shape[0]) used in arithmetic")
        if node.op == "call_module":
            env[node.name] = walk.module(gm.get_submodule(node.target), walk.model(args[0]))
        else:
            rule = (FUNCTIONS if node.op == "call_function" else METHODS)[node.target]
            env[node.name] = rule.handler(walk, args, kwargs)
    raise Unsupported("the graph has no output")


def traced_segment_bounds(plan: Plan, layout: Layout, data, loss_name: str, start: torch.Tensor, end: torch.Tensor,
                          *, decay_mask: torch.Tensor | None = None, weight_decay: float = 0.0) -> torch.Tensor:
    """Upper bounds of a traced network's loss on each segment ``start[p] → end[p]`` (as
    :func:`.bounds.mlp_segment_bounds`; shapes (P, D) → (P,), float64, non-finite where it overflowed).
    Raises :class:`Unsupported` at an operation the plan could not rule out beforehand."""
    dev = start.device
    x, y = (t.to(dev, torch.float64) if t.is_floating_point() else t.to(dev) for t in data)
    start, end = start.to(torch.float64), end.to(torch.float64)
    p, n = start.shape[0], x.shape[0]
    params = layout.unflatten((start + end) / 2), layout.unflatten((end - start) / 2)
    out = propagate(plan, params, x)  # raises Unsupported
    oc, os_, orem = out.full()
    if oc.shape[0] != p * n:
        raise Unsupported("an output that does not keep one row a sample")
    shape = (p, n, *oc.shape[1:])
    return bounds.loss_bound(oc.reshape(shape), os_.reshape(shape), orem.reshape(shape), y, loss_name, start, end,
                             decay_mask=decay_mask, weight_decay=weight_decay)
