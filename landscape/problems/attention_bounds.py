"""Bounds in the segment variable s for the operations of attention networks, on :class:`.relaxed.Model` values.

Every value is v(s) = c + s·v_s + e, |e| ≤ r, s ∈ [−1, 1] (see :mod:`.relaxed`); each relaxation here holds
for every s and every e allowed, and its remainders are second order in the piece's length where the inputs'
are (so a bound tends to the larger endpoint loss as pieces shrink), first order where a softmax switches
inside the piece (then an interval bound is kept, as CROWN-style verifiers of transformers do: Shi et al.,
"Robustness verification for transformers", ICLR 2020; Bonaert et al., "Fast and precise certification of
transformers", PLDI 2021 — here the perturbed quantity is the parameters along a segment, not the input).

- :func:`bilinear`: f(A, B) for f bilinear with non-negative coefficients (a matrix product q·kᵀ, attention·v,
  an elementwise product, an einsum): the s² term half to the centre, half to the remainder; every remainder
  through f(|·|, |·|), which bounds |f| because f's coefficients are 0 or 1.
- :func:`softmax`: p(z(s)) = p(c) + J(c)(s·v + e) + R with |R_i| ≤ ½·U_i·max(A_i², B_i), where U_i bounds p_i
  over the piece (from the pairwise differences z_j − z_i, tighter than intervals), A_i and B_i bound
  |δ_i − E_p δ| and Var_p δ (δ = z − c): the second derivative of p_i along δ is p_i·((δ_i − E_p δ)² − Var_p δ).
  Where the interval [L_i, U_i] is narrower than R's bound, the interval (a sharp softmax switching inside).
- :func:`layer_norm`: (x − μ)·ρ(σ²)·γ + β with μ linear (exact), σ² = mean((x − μ)²) through the square's
  relaxation, ρ(v) = (v + ε)^{-1/2} in mean-value form on [max(l, 0), u] (ρ' is increasing: its extremes at the
  ends), the product through :func:`bilinear`.
- :func:`embedding`: rows of a weight affine in s, exact. :func:`masked_fill`: a constant where a constant
  mask holds, exact.
"""

from __future__ import annotations

import math

import torch

from . import bounds
from .relaxed import Model, Unsupported, add


def _abs_sum(*parts):
    """|p₀| + |p₁| + ... over the parts that are not None (None where all are)."""
    out = None
    for p in parts:
        if p is not None:
            out = add(out, p.abs())
    return out


def _gelu_tanh_slope(z):
    """d/dz of torch's GELU(approximate='tanh'), ½z(1 + tanh(k(z + a z³))), k = √(2/π), a = 0.044715."""
    k, a = math.sqrt(2 / math.pi), 0.044715
    t = torch.tanh(k * (z + a * z ** 3))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * k * (1 + 3 * a * z * z)


def _gelu_tanh_critical() -> float:
    """Where the slope peaks (its dip is at the opposite point: slope − ½ is odd), by bisection on its derivative
    to float64's last bit; these two and the ends bound the slope on any interval (it is flat past |z| ≈ 7)."""
    lo, hi = torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    for _ in range(64):  # 2⁻⁶⁴ of the bracket: past float64's resolution
        mid = ((lo + hi) / 2).requires_grad_()
        (d,) = torch.autograd.grad(_gelu_tanh_slope(mid), mid)
        lo, hi = (mid.detach(), hi) if d > 0 else (lo, mid.detach())
    return float(lo)


def _critical(slope, lo: float, hi: float) -> float:
    """The zero of ``slope``'s derivative in [lo, hi] (where it changes sign from + to −, or − to +), by bisection
    to float64's last bit."""
    a, b = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)

    def d(z):
        z = z.clone().requires_grad_()
        return torch.autograd.grad(slope(z), z)[0]

    rising = d(a) > 0
    for _ in range(64):
        mid = (a + b) / 2
        a, b = (mid, b) if (d(mid) > 0) == rising else (a, mid)
    return float(a)


_PEAK = _gelu_tanh_critical()
#: GELU with approximate='tanh' (GPT-2's "gelu_new"), in the mean-value form of :func:`.bounds.mean_value`.
GELU_TANH = bounds.mean_value(lambda z: torch.nn.functional.gelu(z, approximate="tanh"), _gelu_tanh_slope,
                              (_PEAK, -_PEAK))


