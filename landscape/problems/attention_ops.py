"""The operations of attention networks in the traced bound graph: the rules of :mod:`.operations` extended.

:data:`FUNCTIONS` and :data:`METHODS` are those of :mod:`.operations` plus: products of two values of the network
(``q @ k.transpose(-2, -1)``, ``attn @ v``, ``torch.matmul``/``bmm``/``einsum``/``mul`` of two values), softmax,
LayerNorm (``F.layer_norm``), the embedding lookup (``F.embedding``), ``masked_fill`` with a constant mask,
``F.scaled_dot_product_attention`` (composed of those), the head shuffles ``transpose``/``permute``/``t``/
``unbind``/``split``/``chunk`` and basic indexing (``x[:, -1]``, ``self.pos[:n]``, ``qkv[0]``);
:data:`MODULES` the layers ``nn.LayerNorm``, ``nn.Embedding``, ``nn.Softmax`` and ``nn.MultiheadAttention``
(:mod:`.attention_modules`). The relaxations are those of :mod:`.attention_bounds`.

A value whose batch dimension (the P·N rows) a ``permute``/``transpose`` moved away from the front is carried as
:class:`Moved` (timm's ``qkv.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)``): only indexing, ``unbind`` and
another ``permute``/``transpose`` take it, and it is a plain value again once the rows are in front.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import attention_bounds as ab
from . import bounds
from . import operations as ops
from . import relaxed as rx
from .operations import Rule, _arg, _rule
from .relaxed import Model, Param, Unsupported


SQUARE = bounds.RELAXATIONS[bounds.square]


@dataclass
class Moved:
    """A value laid out with its rows (the batch dimension) at ``axis`` ≠ 0."""

    value: Model
    axis: int


def _placed(value: Model, axis: int):
    return value if axis == 0 else Moved(value, axis)


def _parts(x):
    """(Model, axis of its rows) of a value or a moved value."""
    if isinstance(x, Moved):
        return x.value, x.axis
    if isinstance(x, Model):
        return x, 0
    raise Unsupported(f"an operation of the network applied to a {type(x).__name__}")


def _dims(args) -> list:
    return list(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else list(args)


# ---------------------------------------------------------------- shapes
def _transpose(w, a, k):
    x, axis = _parts(a[0])
    n = x.c.dim()
    d0, d1 = (_arg(a, k, 1, "dim0", None) % n, _arg(a, k, 2, "dim1", None) % n)
    new = d1 if axis == d0 else d0 if axis == d1 else axis
    return _placed(x.map(lambda t: t.transpose(d0, d1)), new)


def _t(w, a, k):
    x, axis = _parts(a[0])
    if x.c.dim() != 2:
        raise Unsupported(".t() of a value that is not a matrix")
    return _placed(x.map(lambda t: t.t()), 1 - axis)


def _permute(w, a, k):
    x, axis = _parts(a[0])
    dims = [d % x.c.dim() for d in _dims(a[1:]) or k.get("dims", ())]
    return _placed(x.map(lambda t: t.permute(*dims)), dims.index(axis))


def _pieces(parts_of_one, x: Model):
    """A tuple of values from ``fn(part)`` returning a tuple for each part of x."""
    c, s_, r = (None if t is None else parts_of_one(t) for t in (x.c, x.s_, x.r))
    return tuple(Model(c[i], None if s_ is None else s_[i], None if r is None else r[i]) for i in range(len(c)))


def _unbind(w, a, k):
    x, axis = _parts(a[0])
    dim = _arg(a, k, 1, "dim", 0) % x.c.dim()
    if dim == axis:
        raise Unsupported("unbind along the batch dimension")
    return tuple(_placed(m, axis - (dim < axis)) for m in _pieces(lambda t: t.unbind(dim), x))


def _splitter(name):
    def handler(w, a, k):
        x, axis = _parts(a[0])
        if axis != 0:
            raise Unsupported(f"{name} of a value whose batch dimension is not in front")
        size = _arg(a, k, 1, "split_size_or_sections" if name == "split" else "chunks", None)
        dim = _arg(a, k, 2, "dim", 0) % x.c.dim()
        if dim == 0:
            raise Unsupported(f"{name} along the batch dimension")
        return _pieces(lambda t: getattr(torch, name)(t, size, dim), x)
    return handler


def _getitem(w, a, k):
    base, index = a
    if isinstance(base, (tuple, list)):
        return base[index]
    index = index if isinstance(index, tuple) else (index,)
    if not all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in index):
        raise Unsupported("indexing a value with a tensor or a value")
    if isinstance(base, Param):
        if base.index:
            raise Unsupported("a parameter indexed twice")
        return Param(base.name, index)
    x, axis = _parts(base)
    if Ellipsis in index:  # write it out: the dimensions it stands for, each a full slice
        at = index.index(Ellipsis)
        used = sum(1 for i in index if i is not None and i is not Ellipsis)
        index = index[:at] + (slice(None),) * (x.c.dim() - used) + index[at + 1:]
    din, dout, new = 0, 0, None  # walk the index: where the rows' dimension ends up
    for i in index:
        if i is None:
            dout += 1
            continue
        if din == axis:
            if i != slice(None):
                raise Unsupported("indexing a value along the batch dimension")
            new = dout
        din, dout = din + 1, dout + (not isinstance(i, int))
    new = dout + axis - din if new is None else new
    return _placed(x.map(lambda t: t[index]), new)


# ---------------------------------------------------------------- products of two values
def _same_rank(x: Model, y: Model, what: str):
    if x.c.dim() != y.c.dim():
        raise Unsupported(f"{what} of two values of different ranks (their batch dimensions would not align)")


def _mul(w, a, k):
    left, right = a
    if isinstance(left, Model) and isinstance(right, Model) and left is not right:
        _same_rank(left, right, "a product")
        return ab.bilinear(left, right, torch.mul)
    return ops._mul(w, a, k)


def _matmul(w, a, k):
    x, y = a
    if isinstance(x, Model) and isinstance(y, Model):
        _same_rank(x, y, "a matrix product")
        if x.c.dim() < 3:
            raise Unsupported("a matrix product of two values without a batch of matrices")
        return ab.bilinear(x, y, torch.matmul)
    return ops._matmul(w, a, k)


def _bmm(w, a, k):
    x, y = a
    if not (isinstance(x, Model) and isinstance(y, Model)):
        raise Unsupported("torch.bmm of a value and a parameter")
    return ab.bilinear(x, y, torch.bmm)


def _einsum(w, a, k):
    equation, operands = a[0], _dims(a[1:])
    if not isinstance(equation, str) or len(operands) != 2 or "->" not in equation or "." in equation:
        raise Unsupported("an einsum other than of two operands with explicit indices ('bij,bjk->bik')")
    ins, out = equation.replace(" ", "").split("->")
    left, right = ins.split(",")
    x, y = operands
    if isinstance(x, Model) and isinstance(y, Model):
        if not (left[0] == right[0] == out[0]) or left[0] in left[1:] + right[1:] + out[1:]:
            raise Unsupported("an einsum that does not keep the batch dimension first in both operands")
        return ab.bilinear(x, y, lambda u, v: torch.einsum(equation, u, v))
    value, weight, lv, lw = (x, y, left, right) if isinstance(x, Model) else (y, x, right, left)
    if not isinstance(weight, Param) or not isinstance(value, Model) or lv[0] != out[0] or lv[0] in lw + out[1:]:
        raise Unsupported("an einsum that is not of a value (batch index first) and a parameter")
    z = next(ch for ch in "ZYXWVUTSRQPONM" if ch not in equation)
    eq = f"{z}{lv},{z}{lw}->{z}{out}"
    return rx.product(value, *w.pair(weight), lambda t, m: torch.einsum(eq, t, m), w.n)


# ---------------------------------------------------------------- softmax, LayerNorm, embedding, masks
def _softmax(w, a, k):
    dim = _arg(a, k, 1, "dim", None)
    if dim is None or k.get("dtype") is not None:
        raise Unsupported("a softmax without an explicit dim, or with a dtype")
    return ab.softmax(w.model(a[0]), dim)


def layer_norm(w, x: Model, shape, weight, bias, eps) -> Model:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if tuple(x.c.shape[x.c.dim() - len(shape):]) != shape:
        raise Unsupported("a layer_norm whose normalized_shape is not the value's last dimensions")
    z = ab.layer_norm(x, len(shape), float(eps))
    if weight is not None:
        z = rx.elementwise(z, *w.pair(weight), w.n)
    return z if bias is None else rx.shift(z, *w.pair(bias), w.n)


def _layer_norm(w, a, k):
    return layer_norm(w, w.model(a[0]), _arg(a, k, 1, "normalized_shape", None), _arg(a, k, 2, "weight", None),
                      _arg(a, k, 3, "bias", None), _arg(a, k, 4, "eps", 1e-5))


def embedding(w, idx: Model, weight) -> Model:
    return ab.embedding(idx, *w.pair(weight), w.n)


def _embedding(w, a, k):
    if _arg(a, k, 3, "max_norm", None) is not None:
        raise Unsupported("F.embedding with max_norm (it renormalizes the weight in place)")
    return embedding(w, w.model(a[0]), _arg(a, k, 1, "weight", None))


def masked_fill(x, mask, value) -> Model:
    x, axis = _parts(x)
    if axis != 0 or not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or isinstance(mask, Model):
        raise Unsupported("masked_fill with a mask that is not a constant boolean tensor")
    if not isinstance(value, (int, float)):
        raise Unsupported("masked_fill with a value that is not a number")
    if mask.dim() >= x.c.dim():
        if any(s != 1 for s in mask.shape[:mask.dim() - x.c.dim() + 1]):
            raise Unsupported("a mask that broadcasts over the batch dimension")
        mask = mask.reshape(mask.shape[mask.dim() - x.c.dim() + 1:])
    return ab.masked_fill(x, mask, float(value))


def _masked_fill(w, a, k):
    return masked_fill(a[0], _arg(a, k, 1, "mask", None), _arg(a, k, 2, "value", None))


def attention(w, q: Model, key: Model, v: Model, mask=None, causal=False, scale=None) -> Model:
    """softmax(q·kᵀ·scale (+ mask)) · v, as ``F.scaled_dot_product_attention`` computes it (no dropout)."""
    for t in (key, v):
        _same_rank(q, t, "attention")
    scale = 1 / math.sqrt(q.c.shape[-1]) if scale is None else scale
    scores = rx.scale(ab.bilinear(q, key.map(lambda t: t.transpose(-2, -1)), torch.matmul), scale)
    length, source = scores.c.shape[-2:]
    if causal:
        mask = torch.ones(length, source, dtype=torch.bool).tril()
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        scores = masked_fill(scores, ~mask, -math.inf)
    elif mask is not None:
        scores = rx.combine(scores, mask, 1.0)
    return ab.bilinear(ab.softmax(scores, -1), v, torch.matmul)


def _sdpa(w, a, k):
    q, key, v = (w.model(_arg(a, k, i, name, None)) for i, name in enumerate(("query", "key", "value")))
    mask, dropout = _arg(a, k, 3, "attn_mask", None), _arg(a, k, 4, "dropout_p", 0.0)
    causal, scale = _arg(a, k, 5, "is_causal", False), _arg(a, k, 6, "scale", None)
    if dropout != 0.0 or k.get("enable_gqa", False) or isinstance(mask, (Model, Param)):
        raise Unsupported("scaled_dot_product_attention with dropout, grouped queries or a mask of the network")
    return attention(w, q, key, v, mask, bool(causal), scale)


# ---------------------------------------------------------------- LayerNorm written out: powers, roots, quotients
def _power(w, a, k):
    x, exponent = a[0], _arg(a, k, 1, "exponent", None)
    if not isinstance(x, Model) or not isinstance(exponent, (int, float)):
        raise Unsupported("a power other than of a value to a constant")
    if exponent == 2:
        return rx.activate(x, SQUARE)
    if exponent == 1:
        return x
    if exponent == 3:  # x·x² (Hugging Face's NewGELU: tanh(√(2/π)(x + 0.044715·x³)))
        return ab.bilinear(x, rx.activate(x, SQUARE), torch.mul)
    if exponent not in (-1, 0.5, -0.5):
        raise Unsupported(f"a power {exponent!r} (3, 2, 1, −1, ±0.5 are bounded)")
    return ab.power(x, float(exponent))


def _root(exponent):
    return lambda w, a, k: ab.power(w.model(a[0]), exponent)


def _square(w, a, k):
    return rx.activate(w.model(a[0]), SQUARE)


def _var(w, a, k):
    """``var(dim, keepdim, unbiased/correction)`` over non-batch dimensions: mean((x − μ)²)·D/(D − correction)."""
    x, dims = w.model(a[0]), _arg(a, k, 1, "dim", None)
    dims = [dims] if isinstance(dims, int) else dims
    correction = k.get("correction", 1 if _arg(a, k, 2, "unbiased", True) else 0)
    if dims is None or any(d % x.c.dim() == 0 for d in dims) or not isinstance(correction, (int, float)):
        raise Unsupported("a variance over the batch, or with an unknown correction")
    dims = tuple(d % x.c.dim() for d in dims)
    count = math.prod(x.c.shape[d] for d in dims)
    if count <= correction:
        raise Unsupported("a variance of fewer values than its correction")
    sq = rx.activate(ab._centred(x, dims), SQUARE)
    keep = bool(_arg(a, k, 3, "keepdim", False))
    return sq.map(lambda t: t.mean(dims, keepdim=keep) * (count / (count - correction)))


def _div(w, a, k):
    left, right = a
    if isinstance(left, Model) and isinstance(right, Model) and k.get("rounding_mode") is None:
        _same_rank(left, right, "a quotient")
        return ab.bilinear(left, ab.power(right, -1.0), torch.mul)
    return ops._div(w, a, k)


def _integer(w, a, k):
    raise Unsupported("integer arithmetic (//, %) on a value of the network")


FUNCTIONS = {
    **ops.FUNCTIONS, operator.floordiv: _rule(_integer, 2), operator.mod: _rule(_integer, 2),
    operator.pow: _rule(_power, 2), torch.pow: _rule(_power, 2, "exponent"), torch.square: _rule(_square, 1),
    torch.sqrt: _rule(_root(0.5), 1), torch.rsqrt: _rule(_root(-0.5), 1), torch.reciprocal: _rule(_root(-1.0), 1),
    operator.truediv: _rule(_div, 2), torch.div: _rule(_div, 2, "rounding_mode"),
    torch.var: _rule(_var, 4, "dim", "unbiased", "keepdim", "correction"),
    operator.getitem: _rule(_getitem, 2), operator.mul: _rule(_mul, 2), torch.mul: _rule(_mul, 2),
    operator.matmul: _rule(_matmul, 2), torch.matmul: _rule(_matmul, 2), torch.bmm: _rule(_bmm, 2),
    torch.einsum: _rule(_einsum, 3), torch.softmax: _rule(_softmax, 2, "dim", "dtype"),
    F.softmax: _rule(_softmax, 2, "dim", "_stacklevel", "dtype"),  # torch.fx records F.softmax's _stacklevel too
    F.layer_norm: _rule(_layer_norm, 5, "normalized_shape", "weight", "bias", "eps"),
    F.embedding: _rule(_embedding, 3, "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq",
                       "sparse"),  # torch.fx records every keyword; the last three change no value here
    torch.transpose: _rule(_transpose, 3, "dim0", "dim1"), torch.permute: _rule(_permute, 2, "dims"),
    torch.unbind: _rule(_unbind, 2, "dim"), torch.split: _rule(_splitter("split"), 3, "dim"),
    torch.chunk: _rule(_splitter("chunk"), 3, "dim"), torch.masked_fill: _rule(_masked_fill, 3, "mask", "value"),
    F.scaled_dot_product_attention: _rule(_sdpa, 7, "attn_mask", "dropout_p", "is_causal", "scale"),
}
METHODS = {
    **ops.METHODS,
    "mul": _rule(_mul, 2), "matmul": _rule(_matmul, 2), "softmax": _rule(_softmax, 2, "dim", "dtype"),
    "pow": _rule(_power, 2, "exponent"), "square": _rule(_square, 1), "sqrt": _rule(_root(0.5), 1),
    "rsqrt": _rule(_root(-0.5), 1), "reciprocal": _rule(_root(-1.0), 1), "div": _rule(_div, 2, "rounding_mode"),
    "var": _rule(_var, 4, "dim", "unbiased", "keepdim", "correction"),
    "transpose": _rule(_transpose, 3, "dim0", "dim1"), "permute": _rule(_permute, 9, "dims"), "t": _rule(_t, 1),
    "unbind": _rule(_unbind, 2, "dim"), "split": _rule(_splitter("split"), 3, "dim"),
    "chunk": _rule(_splitter("chunk"), 3, "dim"), "masked_fill": _rule(_masked_fill, 3, "mask", "value"),
}
__all__ = ["FUNCTIONS", "METHODS", "Moved", "Rule", "attention", "embedding", "layer_norm", "masked_fill"]
