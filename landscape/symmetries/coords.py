"""Which parameter entries a network's units are made of: its forward run once on one real sample, each tensor
carrying, beside its values, the unit each entry belongs to (:func:`trace_units`).

A parameter of shape (n, m) starts with two *slots*, integer tensors of its shape holding the id of the row (a unit
of the axis-0 space) and of the column (axis 1) of every entry; an activation has one slot per unit space its
entries run along (a [B, T, C] stream: one, the id of each feature; scores: none). Every aten operation of the
forward (``TorchDispatchMode``, so ``x.size()``-dependent code, ``torch.arange(T)``, masks made in forward and
fused kernels decomposed by torch itself all run as written) maps the slots of its inputs to those of its output:

- shape operations (view, transpose, permute, split, select, expand, cat, ...) act on the slots as on the values;
- a product (mm, addmm, bmm) *contracts* the slot of each operand that runs along the summed axis: the two ids of
  every summed pair are one unit, of opposite *parity* (one produces what the other reads; several slots along one
  summed axis, a head index and a dimension flattened together, pair up by how their ids repeat); in a batched
  product of two activations (attention scores q·kᵀ) the batch index is a head: every id summed at batch index h
  is a member of that head, and the scores carry a head slot, which the product attention·v consumes (v's ids at
  index h are members of the same head); where the head index is a unit space of its own (an axis of the
  weights) the two operands' slots along the batch are one unit;
- an elementwise operation identifies the slots of its operands that run along the same axes (a residual
  addition, a bias, a LayerNorm gain, the gate of SwiGLU); a nonlinear one marks its units (``relu``:
  positively homogeneous; ``nonlin``; ``norm``: a reduction or softmax across units);
- what would tell units apart *pins* them: values that vary across them (a position table, a rotary table), an
  index by data (an embedding's rows), the module's output, an operation not understood.

The ids are joined with union-find (with parity); its classes are the candidate units (:mod:`.user_transformer`).
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from ..problems.fcall import functional_call

#: Operations that move values without mixing them: the same operation moves the slots.
SHAPE_OPS = {"view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "slice", "select", "split",
             "split_with_sizes", "unbind", "unsqueeze", "squeeze", "clone", "contiguous", "alias", "detach",
             "lift_fresh", "_to_copy", "to", "narrow", "unflatten", "flatten", "movedim", "chunk"}
#: Elementwise operations: degree of positive homogeneity 1 (``relu``), linear, or nonlinear.
POSITIVE = {"relu", "leaky_relu", "dropout", "native_dropout"}
LINEAR = {"add", "sub", "neg", "add_", "sub_"}
ELEMENTWISE = {"mul", "div", "mul_", "div_", "gelu", "silu", "tanh", "sigmoid", "exp", "pow", "rsqrt", "sqrt",
               "masked_fill", "where", "softplus", "elu", "square", "reciprocal", "erf", "log", "abs",
               "_softmax", "_safe_softmax", "_log_softmax", "hardtanh", "clamp", "mish", "sin", "cos"} | POSITIVE | LINEAR
#: Operations that read only the shape of a labeled tensor: their output carries no unit.
SHAPE_ONLY = {"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "new_zeros",
              "new_ones", "new_empty", "new_full", "sym_size", "sym_stride", "sym_numel", "size", "stride"}
REDUCE = {"mean", "sum", "amax", "amin", "var", "std"}
PRODUCTS = {"mm", "bmm", "addmm", "baddbmm"}


class _UnionFind:
    """Ids joined with a parity (same side or opposite side of a unit)."""

    def __init__(self):
        self.parent, self.parity = [], []

    def add(self, n):
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.parity.extend([0] * n)
        return start

    def find(self, i):
        path = []
        while self.parent[i] != i:
            path.append(i)
            i = self.parent[i]
        acc = 0
        for j in reversed(path):  # compress, keeping each node's parity to the root
            acc ^= self.parity[j]
            self.parity[j], self.parent[j] = acc, i
        return i

    def parity_of(self, i):
        self.find(i)
        return self.parity[i] if self.parent[i] != i else 0

    def union(self, i, j, odd):
        ri, rj = self.find(i), self.find(j)
        pi, pj = self.parity_of(i), self.parity_of(j)
        if ri == rj:
            return (pi ^ pj) == odd
        self.parent[rj], self.parity[rj] = ri, pi ^ pj ^ odd
        return True


class Units:
    """The result of one traced forward: ids of every parameter axis, their union-find, marks, pins and heads."""

    def __init__(self, params: dict):
        self.uf, self.base, self.slots, self.alive = _UnionFind(), {}, {}, []
        self.pinned, self.marks, self.passive, self.head_of, self.conflict = set(), {}, set(), {}, set()
        self.unknown, self.heads, self.embedded, self.size, self.weights = [], 0, set(), {}, set()
        self.scores = 0  # products of two activations (attention scores, attention times values)
        for name, p in params.items():
            slots = []
            for axis, n in enumerate(p.shape):
                start = self.uf.add(n)
                self.base[(name, axis)], self.size[(name, axis)] = start, n
                if n == 1:  # an axis of one entry has no units to exchange
                    continue
                shape = [1] * p.dim()
                shape[axis] = n
                slots.append((start + torch.arange(n)).reshape(shape).expand(p.shape))
            self._set(p, slots)
            self.weights.add(id(p))

    # ------------------------------------------------------------------ slots
    def _set(self, t, slots):
        self.slots[id(t)] = [s for s in slots if s is not None]
        self.alive.append(t)

    def get(self, t):
        return self.slots.get(id(t), []) if isinstance(t, torch.Tensor) else []

    def pin(self, slot):
        self.pinned.update(torch.unique(slot[slot >= 0]).tolist())

    def mark(self, slot, kind):
        for i in torch.unique(slot[slot >= 0]).tolist():
            self.marks.setdefault(i, set()).add(kind)

    def join(self, a, b, odd):
        """Union of the ids at the same positions of two slots (broadcast), with parity ``odd``."""
        a, b = torch.broadcast_tensors(a, b)
        ok = (a >= 0) & (b >= 0)
        pairs = torch.unique(torch.stack([a[ok], b[ok]], 1), dim=0) if bool(ok.any()) else []
        for i, j in (pairs.tolist() if len(pairs) else []):
            if not self.uf.union(i, j, odd):
                self.conflict.update((i, j))


def varies(slot: torch.Tensor) -> frozenset:
    """The axes along which a slot's ids change."""
    return frozenset(d for d in range(slot.dim()) if slot.shape[d] > 1 and not bool((slot == slot.narrow(d, 0, 1)).all()))


