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
- ReLU (in place too), leaky ReLU (0 ≤ α ≤ 1), tanh, sigmoid, GELU (exact and tanh forms), softplus (β > 0), square: the
  relaxations of :mod:`.bounds`, as modules, functions or methods.
- Average pooling (any, adaptive too), ``mean``/``sum`` over non-batch dimensions, ``Flatten``/``flatten``, ``view``/
  ``reshape``/``squeeze``/``unsqueeze``, ``Identity``, ``Dropout`` (evaluation mode), ``torch.cat`` along a
  non-batch dimension: linear maps with non-negative weights (or concatenations), exact.
- Max pooling (any, adaptive too), as modules or functions (see :func:`.relaxed.max_pool`).
- Sums and differences of values, scaling by numbers and by tensor constants (buffers), negation.

- Attention (:mod:`.attention_ops`, :mod:`.attention_modules`): products of two values (``q @ k.transpose(-2,
  -1)``, ``attn @ v``, ``bmm``, ``einsum``), softmax, LayerNorm, embeddings, ``masked_fill`` with a constant
  mask, ``F.scaled_dot_product_attention``, head shuffles (``transpose``/``permute``/``unbind``/``split``),
  basic indexing that keeps the rows, ``nn.MultiheadAttention`` and ``nn.TransformerEncoder(Layer)`` (evaluation
  mode; ``batch_first=False`` too), RMSNorm and SiLU; sizes, positions (``torch.arange(T)``) and masks built in
  ``forward`` from the data's shape, a cls token ``expand``-ed over the batch, ``einsum`` with ``...``
  (:mod:`.user_ops`).

Not bounded (the dense check, with the reason): other activations, in-place operations on a value used
elsewhere, forward hooks (``fx`` would not run them), indexing along the batch or by tensors, reductions over
the batch. Losses as in :mod:`.bounds`, all float64, inflated by its ``ROUNDING``.
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
from .mlp import hooked
from .user_ops import (FUNCTIONS, METHODS, MODULES, Merged, Moved, constant_allowed, constant_layer, constant_nodes,
                       describe, internal_mutations, positionwise, trace)
from .operations import (ADAPTIVE_MAX, CONVS, DESCRIBE, IN_PLACE, MAX_POOLS, NORMS, POSITIVE, SHAPES, VIEWS,
                         activation)
from .relaxed import Model, Param, Unsupported

def _module_reason(m: nn.Module) -> str | None:
    kind = type(m)
    if hooked(m):
        return f"a forward hook or a replaced forward on a {kind.__name__}"
    if kind is nn.Linear or activation(m) is not None:
        return None
    if kind in POSITIVE:
        if kind.__name__.startswith("Dropout") and m.training:
            return f"{kind.__name__} in training mode"
        divisor = getattr(m, "divisor_override", None)  # a negative one flips the average's weights
        return None if divisor is None or divisor > 0 else f"{kind.__name__} with divisor_override={divisor}"
    if kind in CONVS:
        return None if m.padding_mode == "zeros" else f"{kind.__name__} with padding_mode={m.padding_mode!r}"
    if kind in NORMS:
        return None if m.running_mean is not None and not m.training else f"{kind.__name__} without frozen statistics"
    if kind in MAX_POOLS or kind in ADAPTIVE_MAX:
        return None if not m.return_indices else f"{kind.__name__} returning indices"
    return MODULES[kind][0](m) if kind in MODULES else f"layer {kind.__name__}"


@dataclass
class Plan:
    """A traced module and the flat layout's name of each of its parameters (by identity: a shared parameter
    has one name)."""

    gm: object
    names: dict


def _node_reason(gm, node) -> str | None:
    if node.op == "call_module":
        reason = _module_reason(gm.get_submodule(node.target))
        return reason if reason is not None or not _in_place(gm, node) else _aliasing(gm, node)
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
        if _in_place(gm, node):
            return _aliasing(gm, node)
    return None


#: Modules that may return their input itself (or a view of it).
_IDENTITIES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
#: Functions whose ``inplace`` flag (keyword, or the positional argument at this index) makes them in place.
_INPLACE_AT = {F.relu: 1, F.leaky_relu: 2, F.dropout: 3, F.silu: 1}


def _in_place(gm, node) -> bool:
    """Whether the operation changes its input in place (and returns it)."""
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    if node.target in IN_PLACE:
        return True
    at = _INPLACE_AT.get(node.target) if node.op == "call_function" else None
    return at is not None and bool(node.args[at] if len(node.args) > at else node.kwargs.get("inplace", False))


def _idle(gm, node) -> bool:
    """An in-place dropout out of training mode: it returns its input unchanged and the dispatcher sees no mutation
    (counted as one, it would hide a Python ``+=`` from :func:`graph_plan`'s count of mutations)."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)) in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
    return node.target is F.dropout and not (node.args[2] if len(node.args) > 2 else node.kwargs.get("training", True))


def _shares_input(gm, node) -> bool:
    """Whether the result may share memory with the operation's first argument (a view, the input itself)."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)) in _IDENTITIES or _in_place(gm, node)
    return node.target in VIEWS or node.target is F.dropout or node.target == "contiguous" or _in_place(gm, node)


def _aliasing(gm, node) -> str | None:
    """An in-place operation is bounded as the plain one only if nothing else reads its input (or what shares its
    memory): follow the input back through views, identities and in-place operations, one user at every step."""
    source = node.args[0] if node.args else node.kwargs.get("input")
    while isinstance(source, torch.fx.Node):
        if len(source.users) > 1:
            return f"an in-place {getattr(node.target, '__name__', node.target)} on a value used elsewhere"
        if source.op not in ("call_module", "call_function", "call_method") or not _shares_input(gm, source):
            return None
        source = source.args[0] if source.args else source.kwargs.get("input")
    return None


