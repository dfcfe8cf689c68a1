"""The ways most people write a transformer, in the traced bound graph: the rules of :mod:`.attention_ops` extended.

- **Constants of the trace.** The data fix every shape in the traced ``forward``, so a size (``x.size(1)``,
  ``x.shape[1]``, ``B, T = idx.size()``) is a constant, and so is whatever is built from sizes and buffers alone:
  ``torch.arange(T, device=x.device)``, a causal mask ``torch.triu(torch.ones(T, T), 1).bool()``,
  ``torch.full((T, T), float('-inf')).triu(1)``, ``self.bias[:, :, :T, :T] == 0``. :func:`constant_nodes` finds
  them before propagating (nothing of the input or of a parameter reaches them); the deterministic functions and
  methods of :data:`CONSTANT_FUNCTIONS` and :data:`CONSTANT_METHODS` are then computed as ``forward`` computes them.
  A size of the batch (the P·N rows while propagating) may still only set a shape (:mod:`.traced`).
- **Lookups with a constant index**: ``self.pos_emb(pos)``, ``F.embedding(pos, w)``, ``self.pos[pos]`` are rows of a
  parameter, affine in s: kept as a :class:`.relaxed.Param` with the index tensor (exact).
- **A parameter broadcast over the batch**: ``self.cls.expand(x.shape[0], -1, -1)`` (or ``repeat(B, 1, 1)``) is
  the same rows for every sample of a piece, a value with no remainder (exact); ``torch.cat`` then takes it.
- ``einsum`` with ``...``: written out with explicit indices, then as :mod:`.attention_ops`.
- RMSNorm (``nn.RMSNorm``, ``F.rms_norm``; written out it is bounded by the powers of :mod:`.attention_ops`):
  :func:`.attention_bounds.rms_norm`. SiLU (and SwiGLU, a product of two values) is in :mod:`.operations`.
- **Values whose batch is not first** (``batch_first=False``, PyTorch's default: ``x.transpose(0, 1)`` before
  ``nn.MultiheadAttention`` or ``nn.TransformerEncoder``): operations that act on each position alone (linear
  maps and embeddings of the last dimension, norms of the last dimensions, elementwise activations, sums and
  products with constants and parameters that do not vary along the batch) run on the value with its rows moved
  to the front and moved back (:func:`positionwise`); anything else on such a value is refused with the reason.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

from . import attention_bounds as ab
from . import attention_modules as am
from . import attention_ops as ao
from . import merged_rows as mr
from . import operations as ops
from . import relaxed as rx
from .attention_ops import Moved
from .merged_rows import Merged
from .operations import _arg, _rule
from .relaxed import Model, Param, Unsupported

#: Functions computed as ``forward`` computes them where only constants (sizes, buffers, numbers) reach them.
CONSTANT_FUNCTIONS = {
    torch.arange, torch.ones, torch.zeros, torch.full, torch.eye, torch.triu, torch.tril, torch.ones_like,
    torch.zeros_like, torch.full_like, torch.linspace, torch.tensor, torch.as_tensor, torch.exp, torch.sin, torch.cos,
    torch.log, torch.outer, torch.stack, torch.cat, torch.where, torch.logical_not, torch.isinf, torch.isneginf,
    torch.sqrt, torch.pow, torch.polar, math.sqrt, math.log, math.exp, math.log2, float, int, len, abs, min, max,
    operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, operator.invert, operator.and_,
    operator.or_, operator.xor, operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
    operator.mod, operator.pow, operator.neg, operator.getitem, getattr, torch.finfo,
}
#: Tensor methods computed on constants (none in place: a buffer changed by every call is not one function).
CONSTANT_METHODS = {
    "triu", "tril", "bool", "float", "double", "long", "int", "to", "type", "unsqueeze", "squeeze", "view", "reshape",
    "expand", "expand_as", "transpose", "permute", "t", "repeat", "masked_fill", "logical_not", "contiguous", "flip",
    "exp", "sin", "cos", "sqrt", "log", "eq", "ne", "lt", "gt", "le", "ge", "cumsum", "sum", "mean", "clone", "detach",
    "size", "dim", "numel", "item", "outer", "pow", "neg", "abs",
}
_DESCRIBED = ("shape", "dtype", "device", "ndim")


#: Tensor factories ``torch.fx`` cannot trace with a size from the data (``torch.ones(T, T)``: a TypeError):
#: recorded as calls while tracing (:func:`trace`), then computed as constants.
FACTORIES = ("arange", "ones", "zeros", "full", "eye", "linspace", "empty", "rand", "randn", "randint", "tensor",
             "finfo")


def trace(module: nn.Module):
    """``torch.fx.symbolic_trace`` with the :data:`FACTORIES` recorded as calls where a traced size reaches them
    (torch's own functions are patched only while tracing, and restored); where it fails, again with buffers
    traced as attributes (``self.cos[:T]``, rotary tables sliced by the sequence's length)."""
    from torch import fx

    def recorded(fn):
        def call(*args, **kwargs):
            found = []
            fx.node.map_aggregate((args, kwargs), lambda v: found.append(v) if isinstance(v, fx.Proxy) else None)
            if not found:
                return fn(*args, **kwargs)
            return found[0].tracer.create_proxy("call_function", fn, args, kwargs)
        return call

    saved = {name: getattr(torch, name) for name in FACTORIES}
    try:
        for name, fn in saved.items():
            setattr(torch, name, recorded(fn))
        try:
            return fx.symbolic_trace(module)
        except Exception:  # noqa: BLE001 - a buffer sliced by a traced size (self.cos[:T]): buffers as proxies too
            tracer = fx.Tracer()
            tracer.proxy_buffer_attributes = True
            return fx.GraphModule(module, tracer.trace(module), type(module).__name__)
    finally:
        for name, fn in saved.items():
            setattr(torch, name, fn)


def _mutations(fn) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += bool(func._schema.is_mutable)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Count():
        fn()
    return Count.n


def internal_mutations(gm, node, x: torch.Tensor) -> int:
    """In-place operations torch runs inside one call of a layer on its own temporaries (``F.rms_norm`` adds ε in
    place), on the device and in the data type the module runs on ``x``: counted so that they do not read as a
    Python ``+=`` the trace cannot see (where they differ by setting, none are counted: a refusal, never a miss)."""
    like = next((p for p in gm.parameters() if p.is_floating_point()), None)
    kind = dict(device=x.device, dtype=torch.float32 if like is None else like.dtype)
    if node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.RMSNorm:
        m = gm.get_submodule(node.target)
        return _mutations(lambda: m(torch.ones(1, *m.normalized_shape, **kind)))
    if node.op == "call_function" and node.target is F.rms_norm:
        counts = {_mutations(lambda w=w, e=e: F.rms_norm(torch.ones(1, 2, **kind), (2,), w, e))
                  for w in (None, torch.ones(2, **kind)) for e in (None, 1e-5)}
        return counts.pop() if len(counts) == 1 else 0
    return 0


def _describes(node) -> bool:
    return node.op == "call_method" and node.target in ("size", "dim") or (
        node.op == "call_function" and node.target is getattr and len(node.args) > 1 and node.args[1] in _DESCRIBED)


def constant_nodes(gm) -> set:
    """The names of the trace's nodes that neither the input (forward's first argument) nor a parameter reaches:
    a node that only describes a value (its size, shape, device, dtype) cuts the dependence."""
    live, first = set(), True
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if first:
                live.add(node.name)
            first = False
        elif node.op == "get_attr":
            attr = gm
            for part in node.target.split("."):
                attr = getattr(attr, part)
            if isinstance(attr, nn.Parameter):
                live.add(node.name)
        elif _describes(node):
            continue
        elif node.op == "call_module" and any(True for _ in gm.get_submodule(node.target).parameters()) or any(
                i.name in live for i in node.all_input_nodes):
            live.add(node.name)
    return {node.name for node in gm.graph.nodes if node.name not in live and node.op != "output"}


def constant_allowed(node) -> bool:
    """Whether a constant node (see :func:`constant_nodes`) is a deterministic computation of a known kind."""
    if node.op == "call_function":
        return node.target in CONSTANT_FUNCTIONS
    return node.op == "call_method" and node.target in CONSTANT_METHODS


def constant_layer(walk, layer: nn.Module, args, kwargs):
    """A layer applied to constants: an embedding of a constant index is rows of its weight; a layer without
    parameters is computed; anything else is refused."""
    if type(layer) is nn.Embedding and layer.max_norm is None and len(args) == 1 and not kwargs:
        return _rows(walk, Param(walk.name(layer.weight)), args[0], layer.num_embeddings)
    if any(True for _ in layer.parameters()):
        raise Unsupported(f"a layer with parameters ({type(layer).__name__}) applied to a constant")
    return layer(*args, **kwargs)


def _rows(walk, weight, idx, count: int) -> Param:
    if not isinstance(weight, Param) or weight.index or weight.given is not None:
        raise Unsupported("an embedding of a constant index into a weight that is not a parameter")
    if not isinstance(idx, torch.Tensor) or idx.is_floating_point() or idx.dtype == torch.bool:
        raise Unsupported("an embedding lookup with an index that is not an integer tensor")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= count):
        raise Unsupported("an embedding index out of range")
    return Param(weight.name, (idx.long(),))


def describe(walk, node, args, kwargs):
    """``size``/``dim``/``.shape``/... of a value: (what it says, whether it depends on the batch's size). A value
    whose batch is not its first dimension gives a plain tuple for its shape, so that every entry counts as the
    batch's (conservative: :mod:`.traced` reads only a ``torch.Size``'s first entry as the batch's)."""
    x, axis = ao._parts(args[0])
    if node.op == "call_function":  # getattr(x, name)
        if args[1] not in _DESCRIBED:
            raise Unsupported(f"the attribute .{args[1]} of a value")
        out = getattr(x.c, args[1])
        return (tuple(out) if axis and args[1] == "shape" else out), args[1] == "shape"
    out = getattr(x.c, node.target)(*args[1:], **kwargs)
    if node.target != "size":
        return out, False
    if not args[1:] and not kwargs:
        return (tuple(out) if axis else out), True
    dim = _arg(args, kwargs, 1, "dim", None)
    return out, dim % x.c.dim() == axis


# ---------------------------------------------------------------- lookups, broadcasts, einsum, RMSNorm
def _embedding(w, a, k):
    if isinstance(a[0], torch.Tensor) and not isinstance(a[0], Model):
        if _arg(a, k, 3, "max_norm", None) is not None:
            raise Unsupported("F.embedding with max_norm (it renormalizes the weight in place)")
        weight = _arg(a, k, 1, "weight", None)
        return _rows(w, weight, a[0], w.pair(weight)[0].shape[1])
    return ao.FUNCTIONS[F.embedding].handler(w, a, k)


def _getitem(w, a, k):
    base, index = a
    if isinstance(base, Param) and isinstance(index, torch.Tensor) and not isinstance(index, Model):
        return _rows(w, base, index, w.pair(base)[0].shape[1])
    return ao.FUNCTIONS[operator.getitem].handler(w, a, k)


def _transposed(w, weight: Param) -> Param:
    c, h = w.pair(weight)
    if c.dim() != 3:
        raise Unsupported("a transpose of a parameter that is not a matrix")
    return Param(weight.name, weight.index, given=(c.transpose(1, 2), h.transpose(1, 2)))


def _getattr(w, a, k):
    """``self.W.T`` (``.mT``) of a matrix parameter: the parameter transposed (each piece's copy); else a value's
    shape, dtype, device."""
    if isinstance(a[0], Param) and a[1] in ("T", "mT"):
        return _transposed(w, a[0])
    return ops.FUNCTIONS[getattr].handler(w, a, k)


def _t(w, a, k):
    return _transposed(w, a[0]) if isinstance(a[0], Param) else ao.METHODS["t"].handler(w, a, k)


def _broadcast(how):
    """``expand``/``repeat`` of a parameter to the batch's size (``self.cls.expand(B, -1, -1)``): every sample of a
    piece gets the same rows, a value with no remainder; of a value, the shape operation of :mod:`.operations`."""
    def handler(w, a, k):
        base, sizes = a[0], ao._dims(a[1:]) or list(k.get("size", k.get("sizes", ())))
        if not isinstance(base, Param):
            return ops.METHODS[how].handler(w, a, k)
        c, h = w.pair(base)
        shape = list(c.shape[1:])
        if len(sizes) < len(shape) or not sizes or sizes[0] != w.rows:
            raise Unsupported(f"{how} of a parameter to other than the batch's size first")
        shape = [1] * (len(sizes) - len(shape)) + shape
        if shape[0] != 1:
            raise Unsupported(f"{how} of a parameter whose first dimension is not 1")
        c, h = (t.reshape(t.shape[0], *shape) for t in (c, h))
        if how == "expand":
            size = [w.n] + [s if s != -1 else shape[i + 1] for i, s in enumerate(sizes[1:])]
            c, h = (t.expand(t.shape[0], *size) for t in (c, h))
        else:
            c, h = (t.repeat(1, w.n, *sizes[1:]) for t in (c, h))
        return Model(*(t.reshape(w.rows, *t.shape[2:]).contiguous() for t in (c, h)))
    return handler


def _rank(w, v) -> int:
    if isinstance(v, Model):
        return v.c.dim()
    if isinstance(v, Param):
        return w.pair(v)[0].dim() - 1
    raise Unsupported("an einsum of a value that is not of the network")


def explicit(equation: str, ranks) -> str:
    """An einsum equation with ``...`` written out with letters it does not use (right-aligned, as broadcast)."""
    ins, out = equation.replace(" ", "").split("->")
    terms = ins.split(",")
    counts = [rank - (len(t) - 3) if "..." in t else 0 for t, rank in zip(terms, ranks)]
    free = [ch for ch in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if ch not in equation]
    width = max(counts)
    if min(counts) < 0 or width > len(free):
        raise Unsupported("an einsum whose '...' does not fit its operands")
    letters = "".join(free[:width])
    terms = [t.replace("...", letters[width - n:]) for t, n in zip(terms, counts)]
    return ",".join(terms) + "->" + out.replace("...", letters)


def _einsum(w, a, k):
    equation, operands = a[0], ao._dims(a[1:])
    if isinstance(equation, str) and "..." in equation and "->" in equation and len(operands) == 2:
        equation = explicit(equation, [_rank(w, v) for v in operands])
    return ao._einsum(w, (equation, *operands), k)


def rms_norm(w, x: Model, shape, weight, eps) -> Model:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if tuple(x.c.shape[x.c.dim() - len(shape):]) != shape:
        raise Unsupported("an rms_norm whose normalized_shape is not the value's last dimensions")
    # torch's default ε is the data type's: float64's here, as the float64 network the bounds are of computes it
    z = ab.rms_norm(x, len(shape), torch.finfo(x.c.dtype).eps if eps is None else float(eps))
    return z if weight is None else rx.elementwise(z, *w.pair(weight), w.n)


def _rms_norm(w, a, k):
    return rms_norm(w, w.model(a[0]), _arg(a, k, 1, "normalized_shape", None), _arg(a, k, 2, "weight", None),
                    _arg(a, k, 3, "eps", None))


def _rms_module(walk, m, a, k):
    return rms_norm(walk, walk.model(_arg(a, k, 0, "x", _arg(a, k, 0, "input", None))), m.normalized_shape,
                    am._param(walk, m.weight), m.eps)


# ---------------------------------------------------------------- values whose batch is not first
#: Elementwise operations of two operands (broadcast): constants and parameters are laid out as the value's front.
ELEMENTWISE = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul, torch.div,
               "add", "sub", "mul", "div"}