class _Mode(TorchDispatchMode):
    def __init__(self, units: Units):
        super().__init__()
        self.u = units

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._overloadpacket.__name__
        u = self.u
        labeled = [t for t in tree_flatten((args, kwargs))[0] if u.get(t)]
        if not labeled or name in SHAPE_ONLY:
            return out
        try:
            _rule(u, name, func, args, kwargs, out, labeled)
        except Exception as err:  # noqa: BLE001 - an operation not understood pins what it touches
            u.unknown.append(f"{name} ({err})")
            for t in labeled:
                for s in u.get(t):
                    u.pin(s)
        return out


def _rule(u: Units, name, func, args, kwargs, out, labeled):
    if name in SHAPE_OPS:
        src = args[0]
        if name in ("_to_copy", "to", "clone", "contiguous", "alias", "detach", "lift_fresh"):
            u._set(out, [s.clone() for s in u.get(src)])
            if id(src) in u.weights:
                u.weights.add(id(out))
            return
        contiguous = name in ("view", "_unsafe_view")  # the values were laid out afresh; the slots may be expanded
        moved = [func(s.contiguous() if contiguous else s, *args[1:], **kwargs) for s in u.get(src)]
        outs = out if isinstance(out, (list, tuple)) else [out]
        for k, o in enumerate(outs):
            u._set(o, [m[k] if isinstance(m, (list, tuple)) else m for m in moved])
            if id(src) in u.weights:  # a view of a parameter (its transpose, a head's slice) is still a weight
                u.weights.add(id(o))
        return
    if name == "cat":
        tensors, dim = args[0], (args[1] if len(args) > 1 else kwargs.get("dim", 0))
        counts = {len(u.get(t)) for t in tensors if u.get(t)}
        if len(counts) != 1:
            raise ValueError("cat of tensors with different unit spaces")
        slots, dim = [], dim % out.dim()
        for k in range(counts.pop()):
            parts = [u.get(t)[k] if u.get(t) else None for t in tensors]
            labeled = [p for p in parts if p is not None]
            if any(dim in varies(p) for p in labeled):  # units side by side
                slots.append(torch.cat([p if p is not None else torch.full(t.shape, -1, dtype=torch.long)
                                        for p, t in zip(parts, tensors)], dim))
                continue
            first = labeled[0].narrow(dim, 0, 1)  # the same units along the joined axis (a cls token, the tokens)
            for p in labeled[1:]:
                u.join(first, p.narrow(dim, 0, 1), 0)
            slots.append(first.expand(out.shape))
        u._set(out, slots)
        return
    if name == "embedding":
        weight, idx = args[0], args[1]
        rows, cols = u.get(weight)
        u.pin(rows)  # rows picked by the data
        first = int(cols.reshape(-1)[0])
        u.embedded.update(n for (n, a), start in u.base.items() if start <= first < start + u.size[(n, a)])
        u._set(out, [cols.index_select(0, idx.reshape(-1).cpu()).reshape(*idx.shape, cols.shape[-1])])
        return
    if name == "index" and len(args) == 2:  # x[idx]: units along an axis indexed by data are chosen by the data
        indexed = {d for d, i in enumerate(args[1]) if i is not None}
        kept = []
        for s in u.get(args[0]):
            if varies(s) & indexed:
                u.pin(s)
                first = int(s.reshape(-1)[0])
                u.embedded.update(n for (n, ax), start in u.base.items() if start <= first < start + u.size[(n, ax)])
            else:
                kept.append(func(s, [i.cpu() if i is not None else None for i in args[1]]))
        u._set(out, kept)
        return
    if name in PRODUCTS:
        return _product(u, name, args, out)
    if name == "native_layer_norm":
        x, shape, w, b = args[0], args[1], args[2], args[3]
        axes = set(range(x.dim() - len(shape), x.dim()))
        slots = u.get(x)
        for s in slots:
            if varies(s) & axes:
                u.mark(s, "norm")
                for p in (w, b):
                    for ps in u.get(p):
                        u.join(s, ps, 0)
                        u.passive.update(torch.unique(ps).tolist())
        u._set(out[0], slots)
        return
    if name in REDUCE:
        return _reduce(u, args, kwargs, out)
    if name in ELEMENTWISE:
        return _elementwise(u, name, args, out)
    raise ValueError("not understood")