#: Binary operators that a Python in-place operator (``+=``, ``*=``) is traced as: ``torch.fx`` records
#: ``h += v`` as ``h + v``, a new value, while forward changes ``h`` itself.
_AUGMENTED = (operator.add, operator.sub, operator.mul, operator.truediv, operator.matmul)


#: torch layers the trace keeps whole that change only their own temporaries in place (``nn.MultiheadAttention``
#: makes a boolean mask additive with ``masked_fill_`` on a fresh tensor): not a Python ``+=`` the trace misses.
_OWN_TEMPORARIES = (nn.MultiheadAttention,)


def _mutations(module: nn.Module, x: torch.Tensor) -> int:
    """The operations that change a tensor in place in one call of ``module`` on ``x`` (counted by torch's
    dispatcher: the trace cannot see Python's ``+=``), none inside the calls of :data:`_OWN_TEMPORARIES`."""
    from torch.utils._python_dispatch import TorchDispatchMode

    inside = []  # one entry a call of those layers under way

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += bool(func._schema.is_mutable) and not inside
            return func(*args, **(kwargs or {}))

    layers = [m for m in module.modules() if type(m) in _OWN_TEMPORARIES]
    handles = [h for m in layers for h in (m.register_forward_pre_hook(lambda *_: inside.append(0)),
                                           m.register_forward_hook(lambda *_: inside.pop(), always_call=True))]
    try:
        with torch.no_grad(), Count():
            module(x)
    except Exception:  # noqa: BLE001 - the model's own failure is reported where it is evaluated
        return 0
    finally:
        for handle in handles:
            handle.remove()
    return Count.n


def graph_plan(module: nn.Module, x: torch.Tensor | None = None):
    """``(Plan, None)`` if every operation ``module.forward`` runs can be bounded, else ``(None, reason)``.

    ``x``, a few inputs: where one call of the module changes more tensors in place than the trace shows (a
    Python ``+=``), every binary operation of the trace must act on a value nothing else reads."""
    for name, m in module.named_modules():
        if hooked(m):
            return None, f"a forward hook or a replaced forward on {name or 'the module'} (not traced): no bound"
    try:
        gm = trace(module)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: no proof, the dense check
        return None, f"the module cannot be traced by torch.fx ({type(err).__name__})"
    constants = constant_nodes(gm)  # sizes, masks, positions: computed as forward computes them
    for node in gm.graph.nodes:
        reason = None if node.name in constants and constant_allowed(node) else _node_reason(gm, node)
        if reason is not None:
            return None, f"{reason} has no bound propagation"
    known = sum(1 for node in gm.graph.nodes if node.op != "placeholder" and node.op != "output"
                and node.op != "get_attr" and _in_place(gm, node) and not _idle(gm, node)) + sum(
        internal_mutations(gm, node, x) for node in gm.graph.nodes if x is not None)
    if x is not None and _mutations(module, x) > known:
        for node in gm.graph.nodes:
            if node.op == "call_function" and node.target in _AUGMENTED and _aliasing(gm, node) is not None:
                return None, ("an in-place operator (+=, *=, ...) on a value used elsewhere (forward changes it in "
                              "place, the trace records a new value) has no bound propagation")
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
        if isinstance(value, Param) and value.given is not None:
            return value.given
        if isinstance(value, Param):
            at = (slice(None), *value.index)
            return self.centre[value.name][at], self.half[value.name][at]
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
                                                             m.ceil_mode, return_indices=True), int(kind.__name__[-2]))
        if kind in ADAPTIVE_MAX:
            return rx.max_pool(x, lambda t: ADAPTIVE_MAX[kind](t, m.output_size, return_indices=True),
                               int(kind.__name__[-2]))
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
        networked = any(isinstance(v, (Model, Param, Moved, Merged)) for v in leaves)
        if isinstance(args[0] if args else None, (Model, Moved, Merged)) and (
                node.op == "call_method" and node.target in DESCRIBE or node.op == "call_function" and
                node.target is getattr):  # a size of the batch (P·N rows here) may only set a shape
            env[node.name], of_batch = describe(walk, node, args, kwargs)
            if of_batch:
                batch.add(node.name)
            continue
        if not networked:  # constants (buffers, shapes, numbers): computed as forward computes them
            if node.op == "call_module":
                env[node.name] = constant_layer(walk, gm.get_submodule(node.target), args, kwargs)
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
        layer = gm.get_submodule(node.target) if node.op == "call_module" else None
        env[node.name] = positionwise(walk, node, layer, lambda a, k, at=node, m=layer: _run(walk, at, m, a, k), args,
                                      kwargs)
    raise Unsupported("the graph has no output")


def _run(walk, node, layer, args, kwargs):
    """One operation of the network on values (its layer, or its rule's handler)."""
    if layer is not None and type(layer) in MODULES:
        return MODULES[type(layer)][1](walk, layer, args, kwargs)
    if layer is not None:
        given = args[0] if len(args) == 1 and not kwargs else kwargs.get("input") if not args and \
            set(kwargs) == {"input"} else None
        return walk.module(layer, walk.model(given))
    return (FUNCTIONS if node.op == "call_function" else METHODS)[node.target].handler(walk, args, kwargs)


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