#: Operations on their first argument's positions alone (the last dimension, or elementwise).
POSITIONWISE = {operator.neg, torch.neg, "neg", torch.relu, F.relu, F.gelu, F.silu, torch.tanh, F.tanh, torch.sigmoid,
                F.sigmoid, F.leaky_relu, F.softplus, F.dropout, F.linear, F.embedding, "relu", "tanh", "sigmoid",
                "contiguous", F.layer_norm, F.rms_norm, operator.matmul, torch.matmul, "matmul"}
_NORMED = {F.layer_norm: 1, F.rms_norm: 1}
#: Operations that take a value whose batch is not first themselves (:mod:`.attention_ops`, layers above).
MOVED_AWARE = {torch.transpose, torch.permute, torch.unbind, operator.getitem, "transpose", "permute", "t", "unbind",
               nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder}


def _trailing_dims(layer) -> int | None:
    """How many trailing dimensions a layer mixes (None: it is not applied position by position)."""
    if type(layer) in (nn.LayerNorm, nn.RMSNorm):
        return len(layer.normalized_shape)
    if type(layer) is nn.Linear:
        return 1
    return 0 if type(layer) in (nn.Embedding, nn.Identity, nn.Dropout) or ops.activation(layer) is not None else None


def _align(t: torch.Tensor, lead: int, rank: int, axis: int) -> torch.Tensor:
    """A tensor ([lead dims, *S], S broadcast against a value of ``rank`` dimensions with its rows at ``axis``) laid
    out for the value with its rows in front; it must not vary along the rows."""
    extra = rank - (t.dim() - lead)
    if extra < 0:
        raise Unsupported("a constant that broadcasts beyond a value whose batch is not first")
    t = t.reshape(*t.shape[:lead], *([1] * extra), *t.shape[lead:])
    if t.shape[lead + axis] != 1:
        raise Unsupported("a constant that varies along the batch dimension")
    return t.movedim(lead + axis, lead)