def _elementwise(u: Units, name, args, out):
    shape = out.shape
    operands = [a for a in args if isinstance(a, torch.Tensor)]
    if name.endswith("softmax"):
        operands = operands[:1]
    by_vary = {}  # vary set -> [(operand index, slot)]
    for k, a in enumerate(operands):
        for s in u.get(a):
            s = s.expand(shape)
            by_vary.setdefault(varies(s), []).append((k, s))
    result = []
    for vary, found in by_vary.items():
        first = found[0][1]
        for _, s in found[1:]:
            u.join(first, s, 0)
            if name not in LINEAR:  # a gain (RMSNorm's, written out) or a gate: permuted, never scaled
                u.passive.update(torch.unique(s[s >= 0]).tolist())
        holders = {k for k, _ in found}
        for k, a in enumerate(operands):  # values that differ across the units tell them apart
            if k not in holders and a.dim() and vary and not _constant(a.expand(shape), vary):
                u.pin(first)
        if name in POSITIVE:
            u.mark(first, "relu")
        elif name.endswith("softmax"):
            if args[1] % len(shape) in vary:
                u.mark(first, "norm")
        elif not (name in LINEAR or (len(holders) == 1 and name in ("mul", "mul_") or
                                     (name in ("div", "div_") and holders == {0}))):
            u.mark(first, "nonlin")
        result.append(first)
    u._set(out, result)


def _constant(a: torch.Tensor, axes) -> bool:
    return all(bool((a == a.narrow(d, 0, 1)).all() | (a.isnan() & a.narrow(d, 0, 1).isnan()).all())
               for d in axes if a.shape[d] > 1)


def _reduce(u: Units, args, kwargs, out):
    x = args[0]
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    dims = list(range(x.dim())) if dims is None else [dims] if isinstance(dims, int) else list(dims)
    dims = [d % x.dim() for d in dims]
    keep = bool(args[2]) if len(args) > 2 and isinstance(args[2], bool) else bool(kwargs.get("keepdim", False))
    kept = []
    for s in u.get(x):
        if varies(s) & set(dims):
            u.mark(s, "norm")
        else:
            kept.append(torch.amax(s, dims, keepdim=keep))
    u._set(out, kept)