def _silu_slope(z):
    """d/dz z·σ(z) = σ(z)(1 + z(1 − σ(z))); its own derivative σ'(z)(2 − z·tanh(z/2)) vanishes at ±2.3994 only
    (z·tanh(z/2) is even and increasing for z > 0)."""
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


_SILU_PEAK = _critical(_silu_slope, 2.0, 3.0)
#: SiLU (swish, z·σ(z)): not monotone (its minimum −0.2785 at z ≈ −1.2785), in the mean-value form of
#: :func:`.bounds.mean_value`, which needs no monotonicity: the slope's extremes on [l, u] lie at l, u or ±2.3994.
SILU = bounds.mean_value(torch.nn.functional.silu, _silu_slope, (_SILU_PEAK, -_SILU_PEAK))


def bilinear(a: Model, b: Model, f) -> Model:
    """f(a, b) of two values, f bilinear with coefficients 0 or 1 (``torch.matmul``, ``torch.mul``, ``einsum``).

    (a_c + s a_s + e_a)(b_c + s b_s + e_b) = f(a_c, b_c) + s·(f(a_c, b_s) + f(a_s, b_c)) + s²·f(a_s, b_s)
    + f(e_a, b(s)) + f(a_c + s a_s, e_b): s² ∈ [0, 1] half to the centre and half to the remainder,
    |f(e_a, b(s))| ≤ f(r_a, |b_c| + |b_s| + r_b), |f(a_c + s a_s, e_b)| ≤ f(|a_c| + |a_s|, r_b).
    """
    c = f(a.c, b.c)
    s_ = add(None if b.s_ is None else f(a.c, b.s_), None if a.s_ is None else f(a.s_, b.c))
    r = None
    if a.s_ is not None and b.s_ is not None:
        q = f(a.s_, b.s_)
        c, r = c + q / 2, q.abs() / 2
    if a.r is not None:
        r = add(r, f(a.r, _abs_sum(b.c, b.s_, b.r)))
    if b.r is not None:
        r = add(r, f(_abs_sum(a.c, a.s_), b.r))
    return Model(c, s_, r)


def _pairwise(c, v, r, masked, dim):
    """Over the softmax's dimension: lo[..., i, j], hi[..., i, j] bound z_j − z_i on the piece, m[..., i, j] bounds
    |δ_j − δ_i| (δ = z − c); a masked entry (a constant −inf) is left out (z_j − z_i = −inf, m = 0)."""
    c, v, r = (t.movedim(dim, -1) for t in (c, v, r))
    mask = masked.movedim(dim, -1)
    diff = c.unsqueeze(-2) - c.unsqueeze(-1)
    m = (v.unsqueeze(-2) - v.unsqueeze(-1)).abs() + r.unsqueeze(-2) + r.unsqueeze(-1)
    eye = torch.eye(c.shape[-1], dtype=torch.bool, device=c.device)
    m = m.masked_fill(eye, 0.0).masked_fill(mask.unsqueeze(-2) | mask.unsqueeze(-1), 0.0)
    lo = (diff - m).masked_fill(eye, 0.0).masked_fill(mask.unsqueeze(-2), -torch.inf)
    hi = (diff + m).masked_fill(eye, 0.0).masked_fill(mask.unsqueeze(-2), -torch.inf)
    return lo, hi, m