def positionwise(walk, node, layer, run, args, kwargs):
    """``run(args, kwargs)`` of an operation given a value whose rows are not first (:class:`.attention_ops.Moved`):
    with its rows moved to the front and back, where the operation acts on each position alone; else refused."""
    key = type(layer) if layer is not None else node.target
    leaves = []
    torch.fx.node.map_aggregate((args, kwargs), leaves.append)
    moved = [v for v in leaves if isinstance(v, Moved)]
    if key in MOVED_AWARE or not moved:
        return run(args, kwargs)
    axes, ranks = {m.axis for m in moved}, {m.value.c.dim() for m in moved}
    normed = _trailing_dims(layer) if layer is not None else 0 if key in POSITIONWISE | ELEMENTWISE else None
    if key in _NORMED:
        shape = _arg(args, kwargs, 1, "normalized_shape", ())
        normed = 1 if isinstance(shape, int) else len(shape)
    elif key is F.linear:
        normed = 1
    if normed is None or len(axes) != 1 or len(ranks) != 1 or any(isinstance(v, Model) for v in leaves):
        raise Unsupported(f"{getattr(key, '__name__', key)} of a value whose batch dimension is not first")
    axis, rank = axes.pop(), ranks.pop()
    if rank - normed <= axis or key in (operator.matmul, torch.matmul, "matmul") and (
            len(moved) != 1 or axis >= rank - 1 or not isinstance(args[1], Param)):
        raise Unsupported(f"{getattr(key, '__name__', key)} over the batch dimension of a value not batch first")

    def front(v, i):
        if isinstance(v, Moved):
            return v.value.map(lambda t: t.movedim(axis, 0))
        if key not in ELEMENTWISE or i > 1:
            return v
        if isinstance(v, Param):
            return Param(v.name, v.index, given=tuple(_align(t, 1, rank, axis) for t in walk.pair(v)))
        return _align(v, 0, rank, axis) if isinstance(v, torch.Tensor) and v.dim() else v

    out = run(tuple(front(v, i) for i, v in enumerate(args)), {n: front(v, 2) for n, v in kwargs.items()})
    if not isinstance(out, Model):
        raise Unsupported(f"{getattr(key, '__name__', key)} of a value whose batch dimension is not first")
    return Moved(out.map(lambda t: t.movedim(0, axis)), axis)


FUNCTIONS = {**ao.FUNCTIONS, **mr.FUNCTIONS, F.embedding: _rule(_embedding, 3, *ao.FUNCTIONS[F.embedding].keywords),
             operator.getitem: _rule(_getitem, 2), torch.einsum: _rule(_einsum, 3),
             F.rms_norm: _rule(_rms_norm, 4, "normalized_shape", "weight", "eps"), getattr: _rule(_getattr, 2)}
METHODS = {**ao.METHODS, **mr.METHODS, "expand": _rule(_broadcast("expand"), 9, "size"),
           "repeat": _rule(_broadcast("repeat"), 9), "t": _rule(_t, 1)}
MODULES = {**am.MODULES, nn.RMSNorm: (lambda m: None, _rms_module)}
__all__ = ["FUNCTIONS", "METHODS", "MODULES", "Merged", "Moved", "constant_layer", "constant_nodes", "describe",
           "internal_mutations", "positionwise", "trace"]
