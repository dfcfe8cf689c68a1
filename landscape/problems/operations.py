"""The operations of a module's ``forward`` that the traced bound graph (:mod:`.traced`) bounds, and how.

One table for functions (:data:`FUNCTIONS`, by the function ``forward`` calls), one for tensor methods
(:data:`METHODS`), each entry a :class:`Rule`: its handler on :class:`.relaxed.Model` values, how many positional
arguments it takes and which keywords; a call with anything else is refused, so a keyword that changes the function
(``alpha`` of ``torch.add``) is either bounded or stops the proof. Modules are matched by exact type
(:func:`activation` and the tables of layer types): a subclass may have its own ``forward``, which ``torch.fx``
then traces through.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import bounds
from . import relaxed as rx
from .attention_bounds import GELU_TANH, SILU
from .mlp import Square
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
SHAPES = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "unflatten", "expand", "repeat"}
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
    if kind is nn.GELU and m.approximate in ("none", "tanh"):
        return bounds.GELU if m.approximate == "none" else GELU_TANH
    if kind is nn.SiLU:
        return SILU
    if kind is nn.Softplus and m.beta > 0:
        return bounds.softplus(float(m.beta), float(m.threshold))
    return bounds.RELAXATIONS[bounds.square] if kind is Square else None


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
    approximate = k.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise Unsupported(f"gelu with approximate={approximate!r}")
    return rx.activate(w.model(a[0]), bounds.GELU if approximate == "none" else GELU_TANH)


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
    if isinstance(a[1], (int, float)):
        if a[1] == 0:
            raise Unsupported("a division by zero")
        return rx.scale(a[0], 1.0 / a[1])
    if not isinstance(a[1], torch.Tensor):
        raise Unsupported(f"a division by a {type(a[1]).__name__}")
    return rx.scale(a[0], torch.reciprocal(a[1].to(a[0].c.dtype)))  # integers too, in float64


def _neg(w, a, k):
    return rx.scale(w.model(a[0]), -1.0)


def _linear(w, a, k):
    weight, bias = _arg(a, k, 1, "weight", None), _arg(a, k, 2, "bias", None)
    x = w.model(a[0])
    if w.pair(weight)[0].dim() != 3:
        raise Unsupported("F.linear with a weight that is not a matrix")
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
    """A pooling function or ``flatten``: a linear map with non-negative weights on every part (an average's
    ``divisor_override`` must be positive: a negative one flips the weights' sign)."""
    def handler(w, a, k):
        divisor = _arg(a, k, 6, "divisor_override", None) if fn in AVERAGE_POOLS else None
        if divisor is not None and not (isinstance(divisor, (int, float)) and divisor > 0):
            raise Unsupported(f"average pooling with divisor_override={divisor!r}")
        return w.reshaped(w.model(a[0]), lambda t: fn(t, *a[1:], **k))
    return handler


def _reduce(fn):
    """``mean`` or ``sum`` over dimensions other than the batch's: a linear map with non-negative weights (exact)."""
    def handler(w, a, k):
        x = w.model(a[0])
        dims = _arg(a, k, 1, "dim", None)
        dims = [dims] if isinstance(dims, int) else dims
        if dims is None or any(d % x.c.dim() == 0 for d in dims):
            raise Unsupported(f"a {fn.__name__} over the batch")
        return x.map(lambda t: fn(t, *a[1:], **k))
    return handler


def _max_pool(fn, adaptive=False):
    def handler(w, a, k):
        if _arg(a, k, 2 if adaptive else 6, "return_indices", False):
            raise Unsupported("max pooling returning indices")
        rest = {**k, "return_indices": True}
        return rx.max_pool(w.model(a[0]), lambda t: fn(t, *a[1:], **rest), int(fn.__name__[-2]))
    return handler


def _cat(w, a, k):
    parts, dim = a[0], _arg(a, k, 1, "dim", 0)
    like = next((p.c for p in parts if isinstance(p, Model)), None)
    if like is None or dim % like.dim() == 0 or any(isinstance(p, Param) for p in parts):
        raise Unsupported("a concatenation of parameters, or along the batch dimension")
    return rx.concat(parts, dim)


def _index(w, a, k):
    raise Unsupported("indexing a value")


def _describe(w, a, k):
    """``getattr`` of a value: its shape, dtype, device or number of dimensions (not its data)."""
    name = a[1]
    if name not in ("shape", "dtype", "device", "ndim"):
        raise Unsupported(f"the attribute .{name} of a value")
    return getattr(w.model(a[0]).c, name)


AVERAGE_POOLS = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)
#: Functions (as called in ``forward``) that are bounded, and how.
FUNCTIONS = {
    torch.relu: _rule(_act(RELU), 1), torch.relu_: _rule(_act(RELU), 1), F.relu: _rule(_act(RELU), 2, "inplace"),
    torch.tanh: _rule(_act(TANH), 1), F.tanh: _rule(_act(TANH), 1),
    torch.sigmoid: _rule(_act(SIGMOID), 1), F.sigmoid: _rule(_act(SIGMOID), 1),
    F.silu: _rule(_act(SILU), 2, "inplace"),
    F.leaky_relu: _rule(_leaky, 3, "negative_slope", "inplace"), F.gelu: _rule(_gelu, 1, "approximate"),
    F.softplus: _rule(_softplus, 3, "beta", "threshold"), F.dropout: _rule(_dropout, 4, "p", "training", "inplace"),
    operator.add: _rule(_sum(1.0), 2), torch.add: _rule(_sum(1.0), 2, "alpha"),
    operator.sub: _rule(_sum(-1.0), 2), torch.sub: _rule(_sum(-1.0), 2, "alpha"),
    operator.mul: _rule(_mul, 2), torch.mul: _rule(_mul, 2), operator.truediv: _rule(_div, 2),
    torch.div: _rule(_div, 2, "rounding_mode"), operator.neg: _rule(_neg, 1), torch.neg: _rule(_neg, 1),
    F.linear: _rule(_linear, 3, "weight", "bias"), operator.matmul: _rule(_matmul, 2), torch.matmul: _rule(_matmul, 2),
    torch.cat: _rule(_cat, 2, "dim"), torch.concat: _rule(_cat, 2, "dim"), getattr: _rule(_describe, 2), operator.getitem: _rule(_index, 2),
    **{fn: _rule(_reduce(fn), 3, "dim", "keepdim") for fn in (torch.mean, torch.sum)},
    torch.flatten: _rule(_positive(torch.flatten), 3, "start_dim", "end_dim"),
    torch.reshape: _rule(_positive(torch.reshape), 2, "shape"),
    **{fn: _rule(_conv(fn), 7, "weight", "bias", "stride", "padding", "dilation", "groups") for fn in CONVS.values()},
    **{fn: _rule(_positive(fn), 7, "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override") for fn in AVERAGE_POOLS},
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
    "div_": _rule(_div, 2, "rounding_mode"), "neg": _rule(_neg, 1),
    **{fn.__name__: _rule(_reduce(fn), 3, "dim", "keepdim") for fn in (torch.mean, torch.sum)},
    **{name: _rule(lambda w, a, k, name=name: w.reshaped(w.model(a[0]), lambda t: getattr(t, name)(*a[1:], **k)),
                   8, "dim", "start_dim", "end_dim", "shape", "sizes", "memory_format") for name in SHAPES},
}
#: In-place operations: their input must be used nowhere else (its other users would see the changed value).
IN_PLACE = {"relu_", "tanh_", "sigmoid_", "add_", "sub_", "mul_", "div_", torch.relu_}
#: Operations whose result may share memory with their input (an in-place change reaches through them).
VIEWS = SHAPES | {"expand", "transpose", "permute", "t", "unbind", "split", "chunk", operator.getitem, torch.flatten,
                  torch.reshape, torch.transpose, torch.permute, torch.unbind, torch.split, torch.chunk}