def softmax(x: Model, dim: int, rows: int | None = None) -> Model:
    """``softmax(x, dim)`` (see the module's docstring); ``dim`` not the batch's. Entries whose centre is −inf (a
    ``masked_fill`` with −inf, or an additive −inf mask: c + s·v + e is −inf at every s) get probability 0 exactly and
    take no part; a row all −inf is NaN, as in torch.
    ``rows``: how many leading rows to bound at once (the pairwise terms take L² per row)."""
    c, v, r = x.full()
    dim = dim % c.dim()
    if dim == 0:
        raise Unsupported("a softmax over the batch")
    if rows is None:
        rows = max(1, (32 << 20) // max(1, 8 * 6 * c[:1].numel() * c.shape[dim]))
    if c.shape[0] > rows:
        parts = [softmax(Model(*p), dim, rows) for p in zip(c.split(rows), v.split(rows), r.split(rows))]
        return Model(*(torch.cat([p.full()[i] for p in parts]) for i in range(3)))
    masked = torch.isneginf(c) & torch.isfinite(v) & torch.isfinite(r)  # −inf at every s
    cf = c.masked_fill(masked, 0.0)
    lo, hi, m = _pairwise(cf, v, r, masked, dim)
    # p_i ≤ 1 / Σ_j exp(min (z_j − z_i)); a masked p_i is 0 (its row of lo, hi, from the filler 0, can overflow)
    upper = torch.exp(-torch.logsumexp(lo, -1)).movedim(-1, dim).masked_fill(masked, 0.0)
    lower = torch.exp(-torch.logsumexp(hi, -1)).movedim(-1, dim).masked_fill(masked, 0.0)
    pc = torch.softmax(c, dim)
    ps = pc * (v - (pc * v).sum(dim, keepdim=True))  # J(c)·v
    first = pc * ((1 - 2 * pc) * r + (pc * r).sum(dim, keepdim=True))  # |J(c)·e|
    u = upper.movedim(dim, -1).unsqueeze(-2)  # U_j beside every i
    a = torch.minimum(m.amax(-1), (u * m).sum(-1))  # |δ_i − E_p δ| ≤ max_j m_ij and ≤ Σ_j U_j m_ij
    spread = m.amax(-1).amax(-1, keepdim=True)  # max_ij |δ_i − δ_j|: Var ≤ spread² / 4 (Popoviciu)
    b = torch.minimum(spread * spread / 4, (u * m * m).sum(-1))  # Var_p δ ≤ E_p (δ − δ_i)²
    second = 0.5 * upper * torch.maximum(a * a, b).movedim(-1, dim)
    rem = first + second
    narrower = (upper - lower) / 2 < rem  # the interval where it is narrower than the model's own remainder
    mid, half = (upper + lower) / 2, (upper - lower) / 2
    zero = masked.expand_as(pc)
    out_c = torch.where(narrower, mid, pc).masked_fill(zero, 0.0)
    out_s = torch.where(narrower, 0.0, ps).masked_fill(zero, 0.0)
    out_r = torch.where(narrower, half, rem).masked_fill(zero, 0.0)
    return Model(out_c, out_s, out_r)


def _count(t: torch.Tensor, dims) -> int:
    return math.prod(t.shape[d] for d in dims)


def _centred(x: Model, dims) -> Model:
    """x − mean(x) over ``dims`` (linear, exact on c and s_; |e_i − mean(e)| ≤ (1 − 2/D)·r_i + mean(r))."""
    count = _count(x.c, dims)

    def centre(t):
        return t - t.mean(dims, keepdim=True)

    r = None if x.r is None else (x.r * (1 - 2 / count) + x.r.mean(dims, keepdim=True)).clamp_min(0)
    return Model(centre(x.c), None if x.s_ is None else centre(x.s_), r)


def rsqrt(x: Model, eps: float, floor: torch.Tensor | None = None) -> Model:
    """(v + ε)^{-1/2} of a value known to be ≥ ``floor`` ≥ 0 (a variance), in mean-value form on [max(l, floor), u]:
    its slope −½(v + ε)^{-3/2} is increasing, so its largest change from the centre's is at an end."""
    c, s_, r = x.full()
    rho = s_.abs() + r
    lo, hi = torch.maximum(c - rho, torch.zeros_like(c) if floor is None else floor).clamp_min(0), c + rho

    def slope(v):
        return -0.5 * (v + eps).pow(-1.5)

    dc = slope(c)
    change = torch.maximum(dc - slope(lo), slope(hi) - dc)
    return Model((c + eps).rsqrt(), dc * s_, dc.abs() * r + change * rho)


def power(x: Model, exponent: float) -> Model:
    """x^k for k = −1, ±½ (a reciprocal, a square root, its reciprocal) in mean-value form where the piece stays on
    one side of 0 (k = ±½: above it); the slope k·x^(k−1) is monotone there, its largest change from the centre's
    at an end. Where the piece reaches 0 (or below, for a root) the remainder is infinite: no bound."""
    c, s_, r = x.full()
    rho = s_.abs() + r
    lo, hi = c - rho, c + rho
    ok = (lo > 0) | ((hi < 0) & (exponent == -1))

    def slope(v):
        return -1 / (v * v) if exponent == -1 else exponent * v.pow(exponent - 1)

    dc = slope(c)
    change = torch.maximum((slope(lo) - dc).abs(), (slope(hi) - dc).abs())
    rem = torch.where(ok, dc.abs() * r + change * rho, torch.inf)
    return Model(torch.where(ok, c.pow(exponent), 0.0), torch.where(ok, dc * s_, 0.0), rem)


def layer_norm(x: Model, ndim: int, eps: float) -> Model:
    """(x − μ)/√(σ² + ε) over the last ``ndim`` dimensions (the gain and bias are applied by the caller)."""
    dims = tuple(range(x.c.dim() - ndim, x.c.dim()))
    if 0 in dims:
        raise Unsupported("a normalization over the batch")
    xc = _centred(x, dims)
    c, s_, r = xc.full()
    var = Model(*bounds.RELAXATIONS[bounds.square](c, s_, r)).map(lambda t: t.mean(dims, keepdim=True))
    floor = ((c.abs() - s_.abs() - r).clamp_min(0) ** 2).mean(dims, keepdim=True)  # each x_i² ≥ (|c_i| − ρ_i)₊²
    scale = rsqrt(var, eps, floor)
    scale = Model(*(t.expand_as(xc.c) for t in scale.full()))
    out = bilinear(xc, scale, torch.mul)
    # |y_i| ≤ √(D − 1) always (Σ y = 0, Σ y² ≤ D): where the model is wider, that interval
    return _capped(out, math.sqrt(max(_count(c, dims) - 1, 0)) * (1 + 1e-12))


def rms_norm(x: Model, ndim: int, eps: float) -> Model:
    """x/√(mean(x²) + ε) over the last ``ndim`` dimensions (the gain is applied by the caller), as :func:`layer_norm`
    without centring: mean(x²) through the square's relaxation, floored at mean((|c_i| − ρ_i)₊²); |y_i| < √D."""
    dims = tuple(range(x.c.dim() - ndim, x.c.dim()))
    if 0 in dims:
        raise Unsupported("a normalization over the batch")
    c, s_, r = x.full()
    ms = Model(*bounds.RELAXATIONS[bounds.square](c, s_, r)).map(lambda t: t.mean(dims, keepdim=True))
    floor = ((c.abs() - s_.abs() - r).clamp_min(0) ** 2).mean(dims, keepdim=True)
    scale = rsqrt(ms, eps, floor)
    scale = Model(*(t.expand_as(c) for t in scale.full()))
    return _capped(bilinear(x, scale, torch.mul), math.sqrt(_count(c, dims)) * (1 + 1e-12))


def _capped(out: Model, cap: float) -> Model:
    """Where the model is wider than the interval [−cap, cap] every output lies in, that interval."""
    wide = out.full()[2] > cap
    return Model(out.c.masked_fill(wide, 0.0), None if out.s_ is None else out.s_.masked_fill(wide, 0.0),
                 torch.where(wide, cap, out.full()[2]))


def embedding(idx: Model, wc: torch.Tensor, wh: torch.Tensor, n: int) -> Model:
    """Rows ``idx`` of a weight W_c + s·W_h ([P, V, D] each) for index values laid out [P·N, ...]: exact."""
    if idx.s_ is not None or idx.r is not None or idx.c.is_floating_point():
        raise Unsupported("an embedding lookup of indices that are not the data's integers")
    p = wc.shape[0]
    flat = idx.c.reshape(p, -1).long()
    rows = torch.arange(p, device=flat.device).unsqueeze(1)

    def pick(w):
        return w[rows, flat].reshape(*idx.c.shape, w.shape[-1])

    return Model(pick(wc), pick(wh))


def masked_fill(x: Model, mask: torch.Tensor, value: float) -> Model:
    """``x.masked_fill(mask, value)`` with a constant mask (broadcast over the rows' trailing dimensions)."""
    c, s_, r = x.full()
    mask = mask.to(c.device)
    return Model(c.masked_fill(mask, value), s_.masked_fill(mask, 0.0), r.masked_fill(mask, 0.0))