def _product(u: Units, name, args, out):
    bias, a, b = (args[0], args[1], args[2]) if name in ("addmm", "baddbmm") else (None, args[0], args[1])
    batch = a.dim() - 2
    ka, kb, ma, nb = a.dim() - 1, b.dim() - 2, a.dim() - 2, b.dim() - 1  # summed and free axes
    kept, summed = [], {"a": [], "b": []}
    for side, t, k, free in (("a", a, ka, ma), ("b", b, kb, nb)):
        for s in u.get(t):
            v = varies(s)
            if k in v:
                if free in v:
                    raise ValueError("a unit space along both axes of a product")
                summed[side].append(s.select(free, 0))  # [batch..., k]
            else:
                kept.append((side, s))
    if bool(summed["a"]) != bool(summed["b"]):  # summed against unlabeled values (the data): those units are fixed
        for s in summed["a"] + summed["b"]:
            u.pin(s)
    activations = id(a) not in u.weights and id(b) not in u.weights
    u.scores += bool(activations and summed["a"] and summed["b"])
    slots = []
    for sa, sb in _pairs(summed["a"], summed["b"]):
        u.join(sa, sb, 1)
        if batch and activations and set(range(batch)) & (varies(sa) | varies(sb)):  # scores: the batch is a head
            n = int(torch.tensor(a.shape[:batch]).prod())
            tokens = (u.uf.add(n) + torch.arange(n)).reshape(a.shape[:batch])
            _members(u, sa, tokens[..., None], "qk")
            _members(u, sb, tokens[..., None], "qk")
            u.heads += 1
            slots.append(tokens.reshape(*tokens.shape, 1, 1).expand(out.shape))
    lead = set(range(batch))
    for side, s in kept:
        if side == "a" and _is_head(u, s):  # attention weights (a head slot) times v: v's ids join those heads
            for sb in u.get(b):
                if kb not in varies(sb):
                    _members(u, sb.select(kb, 0), s.select(ka, 0).select(-1, 0)[..., None], "vo")
            continue
        s = s.select(ka, 0).unsqueeze(-1) if side == "a" else s.select(kb, 0).unsqueeze(-2)
        twin = next((t for t in slots if varies(t) & lead and varies(t) & lead == varies(s) & lead), None)
        if side == "b" and activations and twin is not None:  # one index of both operands' batch (heads as an axis
            u.join(twin, s, 0)  # of W_Q, W_K: [H, d, d_head]): one unit, only permuted
            u.mark(s, "nonlin")
            u.mark(twin, "nonlin")
            continue
        slots.append(s.expand(out.shape))
    if bias is not None:
        for bs in u.get(bias):
            bs = bs.expand(out.shape)
            partner = [s for s in slots if varies(s) == varies(bs)]
            if not partner:
                raise ValueError("a bias along no unit space of its product")
            u.join(partner[0], bs, 0)
    u._set(out, slots)


def _pairs(left, right):
    """Slots of the two operands summed together, paired by how their ids repeat along the summed axis (a head
    index and a dimension inside it flattened into one axis: the slow one with the slow one)."""
    if len(left) == 1 and len(right) == 1:
        return [(left[0], right[0])]

    def pattern(s):
        line = s.reshape(-1, s.shape[-1])[0]
        return tuple((line[:, None] == line[None, :]).to(torch.int8).argmax(1).tolist())

    rights = {pattern(s): s for s in right}
    if len(rights) != len(right) or len(left) != len(right) or any(pattern(s) not in rights for s in left):
        raise ValueError("unit spaces summed together that do not pair up")
    return [(s, rights[pattern(s)]) for s in left]


def _is_head(u: Units, s) -> bool:
    live = s[s >= 0]
    return bool(live.numel()) and int(live.reshape(-1)[0]) >= u.param_ids


def _members(u: Units, ids, tokens, kind):
    """Every id at batch index h of ``ids`` (batch..., x) is a member of head ``tokens[h]`` (``kind``: its queries
    and keys or its values)."""
    ids, tok = torch.broadcast_tensors(ids, tokens)
    for i, t in torch.unique(torch.stack([ids.reshape(-1), tok.reshape(-1)], 1), dim=0).tolist():
        if i >= 0:
            u.head_of.setdefault(i, set()).add((t, kind))


def trace_units(module, params: dict, sample) -> Units:
    """Run ``module`` with ``params`` on ``sample`` (one sample, a batch of one) and return its :class:`Units`."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import copy

    module = copy.deepcopy(module).eval()  # evaluation mode (no dropout), the caller's module untouched
    plain = {n: p.detach().clone() for n, p in params.items()}
    u = Units(plain)
    u.param_ids = len(u.uf.parent)
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), _Mode(u):
            out = functional_call(module, plain, (sample,))
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    tree_map(lambda t: [u.pin(s) for s in u.get(t)] if isinstance(t, torch.Tensor) else None, out)
    return u
