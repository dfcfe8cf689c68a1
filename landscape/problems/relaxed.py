"""Values of a network carried as first-order models in the segment variable s, and the layers that act on them.

Along a segment θ(s) = c + s·h, s ∈ [−1, 1], every value inside the network is kept, elementwise and for all
pieces and samples at once, as v(s) = v_c + s·v_s + e with |e| ≤ v_r (:class:`Model`), in the module's own
layout with the batch dimension holding P·N rows (pieces × samples). A parameter is affine in s, one
(centre, half) pair per piece (:class:`Param`). :mod:`.traced` walks a module's graph with these operations;
the relaxations of the activations are those of :mod:`.bounds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class Unsupported(Exception):
    """An operation met while propagating that has no sound bound here (the proof falls back to the dense check)."""


@dataclass
class Model:
    """v(s) = c + s·s_ ± r over the P·N rows; ``s_`` and ``r`` are None where they are zero."""

    c: torch.Tensor
    s_: torch.Tensor | None = None
    r: torch.Tensor | None = None

    def __post_init__(self):
        # every part at the value's own shape: a part left at a broadcast shape ([P·N, C, 1, 1] beside a
        # [P·N, C, H, W] value) would pass through a convolution as a different tensor, and its bound be lost
        for name in ("s_", "r"):
            part = getattr(self, name)
            if part is not None and part.shape != self.c.shape:
                setattr(self, name, part.expand(self.c.shape).contiguous())

    def map(self, fn) -> "Model":
        """A linear map with non-negative weights applied to every part (exact)."""
        return Model(fn(self.c), None if self.s_ is None else fn(self.s_), None if self.r is None else fn(self.r))

    def full(self):
        zero = torch.zeros_like(self.c)
        return self.c, zero if self.s_ is None else self.s_, zero if self.r is None else self.r


@dataclass(frozen=True)
class Param:
    """A parameter of the flat layout used directly in ``forward`` (``F.linear(x, self.w)``, ``x * self.scale``),
    or the part ``index`` of it (``self.pos[:n]``; ``self.pos[idx]``, ``self.wpe(torch.arange(T))`` with a constant
    index tensor: applied to each piece's copy). ``given``: its (centre, half), each [P, ...], already laid out for
    the value it meets (a parameter beside a value whose batch dimension was moved)."""

    name: str
    index: tuple = ()
    given: tuple | None = field(default=None, compare=False)


def add(a, b):
    """Sum of two optional parts (None is zero)."""
    return None if a is None and b is None else b if a is None else a if b is None else a + b


def product(x: Model, wc, wh, op, n: int) -> Model:
    """(W_c + s·W_h)·x for a map ``op(x [P, N, ...], w [P, ...])`` bilinear in x and w; rows are P·N.

    The constant and linear parts exactly; the s² term W_h·x_s half to the centre, half to the remainder
    (s² ∈ [0, 1]); the remainder through the map with weights |W_c| + |W_h|.
    """
    p = wc.shape[0]

    def apply(t, w):
        out = op(t.reshape(p, n, *t.shape[1:]), w)
        return out.reshape(p * n, *out.shape[2:])

    c = apply(x.c, wc)
    s_ = apply(x.c, wh)
    r = None
    if x.s_ is not None:
        s_ = s_ + apply(x.s_, wc)
        q = apply(x.s_, wh)
        c, r = c + q / 2, q.abs() / 2
    if x.r is not None:
        r = add(r, apply(x.r, wc.abs() + wh.abs()))
    return Model(c, s_, r)


def _trailing(v: torch.Tensor, dims: int) -> torch.Tensor:
    """A per-piece tensor [P, *S] with S's leading ones dropped until S fits ``dims`` trailing dimensions;
    a larger S would broadcast over the batch dimension."""
    while v.dim() - 1 > dims:
        if v.shape[1] != 1:
            raise Unsupported("a parameter that broadcasts over the batch dimension")
        v = v.squeeze(1)
    return v


def _pieces(v: torch.Tensor, dims: int) -> torch.Tensor:
    """A per-piece tensor [P, *S] as [P, 1, ..., *S], to broadcast against values laid out [P, N, ...] (``dims``
    dimensions after the batch's)."""
    v = _trailing(v, dims)
    return v.reshape(v.shape[0], 1, *([1] * (dims - (v.dim() - 1))), *v.shape[1:])


def elementwise(x: Model, wc, wh, n: int) -> Model:
    """x times a parameter (W_c + s·W_h) broadcast elementwise (a learned scale)."""
    wc, wh = _trailing(wc, x.c.dim() - 1), _trailing(wh, x.c.dim() - 1)
    p = wc.shape[0]

    def op(t, w):  # t [P, N, ...], w [P, *S] with S aligned to t's trailing dimensions
        return t * w.reshape(p, 1, *([1] * (t.dim() - 2 - (w.dim() - 1))), *w.shape[1:])

    return product(x, wc, wh, op, n)


def shift(x: Model, bc, bh, n: int, sign: float = 1.0) -> Model:
    """x ± a parameter (b_c + s·b_h) broadcast as torch broadcasts it (the result may be larger than x)."""
    p, dims = bc.shape[0], x.c.dim() - 1

    def plus(t, v):  # t [P·N, ...] as [P, N, ...] plus v [P, 1, ..., *S]
        out = t.reshape(p, n, *t.shape[1:]) + sign * _pieces(v, dims)
        return out.reshape(p * n, *out.shape[2:])

    return Model(plus(x.c, bc), plus(torch.zeros_like(x.c) if x.s_ is None else x.s_, bh), x.r)


def constant(k, like: torch.Tensor):
    """A number, or a tensor that broadcasts over ``like`` [P·N, ...] without reaching its batch dimension."""
    if isinstance(k, torch.Tensor) and k.dim() >= like.dim():
        if any(size != 1 for size in k.shape[:k.dim() - like.dim() + 1]):
            raise Unsupported("a tensor constant that broadcasts over the batch dimension")
        k = k.reshape(k.shape[k.dim() - like.dim() + 1:])
    if isinstance(k, torch.Tensor):
        return k.to(like.device, like.dtype)
    if isinstance(k, (bool, int, float)):
        return float(k)
    raise Unsupported(f"a value of type {type(k).__name__} combined with the network's values")


def scale(x: Model, k) -> Model:
    """x times a constant (a number, or a tensor broadcast over the rows' trailing dimensions)."""
    k = constant(k, x.c)
    mag = abs(k) if isinstance(k, (int, float)) else k.abs()
    return Model(x.c * k, None if x.s_ is None else x.s_ * k, None if x.r is None else x.r * mag)


def combine(a, b, sign: float) -> Model:
    """``a + sign·b`` of models and constants (at least one a model)."""
    if isinstance(a, Model) and isinstance(b, Model):
        return Model(a.c + sign * b.c, add(a.s_, None if b.s_ is None else sign * b.s_), add(a.r, b.r))
    if isinstance(a, Model):
        return Model(a.c + sign * constant(b, a.c), a.s_, a.r)
    return Model(constant(a, b.c) + sign * b.c, None if b.s_ is None else sign * b.s_, b.r)


def concat(parts, dim: int) -> Model:
    """``torch.cat`` of models (and constants) along a dimension other than the batch's."""
    models = [q if isinstance(q, Model) else Model(q) for q in parts]
    full = [m.full() for m in models]
    return Model(*(torch.cat([f[i] for f in full], dim) for i in range(3)))


def linear(x: Model, centre, half, weight: str, bias: str | None, n: int) -> Model:
    """``F.linear`` with the flat layout's parameters ``weight`` and ``bias`` (names), input of any rank."""
    def op(t, w):  # t [P, N, ..., in], w [P, out, in]
        flat = t.reshape(t.shape[0], -1, t.shape[-1])
        return torch.bmm(flat, w.transpose(1, 2)).reshape(*t.shape[:-1], w.shape[1])

    z = product(x, centre[weight], half[weight], op, n)
    return z if bias is None else shift(z, centre[bias], half[bias], n)


def convolution(x: Model, fn, centre, half, weight: str, bias: str | None, n: int, **conv) -> Model:
    """A convolution ``fn(x, w, None, **conv)`` with the layout's ``weight``, plus its per-channel ``bias``."""
    from torch.func import vmap

    op = vmap(lambda t, w: fn(t, w, None, **conv))
    z = product(x, centre[weight], half[weight], op, n)
    if bias is None:
        return z
    dims = z.c.dim() - 2
    bc, bh = (v.reshape(*v.shape, *([1] * dims)) for v in (centre[bias], half[bias]))
    return shift(z, bc, bh, n)


def frozen_norm(x: Model, mean, var, eps: float, centre, half, weight: str | None, bias: str | None, n: int) -> Model:
    """BatchNorm with frozen statistics: (x − μ)/√(σ² + ε), a constant positive scale per channel, then times
    γ_c + s·γ_h plus β_c + s·β_h."""
    dims = x.c.dim() - 2
    shape = (1, -1, *([1] * dims))
    factor = torch.rsqrt(var.to(x.c) + eps).reshape(shape)
    z = scale(combine(x, mean.to(x.c).reshape(shape), -1.0), factor)
    if weight is not None:
        gc, gh = (v.reshape(*v.shape, *([1] * dims)) for v in (centre[weight], half[weight]))
        z = elementwise(z, gc, gh, n)
    if bias is not None:
        bc, bh = (v.reshape(*v.shape, *([1] * dims)) for v in (centre[bias], half[bias]))
        z = shift(z, bc, bh, n)
    return z


def max_pool(x: Model, pool, spatial: int) -> Model:
    """Max pooling over ``spatial`` trailing dimensions: with j the window's largest centre, max_i v_i(s) lies
    between v_j(s) − r_j and v_j(s) + U, U = max_i(c_i + |s_i| + r_i) − c_j + |s_j|; both sides hold for every s,
    and U → 0 as the piece shrinks. (A value with one dimension before the pooled ones is torch's unbatched form.)"""
    c, s_, r = x.full()
    top = pool(c + s_.abs() + r)[0]
    picked, idx = pool(c)
    lead = c.dim() - spatial  # the indices count within the pooled dimensions
    flat = idx.flatten(lead)

    def at(t):
        return t.flatten(lead).gather(lead, flat).view_as(picked)

    sj, rj = at(s_), at(r)
    upper = top - picked + sj.abs()
    return Model(picked + (upper - rj) / 2, sj, (upper + rj) / 2)


def activate(x: Model, relax) -> Model:
    """An elementwise activation through its relaxation (:mod:`.bounds`)."""
    return Model(*relax(*x.full()))
